"""`pipeline("image-quality")`, in this process and in a fresh one without our package."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, pipeline

import modeling_uniqa
from modeling_uniqa import UniQAImageError, UniQAImageProcessor
from tests.helpers import random_rgb


@pytest.fixture(scope="module")
def scorer(saved_tiny_model):
    return pipeline("image-quality", model=saved_tiny_model)


def direct_scores(model_dir, sources, view_policy="random10"):
    model = AutoModel.from_pretrained(model_dir).eval()
    processor = UniQAImageProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        return model(**processor(sources, view_policy=view_policy)).scores.tolist()


def test_pipeline_matches_model(scorer, saved_tiny_model, image_files):
    results = scorer(image_files, batch_size=3)
    assert [set(r) for r in results] == [{"score", "mos"}] * 4
    expected = direct_scores(saved_tiny_model, image_files)
    np.testing.assert_allclose([r["score"] for r in results], expected, atol=1e-5)
    np.testing.assert_allclose([r["mos"] for r in results], [100 * s for s in expected], atol=1e-3)


def test_pipeline_input_kinds(scorer, image_files):
    from_path = scorer(image_files[0])["score"]
    with Image.open(image_files[0]) as image:
        from_pil = scorer(image)["score"]
        from_array = scorer(np.asarray(image))["score"]
    assert from_path == pytest.approx(from_pil, abs=1e-6) == pytest.approx(from_array, abs=1e-6)


def test_pipeline_batch_size_does_not_change_scores(scorer, image_files):
    one = [r["score"] for r in scorer(image_files, batch_size=1)]
    four = [r["score"] for r in scorer(image_files, batch_size=4)]
    np.testing.assert_allclose(one, four, atol=1e-5)


def test_pipeline_options(scorer, saved_tiny_model, image_files):
    result = scorer(image_files[0], view_policy="five_crop", return_group_scores=True, return_level_probs=True)
    names = ["default", "sharpness", "noise", "quality"]
    assert list(result["group_scores"]) == names
    assert result["score"] == pytest.approx(np.mean(list(result["group_scores"].values())), abs=1e-6)
    assert result["score"] == pytest.approx(direct_scores(saved_tiny_model, image_files[:1], "five_crop")[0], abs=1e-5)
    for name in names:
        assert list(result["level_probs"][name]) == ["bad", "poor", "fair", "good", "perfect"]
        assert sum(result["level_probs"][name].values()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="view policy"):
        scorer(image_files[0], view_policy="nine_crop")


def test_pipeline_bad_file_is_named(scorer, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(UniQAImageError, match="broken.jpg"):
        scorer(str(bad))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_pipeline_errors_return_keeps_going(scorer, image_files, tmp_path, batch_size):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"garbage")
    inputs = [image_files[0], str(bad), image_files[1], str(tmp_path / "missing.png"), image_files[2]]
    results = scorer(inputs, batch_size=batch_size, errors="return", return_group_scores=True)
    assert len(results) == 5
    assert set(results[1]) == {"error"} and "broken.jpg" in results[1]["error"]
    assert set(results[3]) == {"error"} and "missing.png" in results[3]["error"]
    expected = scorer([image_files[0], image_files[1], image_files[2]], batch_size=1, return_group_scores=True)
    for got, want in zip([results[0], results[2], results[4]], expected):
        assert got["score"] == pytest.approx(want["score"], abs=1e-6)
        assert got["group_scores"] == pytest.approx(want["group_scores"], abs=1e-6)
    assert scorer(str(bad), errors="return") == {"error": results[1]["error"]}  # one input, too
    only_bad = scorer([str(bad), str(bad)], batch_size=2, errors="return")  # no image left to score
    assert [set(r) for r in only_bad] == [{"error"}, {"error"}]


def test_pipeline_errors_option_is_checked(scorer, image_files, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(UniQAImageError, match="broken.jpg"):  # the default still raises
        scorer([image_files[0], str(bad)], batch_size=2, errors="raise")
    with pytest.raises(ValueError, match="errors"):
        scorer(image_files[0], errors="skip")
    constructed = pipeline("image-quality", model=scorer.model, errors="return")
    assert set(constructed(str(bad))) == {"error"}


def test_pipeline_default_processor(tiny_model_factory, tmp_path, image_files):
    model = tiny_model_factory(view_policy="center")
    model.save_pretrained(tmp_path)  # writes the default processor
    scorer = pipeline("image-quality", model=str(tmp_path))
    assert scorer.image_processor.crop_size == model.config.clip_config.vision_config.image_size
    with torch.no_grad():
        expected = model(**UniQAImageProcessor(crop_size=32)(image_files[:1], view_policy="center")).scores.item()
    assert scorer(image_files[0])["score"] == pytest.approx(expected, abs=1e-5)
    from_object = pipeline("image-quality", model=model)  # no processor given: the model's default
    assert from_object(image_files[0])["score"] == pytest.approx(expected, abs=1e-5)


FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["modeling_uniqa"] = None  # our package must not be importable here
    import torch
    from transformers import AutoImageProcessor, AutoModel, pipeline

    model_dir, images = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=True)
    with torch.no_grad():
        direct = model(**processor(images)).scores.tolist()
    scorer = pipeline(model=model_dir, trust_remote_code=True)
    piped = [r["score"] for r in scorer(images, batch_size=2)]
    kept_going = scorer([*images, sys.argv[3]], batch_size=2, errors="return")
    model.save_pretrained(sys.argv[4])  # a remote-code model re-saves a complete folder
    resaved = [r["score"] for r in pipeline(model=sys.argv[4], trust_remote_code=True)(images, batch_size=2)]
    print(json.dumps({"module": type(model).__module__, "direct": direct, "pipeline": piped, "kept_going": kept_going, "resaved": resaved}))
    """
)


def test_fresh_process_remote_code(saved_tiny_model, image_files, tmp_path):
    """A process where our package cannot be imported gets the same scores via remote code."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"garbage")
    completed = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, saved_tiny_model, json.dumps(image_files), str(bad), str(tmp_path / "resaved")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules."), result["module"]
    expected = direct_scores(saved_tiny_model, image_files)
    np.testing.assert_allclose(result["direct"], expected, atol=1e-6)
    np.testing.assert_allclose(result["pipeline"], expected, atol=1e-6)
    np.testing.assert_allclose(result["resaved"], expected, atol=1e-6)
    kept_going = result["kept_going"]  # errors="return" through remote code
    np.testing.assert_allclose([r["score"] for r in kept_going[:-1]], expected, atol=1e-6)
    assert set(kept_going[-1]) == {"error"} and "broken.jpg" in kept_going[-1]["error"]


def test_registered_auto_classes(saved_tiny_model):
    from transformers import AutoConfig, AutoImageProcessor

    assert isinstance(AutoConfig.from_pretrained(saved_tiny_model), modeling_uniqa.UniQAConfig)
    assert isinstance(AutoImageProcessor.from_pretrained(saved_tiny_model), UniQAImageProcessor)
    with open(os.path.join(saved_tiny_model, "config.json")) as handle:
        saved = json.load(handle)
    assert saved["auto_map"]["AutoModel"] == "modeling_uniqa.UniQAModel"
    assert saved["custom_pipelines"]["image-quality"]["impl"] == "pipeline_uniqa.ImageQualityPipeline"


def test_array_images_in_a_list(scorer):
    arrays = [random_rgb(40, 50, seed=s) for s in range(3)]
    assert len(scorer(arrays, batch_size=2)) == 3
