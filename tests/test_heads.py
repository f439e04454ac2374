"""Named heads on one backbone: `uniqa heads add/list/remove`, scores equal to the separate
models', refusal across backbones, atomic rewrites, pipeline keys, remote code and push."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from unittest.mock import create_autospec

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi
from safetensors import safe_open
from transformers import pipeline

from model_cards import write_model_card
from modeling_uniqa import UniQAImageProcessor, UniQAModel
from modeling_uniqa.cli import main as uniqa_main
from modeling_uniqa.core.adapter_io import AdapterMismatchError, save_adapter
from modeling_uniqa.hub.heads import add_head, list_heads, remove_head, rewrite_model_folder
from modeling_uniqa.hub.push import push_to_hub
from tests.helpers import TINY_IMAGE_SIZE, head_on_backbone, make_tiny_uniqa, same_backbone, save_tiny_uniqa


def _folder_bytes(directory):
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))}


@pytest.fixture
def folders(tmp_path, tiny_tokenizer):
    """A base model folder, a model and an adapter trained (here: random) on its backbone, and a
    model on another backbone; plus the in-memory models for reference scores."""
    base_dir = save_tiny_uniqa(tmp_path / "base", tiny_tokenizer, seed=0, mos_range=[0, 100], view_policy="five_crop")
    write_model_card(base_dir)
    base = UniQAModel.from_pretrained(base_dir).eval()
    ava = head_on_backbone(tiny_tokenizer, base, seed=3, task="aesthetics", mos_range=[1, 10], training_dataset="ava", prompt_groups="aigc")
    ava.save_pretrained(tmp_path / "ava")
    koniq = head_on_backbone(tiny_tokenizer, base, seed=4, mos_range=[1, 5], mos_higher_is_better=False, training_dataset="csiq")
    save_adapter(koniq, tmp_path / "csiq-adapter")
    foreign = make_tiny_uniqa(tiny_tokenizer, seed=1)
    foreign.save_pretrained(tmp_path / "foreign")
    save_adapter(foreign, tmp_path / "foreign-adapter")
    zero_shot = same_backbone(make_tiny_uniqa(tiny_tokenizer, seed=0, use_adapter=False, prompt_groups="sharpness"), base)
    return {
        "base_dir": base_dir, "base": base, "ava": ava, "koniq": koniq, "zero_shot": zero_shot,
        "ava_dir": str(tmp_path / "ava"), "adapter_dir": str(tmp_path / "csiq-adapter"),
        "foreign_dir": str(tmp_path / "foreign"), "foreign_adapter_dir": str(tmp_path / "foreign-adapter"),
    }


@pytest.fixture
def combined(folders):
    """The base folder with three heads added through the command line."""
    directory = folders["base_dir"]
    assert uniqa_main(["heads", "add", directory, "--from", folders["ava_dir"], "--name", "aesthetics"]) == 0
    assert uniqa_main(["heads", "add", directory, "--from", folders["adapter_dir"], "--name", "csiq"]) == 0
    assert uniqa_main(["heads", "add", directory, "--prompts", "sharpness", "--name", "sharpness"]) == 0
    return directory


def _pixels(image_files):
    return UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE)(image_files, view_policy="five_crop")["pixel_values"]


def test_combined_heads_equal_separate_models(folders, combined, image_files):
    model = UniQAModel.from_pretrained(combined).eval()
    assert model.head_names == ["default", "aesthetics", "csiq", "sharpness"]
    pixel_values = _pixels(image_files)
    with torch.no_grad():
        output = model(pixel_values=pixel_values)
        separate = {name: folders[key](pixel_values=pixel_values) for name, key in (
            ("default", "base"), ("aesthetics", "ava"), ("csiq", "koniq"), ("sharpness", "zero_shot"))}
    torch.testing.assert_close(output.scores, separate["default"].scores, atol=1e-6, rtol=0)
    for name in ("aesthetics", "csiq", "sharpness"):
        head = output.head_outputs[name]
        torch.testing.assert_close(head.scores, separate[name].scores, atol=1e-6, rtol=0)
        torch.testing.assert_close(head.group_scores, separate[name].group_scores, atol=1e-6, rtol=0)
    # The heads really differ (the check above is not comparing one head with itself).
    assert not torch.allclose(output.head_outputs["aesthetics"].scores, output.scores)
    # Selecting heads scores only those; MOS maps per head (csiq is DMOS 1-5).
    with torch.no_grad():
        assert set(model(pixel_values=pixel_values, heads=["csiq"]).head_outputs) == {"csiq"}
    torch.testing.assert_close(
        model.score_to_mos(output.head_outputs["csiq"].scores, "csiq"), 5 - output.head_outputs["csiq"].scores * 4
    )
    assert model.score_to_mos(output.scores) is not None and model.score_to_mos(output.scores, "sharpness") is None


def test_pipeline_keys_and_selection(folders, combined, image_files):
    scorer = pipeline("image-quality", model=combined)
    model = UniQAModel.from_pretrained(combined).eval()
    with torch.no_grad():
        output = model(pixel_values=_pixels(image_files[:2]))
    results = scorer(image_files[:2], batch_size=2, view_policy="five_crop")
    assert set(results[0]) == {"score", "mos", "aesthetics", "aesthetics_mos", "csiq", "csiq_mos", "sharpness"}
    np.testing.assert_allclose([r["score"] for r in results], output.scores, atol=1e-6)
    np.testing.assert_allclose([r["aesthetics"] for r in results], output.head_outputs["aesthetics"].scores, atol=1e-6)
    selected = scorer(image_files[0], heads=["sharpness"], return_group_scores=True, view_policy="five_crop")
    assert set(selected) == {"sharpness", "sharpness_group_scores"}
    assert selected["sharpness"] == pytest.approx(output.head_outputs["sharpness"].scores[0].item(), abs=1e-6)
    broken = os.path.join(os.path.dirname(image_files[0]), "broken.jpg")
    with open(broken, "wb") as handle:
        handle.write(b"garbage")
    kept_going = scorer([image_files[0], broken], batch_size=2, errors="return", heads=["default", "csiq"], view_policy="five_crop")
    assert set(kept_going[0]) == {"score", "mos", "csiq", "csiq_mos"} and set(kept_going[1]) == {"error"}
    with pytest.raises(ValueError, match="nope"):
        scorer(image_files[0], heads=["nope"])


def test_foreign_backbone_is_refused_and_folder_kept(folders, caplog):
    directory = folders["base_dir"]
    before = _folder_bytes(directory)
    for source in (folders["foreign_dir"], folders["foreign_adapter_dir"]):
        with pytest.raises(AdapterMismatchError, match="backbone sha256"):
            add_head(directory, "foreign", source=source)
        assert uniqa_main(["heads", "add", directory, "--from", source, "--name", "foreign"]) == 2
    assert "backbone sha256" in caplog.text
    assert _folder_bytes(directory) == before
    assert [name for name in os.listdir(os.path.dirname(directory)) if name.startswith(".")] == []


def test_broken_folders_are_one_line_not_a_traceback(folders, caplog):
    """A truncated or mis-shaped folder raised a SafetensorError / RuntimeError out of `uniqa heads`."""
    directory = folders["base_dir"]
    weights = os.path.join(folders["ava_dir"], "model.safetensors")
    with open(weights, "rb") as handle:
        data = handle.read()
    with open(weights, "wb") as handle:
        handle.write(data[: len(data) // 2])
    assert uniqa_main(["heads", "add", directory, "--from", folders["ava_dir"], "--name", "aesthetics"]) == 2
    assert "ava/model.safetensors: not a readable safetensors file" in caplog.text
    shutil.copyfile(weights, os.path.join(directory, "model.safetensors"))
    assert uniqa_main(["heads", "add", directory, "--prompts", "noise", "--name", "noise"]) == 2
    assert uniqa_main(["heads", "remove", directory, "--name", "noise"]) == 2
    assert "base/model.safetensors: not a readable safetensors file" in caplog.text and "Traceback" not in caplog.text


def test_single_head_layout_unchanged_and_remove_restores_it(folders, combined, image_files):
    directory = folders["base_dir"]
    with open(os.path.join(directory, "config.json")) as handle:
        assert set(json.load(handle)["heads"]) == {"aesthetics", "csiq", "sharpness"}
    with safe_open(os.path.join(directory, "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    assert {"heads.aesthetics.adapter.fc.0.weight", "heads.csiq.level_scores", "heads.sharpness.prompt_embeds"} <= keys
    assert not any(key.startswith("heads.sharpness.adapter") for key in keys)  # zero-shot: no adapter
    assert {"adapter.fc.0.weight", "level_scores", "prompt_embeds"} <= keys  # the default head as before
    for name in ("aesthetics", "csiq", "sharpness"):
        assert uniqa_main(["heads", "remove", directory, "--name", name]) == 0
    with open(os.path.join(directory, "config.json")) as handle:
        assert "heads" not in json.load(handle)  # a single-head config.json has exactly its old keys
    with safe_open(os.path.join(directory, "model.safetensors"), "pt") as handle:
        names = handle.keys()
    assert not any(key.startswith("heads.") for key in names)
    model = UniQAModel.from_pretrained(directory).eval()
    pixel_values = _pixels(image_files)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=pixel_values).scores, folders["base"](pixel_values=pixel_values).scores, atol=1e-6, rtol=0)
    assert os.path.isfile(os.path.join(directory, "tokenizer_config.json"))  # files save_pretrained does not write are kept


def test_list_names_and_own_prompts(folders, combined, capsys, caplog):
    directory = folders["base_dir"]
    rows = {row["name"]: row for row in list_heads(directory)}
    assert rows["aesthetics"]["task"] == "aesthetics" and rows["aesthetics"]["training_dataset"] == "ava"
    assert rows["sharpness"]["kind"] == "zero-shot" and rows["csiq"]["mos_higher_is_better"] is False
    # The sources score 10 random crops, this model five crops: said when the heads were added.
    assert any("view policy is random10" in record.getMessage() for record in caplog.get_records("setup"))
    assert uniqa_main(["heads", "list", directory]) == 0
    assert "aesthetics\tadapter\taesthetics" in capsys.readouterr().out
    prompts = ["very dark photo", "dark photo", "normal photo", "bright photo", "very bright photo"]
    assert uniqa_main(["heads", "add", directory, "--custom-prompts", *prompts, "--name", "brightness"]) == 0
    model = UniQAModel.from_pretrained(directory)
    assert model.config.head_config("brightness").prompt_groups == [prompts]
    assert uniqa_main(["heads", "add", directory, "--prompts", "noise", "--name", "brightness"]) == 2  # taken
    for bad in ("score", "default", "x_mos", "1abc"):
        assert uniqa_main(["heads", "add", directory, "--prompts", "noise", "--name", bad]) == 2
    assert uniqa_main(["heads", "remove", directory, "--name", "default"]) == 2
    assert uniqa_main(["heads", "remove", directory, "--name", "nope"]) == 2


def test_rewrite_is_atomic(folders, monkeypatch):
    directory = folders["base_dir"]
    before = _folder_bytes(directory)
    model = UniQAModel.from_pretrained(directory)
    model.add_prompt_head("noise", "noise")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(UniQAModel, "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        rewrite_model_folder(model, directory)
    assert _folder_bytes(directory) == before
    assert [name for name in os.listdir(os.path.dirname(directory)) if name.startswith(".")] == []


def test_the_card_is_updated_by_the_command_not_the_library(folders):
    """Issue #25: `add_head` keeps the card as it was (no side effect); `uniqa heads` rewrites it
    in the staged copy, before the swap, so a failure there leaves the folder as it was."""
    directory = folders["base_dir"]
    card = os.path.join(directory, "README.md")
    with open(card, "rb") as handle:
        before = handle.read()
    add_head(directory, "sharpness", prompt_groups="sharpness")
    with open(card, "rb") as handle:
        assert handle.read() == before
    assert uniqa_main(["heads", "add", directory, "--prompts", "noise", "--name", "noise"]) == 0
    with open(card, encoding="utf-8") as handle:
        text = handle.read()
    assert "Named heads" in text and "`sharpness`: quality, zero-shot prompts sharpness" in text
    assert "`noise`: quality, zero-shot prompts noise" in text

    def failing(staging, model_dir):
        raise ValueError("card trouble")

    folder, beside = _folder_bytes(directory), sorted(os.listdir(os.path.dirname(directory)))
    with pytest.raises(ValueError, match="card trouble"):
        remove_head(directory, "noise", before_swap=failing)
    assert _folder_bytes(directory) == folder and sorted(os.listdir(os.path.dirname(directory))) == beside


def test_a_linked_model_folder_is_rewritten_where_the_link_points(tmp_path, tiny_tokenizer):
    real = save_tiny_uniqa(tmp_path / "store" / "real", tiny_tokenizer)
    (tmp_path / "models").mkdir()
    link = tmp_path / "models" / "link"
    link.symlink_to(real, target_is_directory=True)
    add_head(link, "sharpness", prompt_groups="sharpness")
    assert link.is_symlink() and os.listdir(tmp_path / "models") == ["link"]  # no stray .old-* entry
    assert [row["name"] for row in list_heads(real)] == ["default", "sharpness"]


def test_score_embeddings_matches_forward(tiny_model_factory):
    model = tiny_model_factory(prompt_groups="natural")
    pixel_values = torch.randn(2, 3, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    with torch.no_grad():
        output = model(pixel_values=pixel_values)
        raw = model.clip.get_image_features(pixel_values=pixel_values.flatten(0, 1)).pooler_output.view(2, 3, -1)
        direct = model.score_embeddings(raw)
        single = model.score_embeddings(raw[:, 0])
        single_forward = model(pixel_values=pixel_values[:, 0])
    for field in ("scores", "group_scores", "level_probs", "image_embeds"):
        torch.testing.assert_close(direct[field], output[field], atol=1e-6, rtol=0)
    torch.testing.assert_close(single.scores, single_forward.scores, atol=1e-6, rtol=0)
    assert output.head_outputs is None and len(output.to_tuple()) == 4  # single head: the old output
    with pytest.raises(ValueError, match="no head 'nope'"):
        model.score_embeddings(raw, head="nope")


def test_extra_heads_stay_frozen(folders, combined):
    model = UniQAModel.from_pretrained(combined)
    assert not any(parameter.requires_grad for parameter in model.heads.parameters())
    model.set_trainable(adapter=True, backbone=True)
    model.requires_grad_(True)
    assert not any(parameter.requires_grad for parameter in model.heads.parameters())
    assert model.adapter.fc[0].weight.requires_grad


FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["modeling_uniqa"] = None  # our package must not be importable here
    from transformers import pipeline

    scorer = pipeline(model=sys.argv[1], trust_remote_code=True)
    print(json.dumps(scorer(json.loads(sys.argv[2]), batch_size=2, view_policy="center")))
    """
)


def test_remote_code_round_trip(folders, combined, image_files, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    completed = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, combined, json.dumps(image_files)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    remote = json.loads(completed.stdout.strip().splitlines()[-1])
    local = pipeline("image-quality", model=combined)(image_files, batch_size=2, view_policy="center")
    assert [set(r) for r in remote] == [set(r) for r in local]
    for key in ("score", "aesthetics", "csiq_mos", "sharpness"):
        np.testing.assert_allclose([r[key] for r in remote], [r[key] for r in local], atol=1e-6)


def test_push_multi_head_model(folders, combined, tmp_path):
    api = create_autospec(HfApi, instance=True)
    directory = str(tmp_path / "pushed")
    shutil.copytree(combined, directory)
    push_to_hub(directory, "my-org/uniqa-multi", api=api)
    assert api.upload_folder.call_args.kwargs["folder_path"] == directory
    with open(os.path.join(directory, "README.md"), encoding="utf-8") as handle:
        card = handle.read()
    assert "Named heads" in card and "`aesthetics`: aesthetics, trained on ava, MOS [1, 10]" in card
    assert "`sharpness`: quality, zero-shot prompts sharpness" in card


def test_adapter_io_named_head_round_trip(folders, tmp_path, image_files):
    model = UniQAModel.from_pretrained(folders["base_dir"]).eval()
    model.set_head("ava", *folders["ava"].head_state())
    adapter_dir = save_adapter(model, tmp_path / "ava-adapter", head="ava")
    from modeling_uniqa.core.adapter_io import load_adapter

    fresh = load_adapter(folders["base_dir"], adapter_dir, head="aesthetics")
    pixel_values = _pixels(image_files[:2])
    with torch.no_grad():
        expected = folders["ava"](pixel_values=pixel_values).scores
        torch.testing.assert_close(fresh(pixel_values=pixel_values).head_outputs["aesthetics"].scores, expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="no adapter"):
        model.add_prompt_head("blur", "sharpness")
        save_adapter(model, tmp_path / "zero", head="blur")


def test_uniqa_score_head_columns(folders, combined, image_files, tmp_path, caplog):
    import csv

    def score(*arguments):
        return uniqa_main(["score", *map(str, arguments), "--workers", "0", "--view-policy", "five_crop"])

    output = tmp_path / "all.csv"
    assert score(*image_files, "--model", combined, "--output", output) == 0
    with open(output, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "score", "mos", "aesthetics", "aesthetics_mos", "csiq", "csiq_mos", "sharpness", "error"]
    model = UniQAModel.from_pretrained(combined).eval()
    with torch.no_grad():
        output_ = model(pixel_values=_pixels(image_files))
    np.testing.assert_allclose([float(row["score"]) for row in rows], output_.scores, atol=1e-5)
    for name in ("aesthetics", "csiq", "sharpness"):
        np.testing.assert_allclose([float(row[name]) for row in rows], output_.head_outputs[name].scores, atol=1e-5)
    np.testing.assert_allclose([float(row["csiq_mos"]) for row in rows], 5 - 4 * output_.head_outputs["csiq"].scores, atol=1e-4)

    selected = tmp_path / "selected.jsonl"
    assert score(*image_files, "--model", combined, "--output", selected, "--heads", "csiq", "--outputs", "score,mos,groups") == 0
    first = json.loads(selected.read_text().splitlines()[0])
    assert list(first) == ["path", "csiq", "csiq_mos", "csiq_group_default", "error"]
    assert score(*image_files, "--model", combined, "--output", tmp_path / "x.csv", "--heads", "nope") == 2
    assert "no head 'nope'" in caplog.text
    assert score(*image_files, "--model", combined, "--output", tmp_path / "y.csv", "--heads", "sharpness", "--outputs", "mos") == 2
