"""Model folder checks: every fault is one line naming the file and the problem; `uniqa score`
stops on it with exit code 2 before reading any image."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_uniqa.cli import main
from modeling_uniqa.core.model_folder import ModelFolderError, check_model_folder, load_model_folder, model_fingerprint
from modeling_uniqa.scoring import score_images


@pytest.fixture
def model_copy(saved_tiny_model, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(saved_tiny_model, target)
    return target


def _rewrite_weights(folder, change):
    weights = load_file(folder / "model.safetensors")
    change(weights)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def no_config(folder):
    os.remove(folder / "config.json")


def truncated(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def junk_100_bytes(folder):
    (folder / "model.safetensors").write_bytes(bytes(range(100)))


def seven_level_scores(folder):
    _rewrite_weights(folder, lambda weights: weights.update(level_scores=torch.arange(7.0)))


def mismatched_projection(folder):
    _rewrite_weights(folder, lambda weights: weights.update({"clip.visual_projection.weight": torch.zeros(8, 32)}))


def missing_tensor(folder):
    _rewrite_weights(folder, lambda weights: weights.pop("adapter.fc.0.weight"))


def no_weights(folder):
    os.remove(folder / "model.safetensors")


def seven_level_scores_in_config(folder):
    config = json.loads((folder / "config.json").read_text())
    config["initial_level_scores"] = [0.1 * i for i in range(7)]
    (folder / "config.json").write_text(json.dumps(config))


def dmos_flag_as_a_string(folder):
    config = json.loads((folder / "config.json").read_text())
    config["mos_higher_is_better"] = "false"  # truthy: the DMOS head would have been read as MOS
    (folder / "config.json").write_text(json.dumps(config))


def not_uniqa(folder):
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "clip"
    (folder / "config.json").write_text(json.dumps(config))


FAULTS = [
    (no_config, r"config.json: missing"),
    (truncated, r"model.safetensors: not a readable safetensors file, truncated or corrupt"),
    (junk_100_bytes, r"model.safetensors: not a readable safetensors file, truncated or corrupt \(100 bytes"),
    (seven_level_scores, r"model.safetensors: tensor shapes do not match config.json: level_scores is \[7\], expected \[5\]"),
    (mismatched_projection, r"model.safetensors: tensor shapes do not match config.json: clip.visual_projection.weight is \[8, 32\]"),
    (missing_tensor, r"model.safetensors: lacks tensors that config.json needs: adapter\."),
    (no_weights, r"model.safetensors: missing; no weights in"),
    (seven_level_scores_in_config, r"config.json: invalid UniQA config \(.*initial_level_scores"),
    (dmos_flag_as_a_string, r"config.json: invalid UniQA config \(.*`mos_higher_is_better` must be true or false"),
    (not_uniqa, r"config.json: model_type is 'clip', not 'uniqa'"),
]


@pytest.mark.parametrize("fault, message", FAULTS, ids=[fault.__name__ for fault, _ in FAULTS])
def test_faults_are_one_clear_line(model_copy, fault, message):
    fault(model_copy)
    with pytest.raises(ModelFolderError, match=message) as raised:
        check_model_folder(model_copy)
    assert "\n" not in str(raised.value) and str(model_copy) in str(raised.value)


def test_missing_and_non_folders(tmp_path):
    with pytest.raises(ModelFolderError, match=r"nowhere: no such folder"):
        check_model_folder(str(tmp_path / "nowhere"))
    (tmp_path / ".nowhere.old-x1y2").mkdir()  # a `uniqa heads` rewrite killed between its two renames
    with pytest.raises(ModelFolderError, match=r"nowhere: no such folder, but an interrupted `uniqa heads` left it as .*\.nowhere\.old-x1y2"):
        check_model_folder(str(tmp_path / "nowhere"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFolderError, match=r"file: not a folder"):
        check_model_folder(str(tmp_path / "file"))


def test_a_good_folder_loads_and_has_a_stable_fingerprint(saved_tiny_model, model_copy):
    model = load_model_folder(saved_tiny_model)
    assert not model.training and model.level_scores.shape == (5,)
    assert model_fingerprint(saved_tiny_model) == model_fingerprint(model_copy)  # content, not place
    seven_level_scores(model_copy)
    assert model_fingerprint(saved_tiny_model) != model_fingerprint(model_copy)


@pytest.mark.parametrize("fault", [truncated, seven_level_scores, no_config], ids=lambda fault: fault.__name__)
def test_score_stops_with_exit_code_2_before_any_image(model_copy, tmp_path, monkeypatch, caplog, fault):
    fault(model_copy)
    image = tmp_path / "image.png"
    image.write_bytes(b"never read")
    monkeypatch.setattr(score_images, "load_image", lambda *args: pytest.fail("an image was read"))
    assert main(["score", str(image), "--model", str(model_copy), "--output", str(tmp_path / "s.csv"), "--workers", "0"]) == 2
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1 and str(model_copy) in errors[0].getMessage() and "\n" not in errors[0].getMessage()
    assert "Traceback" not in caplog.text and not (tmp_path / "s.csv").exists()


def test_score_with_a_missing_model_folder(tmp_path, caplog):
    image = tmp_path / "image.png"
    image.write_bytes(b"x")
    assert main(["score", str(image), "--model", str(tmp_path / "no_model"), "--output", str(tmp_path / "s.csv")]) == 2
    assert "no_model: no such folder" in caplog.text and "Repo id" not in caplog.text


def test_a_broken_image_processor_config_is_named(model_copy):
    from modeling_uniqa.core.model_folder import load_image_processor

    model = load_model_folder(model_copy)
    for settings, message in [
        ('{"crop_size": 32, "view_policy": "eleven_crop"}', "view policy"),
        # These loaded and scored otherwise: "false" is truthy, a crop of 0 gave empty views, one
        # mean was broadcast over the three channels.
        ('{"crop_size": 32, "jpeg_draft": "false"}', "`jpeg_draft` must be true or false"),
        ('{"crop_size": 0}', "`crop_size` must be a positive integer"),
        ('{"crop_size": 32, "image_mean": [0.5]}', "`image_mean` must be 3 numbers"),
    ]:
        (model_copy / "preprocessor_config.json").write_text(settings)
        with pytest.raises(ModelFolderError, match=rf"preprocessor_config.json: invalid image processor config \(.*{message}"):
            load_image_processor(str(model_copy), model)


def test_a_new_adapter_on_a_zero_shot_folder_is_one_line_not_a_load_report(tmp_path, tiny_tokenizer, capfd, caplog):
    """Issue 23: adapter training from a zero-shot base printed transformers' LOAD REPORT
    (MISSING ... newly initialized) for the adapter."""
    import logging

    from modeling_uniqa.core.model_folder import load_model
    from tests.helpers import save_tiny_uniqa

    folder = save_tiny_uniqa(tmp_path / "zero", tiny_tokenizer, seed=0, use_adapter=False)
    with caplog.at_level(logging.INFO, logger="modeling_uniqa"):
        model = load_model(folder, use_adapter=True).model
    captured = capfd.readouterr()
    assert model.config.use_adapter
    assert "LOAD REPORT" not in captured.err + captured.out + caplog.text and "MISSING" not in captured.err + caplog.text
    assert "a new adapter is initialised, to be trained" in caplog.text
    assert logging.getLogger("transformers.modeling_utils").level == logging.NOTSET  # restored
