"""The package's import layering: every module's imports (lazy ones inside functions included),
parsed with `ast`, form a graph with no cycle and no upward edge.

Layers, lowest first (a module may import its own layer and those below):
  0  the remote-code files (copied into saved model folders): configuration_uniqa, modeling_uniqa,
     processing_uniqa, pipeline_uniqa, clip_tokenizer; hub_handler (written as handler.py)
  1  modeling_uniqa (the package's __init__), modeling_uniqa.errors, modeling_uniqa.core
  2  modeling_uniqa.scoring, .hub, .analysis; data_builders
  3  model_cards, modeling_uniqa.app (the page's model work over scoring and analysis)
  4  modeling_uniqa.cli, train_scripts
  5  uniqa_app.command (the `uniqa` console script: `uniqa app`, else modeling_uniqa.cli)
uniqa_app's other modules (the page process of `uniqa app`: the page, the worker's proxy, the
start) import none of ours but each other, never modeling_uniqa (layer 0 for the graph; checked
apart): its first page must not wait for torch and transformers (issue #26).
No training script (train_scripts/*.py) is imported by another module: shared code lives in
train_scripts/common.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("modeling_uniqa", "uniqa_app", "model_cards", "train_scripts", "data_builders")
REMOTE_CODE = ("configuration_uniqa", "modeling_uniqa", "processing_uniqa", "pipeline_uniqa", "clip_tokenizer", "hub_handler")


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] == "modeling_uniqa":
        if len(parts) == 1 or parts[1] in ("errors", "core"):
            return 1
        if parts[1] in REMOTE_CODE and len(parts) == 2:
            return 0
        if parts[1] in ("scoring", "hub", "analysis"):
            return 2
        if parts[1] == "app":
            return 3
        if parts[1] == "cli":
            return 4
        return None  # a module the layering does not know: test_every_module_has_a_layer fails
    if parts[0] == "uniqa_app":
        return 5 if parts[1:] == ["command"] else 0
    return {"data_builders": 2, "model_cards": 3, "train_scripts": 4}.get(parts[0])


def module_files() -> dict:
    """{module name: file path} of every module of PACKAGES."""
    found = {}
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(ROOT, package)):
            dirs[:] = [name for name in dirs if not name.startswith((".", "__")) and name != "assets"]
            for name in files:
                if name.endswith(".py"):
                    relative = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].split(os.sep)
                    if relative[-1] == "__init__":
                        relative = relative[:-1]
                    found[".".join(relative)] = os.path.join(folder, name)
    return found


def imports_of(module: str, path: str, known: set) -> set:
    """The modules of `known` that `module` imports anywhere in its file (functions included)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=path)
    is_package = os.path.basename(path) == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    targets = set()

    def add(name: str) -> None:
        while name and name not in known:  # `a.b.c` where only `a.b` is a module of ours
            name = name.rpartition(".")[0]
        if name and name != module:
            targets.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                if f"{source}.{alias.name}" in known:
                    add(f"{source}.{alias.name}")
                else:
                    add(source)
    return targets


def import_graph() -> dict:
    files = module_files()
    known = set(files)
    return {module: imports_of(module, path, known) for module, path in files.items()}


def find_cycle(graph: dict) -> list | None:
    """One cycle of `graph` ({node: set of nodes}) as a list of nodes, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def layering_problems(graph: dict, layer=layer_of) -> list:
    """Every upward edge, script-imports-script edge and (one) cycle of `graph`, as lines."""
    problems = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer(target) > layer(source):
                problems.append(f"upward import: {source} (layer {layer(source)}) -> {target} (layer {layer(target)})")
            parts = target.split(".")
            if parts[0] == "train_scripts" and len(parts) == 2:
                problems.append(f"{source} imports the training script {target} (shared code belongs in train_scripts/common)")
    cycle = find_cycle(graph)
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    return problems


def test_every_module_has_a_layer():
    assert [module for module in module_files() if layer_of(module) is None] == []


def test_no_import_cycle_and_no_upward_import():
    assert layering_problems(import_graph()) == []


def test_the_library_leaves_model_cards_to_commands_and_scripts():
    """Issue #25: no library module (layers 0-2) imports `model_cards`, so none writes a card as
    a side effect of saving a folder; `uniqa convert/heads/push` and the training scripts do."""
    graph = import_graph()
    importers = sorted(module for module, targets in graph.items() if any(t.split(".")[0] == "model_cards" for t in targets))
    assert [module for module in importers if layer_of(module) < 3] == []
    assert {"modeling_uniqa.cli.convert", "modeling_uniqa.cli.heads", "modeling_uniqa.cli.push"} <= set(importers)


def test_the_page_process_imports_none_of_the_library():
    """`uniqa app`'s page process (uniqa_app, but the console script's dispatch) never imports
    modeling_uniqa; the library's app and command line use uniqa_app's page and start."""
    graph = import_graph()
    page_process = [module for module in graph if module.split(".")[0] == "uniqa_app" and module != "uniqa_app.command"]
    assert {"uniqa_app.page", "uniqa_app.remote", "uniqa_app.serve"} <= set(page_process)
    for module in page_process:
        assert all(target.split(".")[0] == "uniqa_app" for target in graph[module]), (module, graph[module])
    assert graph["uniqa_app.command"] == {"uniqa_app.serve", "modeling_uniqa.cli"}
    assert "uniqa_app.page" in graph["modeling_uniqa.app.gradio_app"] and "uniqa_app.serve" in graph["modeling_uniqa.cli.app"]


def test_remote_code_files_import_only_each_other():
    graph = import_graph()
    for name in REMOTE_CODE:
        module = f"modeling_uniqa.{name}"
        assert graph[module] <= {f"modeling_uniqa.{other}" for other in REMOTE_CODE}, module


def test_lazy_and_relative_imports_are_seen(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from .sub import b\n")
    (package / "sub" / "b.py").write_text("from .. import a\nfrom ..sub.c import x\n")
    (package / "sub" / "c.py").write_text("import pkg.a\n")
    known = {"pkg", "pkg.a", "pkg.sub", "pkg.sub.b", "pkg.sub.c"}
    assert imports_of("pkg.a", str(package / "a.py"), known) == {"pkg.sub.b"}
    assert imports_of("pkg.sub.b", str(package / "sub" / "b.py"), known) == {"pkg.a", "pkg.sub.c"}
    assert imports_of("pkg.sub.c", str(package / "sub" / "c.py"), known) == {"pkg.a"}


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"modeling_uniqa.core.x": {"modeling_uniqa.core.y"}, "modeling_uniqa.core.y": {"modeling_uniqa.core.x"}}, "import cycle"),
        ({"modeling_uniqa.core.x": {"modeling_uniqa.cli.score"}, "modeling_uniqa.cli.score": set()}, "upward import"),
        ({"modeling_uniqa.configuration_uniqa": {"modeling_uniqa.errors"}, "modeling_uniqa.errors": set()}, "upward import"),
        ({"model_cards.card": {"modeling_uniqa.hub.push"}, "modeling_uniqa.hub.push": {"model_cards.card"}}, "upward import"),
        ({"train_scripts.evaluate": {"train_scripts.train_adapter"}, "train_scripts.train_adapter": set()}, "training script"),
        ({"uniqa_app.page": {"uniqa_app.command"}, "uniqa_app.command": set()}, "upward import"),
    ],
)
def test_a_bad_graph_fails(graph, expected):
    problems = layering_problems(graph)
    assert any(expected in problem for problem in problems), problems


def test_the_real_graph_is_not_trivially_empty():
    graph = import_graph()
    assert "modeling_uniqa.core.model_folder" in graph["modeling_uniqa.scoring.score_images"]
    assert "modeling_uniqa.scoring.score_images" in graph["modeling_uniqa.cli.score"]
