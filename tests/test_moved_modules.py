"""The flat layout's module paths (`modeling_uniqa.score_images`...) still import for one release:
the module at its new path, with a FutureWarning naming it."""

import importlib
import importlib.resources
import importlib.util
import sys

import pytest

import modeling_uniqa
from modeling_uniqa.core.moved import MOVED


def test_an_old_path_warns_and_gives_the_module_at_its_new_path():
    sys.modules.pop("modeling_uniqa.score_images", None)
    with pytest.warns(FutureWarning, match=r"modeling_uniqa\.score_images moved to modeling_uniqa\.scoring\.score_images"):
        old = importlib.import_module("modeling_uniqa.score_images")
    assert old is importlib.import_module("modeling_uniqa.scoring.score_images")
    with pytest.warns(FutureWarning):
        from modeling_uniqa.convert import convert  # the `from OLD import name` form
    from modeling_uniqa.hub.convert import convert as moved

    assert convert is moved


def test_every_old_path_names_an_existing_module_and_no_file_stands_at_it():
    for old, new in MOVED.items():
        assert importlib.util.find_spec(new) is not None, new
        name = old.rpartition(".")[2]
        assert not importlib.resources.files(modeling_uniqa).joinpath(f"{name}.py").is_file(), old


def test_the_public_names_are_unchanged():
    for name in modeling_uniqa.__all__:
        assert getattr(modeling_uniqa, name) is not None, name
