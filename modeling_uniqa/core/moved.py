"""The module paths of the flat layout (before `core/`, `scoring/`, `hub/`, `analysis/`, `cli/`),
kept working for one release: `import modeling_uniqa.score_images` (or `python -m
modeling_uniqa.default_model ...`) gets the module at its new path, with a `FutureWarning` naming
it. No file stands at the old paths: `modeling_uniqa/__init__.py` installs `MovedModuleFinder`
on `sys.meta_path`, which answers for exactly the names in `MOVED`."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old path -> new path
MOVED = {
    f"modeling_uniqa.{old}": f"modeling_uniqa.{new}"
    for old, new in {
        "atomic_files": "core.atomic_files",
        "fingerprints": "core.fingerprints",
        "model_folder": "core.model_folder",
        "cpu_runtime": "core.cpu_runtime",
        "device_defaults": "core.device_defaults",
        "inference_speed": "core.inference_speed",
        "default_model": "core.default_model",
        "zero_shot": "core.zero_shot",
        "score_images": "scoring.score_images",
        "score_shards": "scoring.score_shards",
        "score_datasets": "scoring.score_datasets",
        "score_parquet": "scoring.score_parquet",
        "sharded_output": "scoring.sharded_output",
        "image_scorer": "scoring.image_scorer",
        "ray_scorer": "scoring.ray_scorer",
        "adapter_io": "core.adapter_io",
        "heads": "hub.heads",
        "convert": "hub.convert",
        "convert_openai_clip": "hub.convert_openai_clip",
        "push": "hub.push",
        "retrieve": "analysis.retrieve",
        "embedding_index": "analysis.embedding_index",
        "contact_sheet": "analysis.contact_sheet",
        "explain": "analysis.explain",
        "gradcam": "analysis.gradcam",
    }.items()
}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path goes away in the next release.", FutureWarning, stacklevel=3)


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        return None  # a placeholder; exec_module puts the real module in its place

    def exec_module(self, module) -> None:
        _warn(module.__name__, self.new)
        # The import system returns whatever sys.modules holds under the name once this returns:
        # the module at its new path itself (one module object, so patches through either name agree).
        sys.modules[module.__name__] = importlib.import_module(self.new)

    def get_code(self, fullname: str):
        """`python -m OLD`: run the new module as `__main__`."""
        return compile(
            f"import runpy, warnings\nwarnings.warn({fullname!r} + ' moved to {self.new}; the old path goes away in the next '"
            f"'release.', FutureWarning)\nrunpy.run_module({self.new!r}, run_name='__main__', alter_sys=True)\n",
            f"<{fullname}>", "exec",
        )

    def is_package(self, fullname: str) -> bool:
        return False


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedModuleLoader(new))


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        # First: it answers only for the old names, where no file stands any more (an editable install
        # of an older checkout could still offer its own copy of them).
        sys.meta_path.insert(0, MovedModuleFinder())
