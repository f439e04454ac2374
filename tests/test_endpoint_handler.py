"""The Inference Endpoints handler (`handler.py` of saved and pushed folders), called the way the
toolkit calls it: `from handler import EndpointHandler` in the repo folder, `EndpointHandler(path)`,
then `handler({"inputs": ..., "parameters": {...}})` on bytes, base64 and bad items."""

import ast
import base64
import importlib.util
import io
import os
from pathlib import Path

import pytest
from PIL import Image
from transformers import pipeline

from modeling_uniqa.modeling_uniqa import ENDPOINT_HANDLER_NAME, ENDPOINT_HANDLER_SOURCE
from tests.app_files import bomb_png_bytes, strip_png_bytes, write_jpegs

PACKAGE_DIR = os.path.dirname(os.path.abspath(__import__("modeling_uniqa").__file__))


def load_handler_module(folder):
    """`handler.py` of a repo folder as the toolkit imports it (a module of its own)."""
    spec = importlib.util.spec_from_file_location("handler", os.path.join(folder, ENDPOINT_HANDLER_NAME))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def handler(saved_tiny_model):
    return load_handler_module(saved_tiny_model).EndpointHandler(saved_tiny_model)


def test_saved_folders_hold_the_handler(saved_tiny_model):
    with open(os.path.join(saved_tiny_model, ENDPOINT_HANDLER_NAME), "rb") as saved, open(os.path.join(PACKAGE_DIR, ENDPOINT_HANDLER_SOURCE), "rb") as source:
        assert saved.read() == source.read()


def test_handler_imports_only_what_an_endpoint_has():
    with open(os.path.join(PACKAGE_DIR, ENDPOINT_HANDLER_SOURCE), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert modules <= {"base64", "binascii", "os", "transformers", "torch", "PIL"}


def test_handler_output_equals_the_pipeline(handler, saved_tiny_model, tmp_path):
    paths = write_jpegs(tmp_path, count=3)
    encoded = []
    for path in paths:
        with open(path, "rb") as handle:
            encoded.append(handle.read())
    parameters = {"view_policy": "center", "return_group_scores": True}
    scorer = pipeline("image-quality", model=saved_tiny_model, trust_remote_code=True)
    text = base64.b64encode(encoded[1]).decode("ascii")
    with Image.open(io.BytesIO(encoded[2])) as opened:
        picture = opened.convert("RGB")
    inputs = [encoded[0], text, picture, f"data:image/jpeg;base64,{text}", paths[2]]
    results = handler({"inputs": inputs, "parameters": parameters})
    # The same images in the same batch: the same numbers.
    assert results == scorer([paths[0], paths[1], picture, paths[1], paths[2]], batch_size=32, **parameters)
    # One at a time (another float32 summation order): within 1e-6 of the score's unit range.
    for result, want in zip(results, [*scorer(paths, **parameters), *scorer(paths[1:], **parameters)]):
        assert result.keys() == want.keys()
        assert result["score"] == pytest.approx(want["score"], abs=1e-6)
        assert result["group_scores"] == pytest.approx(want["group_scores"], abs=1e-6)
    single = handler({"inputs": encoded[0], "parameters": parameters})  # one image: one dict, as the pipeline
    assert single == scorer(paths[0], **parameters)


def test_bad_items_get_errors_and_the_rest_are_scored(handler, tmp_path):
    (good,) = write_jpegs(tmp_path, count=1)
    with open(good, "rb") as handle:
        image = handle.read()
    inputs = [b"not an image", image, "https://example.com/a.jpg", bomb_png_bytes(), "%%% not base64 %%%", strip_png_bytes(), 42, image]
    results = handler({"inputs": inputs})
    assert [("error" in result) for result in results] == [True, False, True, True, True, True, True, False]
    assert "not an image format" in results[0]["error"] and "URLs are not fetched" in results[2]["error"]
    assert "decompression bomb" in results[3]["error"] and "neither base64" in results[4]["error"]
    assert "aspect ratio" in results[5]["error"] and "got int" in results[6]["error"]
    assert results[1]["score"] == pytest.approx(results[7]["score"], abs=1e-6)
    with pytest.raises(ValueError, match="URLs are not fetched"):
        handler({"inputs": ["http://x/y.jpg"], "parameters": {"errors": "raise"}})
    with pytest.raises(ValueError, match='"inputs"'):
        handler({"image": image})


FRESH_PROCESS_SCRIPT = """
import base64, json, sys
sys.modules["modeling_uniqa"] = None  # as on an endpoint: our package is not installed
folder, images = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, folder)  # the toolkit imports handler.py from the repo folder
from handler import EndpointHandler

handler = EndpointHandler(folder)
inputs = [open(images[0], "rb").read(), base64.b64encode(open(images[1], "rb").read()).decode(), "http://x/y.jpg", b"junk"]
print(json.dumps({"module": type(handler.pipeline.model).__module__, "results": handler({"inputs": inputs})}))
"""


@pytest.mark.slow
def test_handler_without_the_package(saved_tiny_model, handler, tmp_path):
    """On an endpoint without uniqa-hf: remote code serves, and the answers are the same."""
    import json
    import shutil
    import subprocess
    import sys

    folder = tmp_path / "repo"
    shutil.copytree(saved_tiny_model, folder)
    images = write_jpegs(tmp_path / "images", count=2)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    completed = subprocess.run([sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(folder), json.dumps(images)], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    answer = json.loads(completed.stdout.strip().splitlines()[-1])
    assert answer["module"].startswith("transformers_modules."), answer["module"]
    results = answer["results"]
    assert "URLs are not fetched" in results[2]["error"] and "not an image format" in results[3]["error"]
    local = handler({"inputs": [Path(images[0]).read_bytes(), Path(images[1]).read_bytes()]})
    for remote, here in zip(results[:2], local):
        assert remote.keys() == here.keys()
        assert remote["score"] == pytest.approx(here["score"], abs=1e-6)
