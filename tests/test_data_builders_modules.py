"""The shape of ``data_builders``: no import cycle, one source for levels and MOS maths."""

import ast
import os

import numpy as np
import pytest

import data_builders
import modeling_uniqa
from data_builders import metadata

PACKAGE = os.path.dirname(os.path.abspath(data_builders.__file__))
MODULES = sorted(n[:-3] for n in os.listdir(PACKAGE) if n.endswith(".py"))


def _tree(module: str) -> ast.Module:
    with open(os.path.join(PACKAGE, module + ".py"), encoding="utf-8") as handle:
        return ast.parse(handle.read())


def _sibling_imports(module: str) -> set[str]:
    """Sibling modules imported anywhere in ``module``, function bodies included."""
    found = set()
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {alias.name for alias in node.names}
    return found & set(MODULES)


def test_modules_import_each_other_without_a_cycle():
    graph = {m: _sibling_imports(m) for m in MODULES if m != "__init__"}
    state: dict[str, str] = {}

    def visit(module, path):
        state[module] = "open"
        for other in sorted(graph[module]):
            assert state.get(other) != "open", f"import cycle: {' -> '.join(path + [module, other])}"
            if other not in state:
                visit(other, path + [module])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])
    assert "builders" not in graph["splits"] and "base" not in MODULES


def test_level_names_and_mos_maths_have_one_home():
    assert data_builders.LEVEL_NAMES is modeling_uniqa.LEVEL_NAMES
    assert data_builders.levels.LEVEL_NAMES is modeling_uniqa.LEVEL_NAMES
    defined = {
        (module, node.name)
        for module in MODULES
        for node in ast.walk(_tree(module))
        if isinstance(node, (ast.FunctionDef, ast.Assign))
        and getattr(node, "name", None) in ("mos_to_score", "score_to_mos")
    }
    # defined in metadata.py, or (once the model side has them) imported there from modeling_uniqa
    assert defined <= {("metadata", "mos_to_score"), ("metadata", "score_to_mos")}
    for function in (metadata.mos_to_score, metadata.score_to_mos):
        expected = "data_builders.metadata" if defined else "modeling_uniqa.configuration_uniqa"
        assert function.__module__ == expected
    assert not any(
        isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "LEVEL_NAMES" for t in node.targets)
        for module in MODULES
        for node in ast.walk(_tree(module))
    )
    assert data_builders.mos_to_score is metadata.mos_to_score and data_builders.builders.mos_to_score is metadata.mos_to_score


def test_mos_score_mapping():
    assert metadata.mos_to_score(25.0, (0, 100)) == pytest.approx(0.25)
    assert metadata.mos_to_score(25.0, (0, 100), higher_is_better=False) == pytest.approx(0.75)
    assert isinstance(metadata.mos_to_score(3, (1, 5)), float)
    mos = np.array([1.0, 3.0, 5.0, 6.0])  # not clipped: 6 is outside (1, 5)
    np.testing.assert_allclose(metadata.mos_to_score(mos, (1, 5)), [0.0, 0.5, 1.0, 1.25])
    np.testing.assert_allclose(metadata.mos_to_score(mos, (1, 5), False), [1.0, 0.5, 0.0, -0.25])
    for higher in (True, False):
        back = metadata.score_to_mos(metadata.mos_to_score(mos, (1, 5), higher), (1, 5), higher)
        np.testing.assert_allclose(back, mos)
    assert metadata.score_to_mos(0.75, [0, 1], higher_is_better=False) == pytest.approx(0.25)
    assert metadata.score_to_mos(np.float32(0.5), (0, 9)) == pytest.approx(4.5)
