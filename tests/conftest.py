"""Shared fixtures: tiny random CLIP/UniQA models, an offline tokenizer and image files.

The functions behind them live in `tests/helpers.py`, offline: nothing comes from the Hub.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from PIL import Image
from transformers import CLIPTokenizer

from modeling_uniqa import UniQAImageProcessor, UniQAModel
from tests.helpers import TINY_IMAGE_SIZE, build_tiny_tokenizer, make_tiny_uniqa, random_rgb


@pytest.fixture(scope="session")
def tiny_tokenizer() -> CLIPTokenizer:
    return build_tiny_tokenizer()


@pytest.fixture
def tiny_model_factory(tiny_tokenizer):
    def factory(seed: int = 0, **config_kwargs) -> UniQAModel:
        return make_tiny_uniqa(tiny_tokenizer, seed=seed, **config_kwargs)

    return factory


@pytest.fixture
def tiny_processor() -> UniQAImageProcessor:
    return UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE, view_policy="random10")


@pytest.fixture(scope="session")
def saved_tiny_model(tmp_path_factory, tiny_tokenizer) -> str:
    """A complete saved model directory: weights, config, remote code, processor, tokenizer."""
    directory = tmp_path_factory.mktemp("tiny_uniqa")
    model = make_tiny_uniqa(tiny_tokenizer, prompt_groups="natural", mos_range=[0, 100])
    model.save_pretrained(directory)
    UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE, view_policy="random10").save_pretrained(directory)
    tiny_tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture
def image_files(tmp_path):
    """Four JPEGs of different sizes on disk; returns their paths."""
    paths = []
    for index, (height, width) in enumerate([(48, 64), (40, 40), (64, 50), (33, 90)]):
        path = tmp_path / f"img_{index}.jpg"
        Image.fromarray(random_rgb(height, width, seed=index)).save(path, quality=95)
        paths.append(str(path))
    return paths


# --------------------------------------------------------------------------------------------
# The `slow` marker: tests that start other Python processes (a script run as a user runs it,
# `accelerate launch` with two processes). `make test-fast` (`pytest -m "not slow"`) leaves them
# out; `make test` runs everything. A test is marked when it, or a fixture it uses, calls one of
# these, so a new subprocess test is marked without anyone remembering to.
SUBPROCESS_CALLS = ("subprocess.run(", "subprocess.Popen(", "launch_two_processes(", "start_two_processes(", "run_single(")


def _starts_processes(function) -> bool:
    import inspect

    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    return any(call in source for call in SUBPROCESS_CALLS)


def pytest_collection_modifyitems(config, items):
    for item in items:
        function = getattr(item, "function", None)
        fixtures = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {}) or {}
        used = [definition.func for definitions in fixtures.values() for definition in definitions]
        if any(_starts_processes(candidate) for candidate in [function, *used] if candidate is not None):
            item.add_marker(pytest.mark.slow)
