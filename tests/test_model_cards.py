"""model_cards: the generated README.md parses back, merges results, and its usage snippet runs."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard
from PIL import Image
from transformers import CLIPModel

from model_cards import ModelCardError, write_model_card
from model_cards.__main__ import main as card_main
from model_cards.__main__ import parse_args as card_args
from model_cards.card import NON_COMMERCIAL_LICENSE_NAME, guess_base_model
from modeling_uniqa.core.adapter_io import save_adapter
from modeling_uniqa.hub.convert import card_source, convert
from tests.helpers import random_rgb, tiny_clip_config

KONIQ = {"dataset": "koniq10k", "dataset_name": "KonIQ-10k", "srcc": 0.933, "plcc": 0.941, "protocol": "10 random 80/20 splits (seed 123), median"}
CLIVE = {"dataset": "clive", "dataset_name": "LIVE Challenge", "srcc": 0.89, "plcc": 0.905, "protocol": "10 random 80/20 splits (seed 123), median"}


@pytest.fixture
def model_dir(saved_tiny_model, tmp_path):
    directory = tmp_path / "uniqa-koniq"
    shutil.copytree(saved_tiny_model, directory)
    return str(directory)


def metrics_of(card) -> dict:
    """{(dataset, split, protocol, metric): value} from a card's model-index."""
    return {
        (r.dataset_type, r.dataset_split, (r.dataset_args or {}).get("protocol"), r.metric_type): r.metric_value
        for r in card.data.eval_results
    }


def python_block(card_text: str) -> str:
    return re.search(r"## Usage\n\n```python\n(.*?)```", card_text, re.S).group(1)


def test_card_for_converted_weights(model_dir):
    write_model_card(model_dir, results=[KONIQ], source={"kind": "authors-release", "checkpoint": "UniQA_weight.pt"})
    card = ModelCard.load(os.path.join(model_dir, "README.md"))
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-classification"
    assert {"uniqa", "image-quality-assessment", "custom_code"} <= set(data.tags)
    assert data.license == "other" and data.license_name == NON_COMMERCIAL_LICENSE_NAME
    assert metrics_of(card) == {
        ("koniq10k", "test", KONIQ["protocol"], "spearmanr"): 0.933,
        ("koniq10k", "test", KONIQ["protocol"], "pearsonr"): 0.941,
    }
    assert {r.metric_name for r in data.eval_results} == {"SRCC", "PLCC"}
    assert {r.task_name for r in data.eval_results} == {"Image Quality Assessment"}
    text = card.text
    assert "Non-commercial use only" in text and "arXiv:2406.01069" in text
    assert "UniQA: Unified Vision-Language Pre-training for Image Quality and Aesthetic Assessment" in text
    assert "mos = 0 + score * (100 - 0)" in text and "higher is better" in text
    assert "| KonIQ-10k | test |" in text and "0.933 | 0.941" in text
    for section in ("## Intended use", "## Limitations", "## Training", "## Licence", "## Citation"):
        assert section in text
    assert "default, sharpness, noise, quality" in text  # the natural ensemble of the fixture


def test_base_model_from_clip_shape():
    vit_b16 = {"vision_config": {"hidden_size": 768, "patch_size": 16, "num_hidden_layers": 12, "image_size": 224}}
    assert guess_base_model(vit_b16) == "openai/clip-vit-base-patch16"
    assert guess_base_model(tiny_clip_config()) is None


def test_results_merge_into_an_existing_card(model_dir):
    write_model_card(model_dir, results=[KONIQ], source={"kind": "authors-release"}, training={"epochs": 20, "lr": 2e-4})
    path = os.path.join(model_dir, "README.md")
    with open(path, "a") as handle:
        handle.write("\nHand-written: calibrated on the 512x384 release.\n")
    edited = ModelCard.load(path)
    edited.data.tags.append("koniq")
    edited.data.language = "en"
    edited.save(path)
    write_model_card(model_dir, results=[CLIVE, dict(KONIQ, srcc=0.94, plcc=None)])
    card = ModelCard.load(path)
    assert metrics_of(card) == {
        ("koniq10k", "test", KONIQ["protocol"], "spearmanr"): 0.94,  # replaced
        ("koniq10k", "test", KONIQ["protocol"], "pearsonr"): 0.941,  # kept: not measured again
        ("clive", "test", CLIVE["protocol"], "spearmanr"): 0.89,  # added
        ("clive", "test", CLIVE["protocol"], "pearsonr"): 0.905,
    }
    # Another protocol on the same dataset is another result, not a replacement.
    write_model_card(model_dir, results=[dict(KONIQ, protocol="official split", srcc=0.9, plcc=0.91)])
    card = ModelCard.load(path)
    assert len(card.data.eval_results) == 6
    # Source (hence licence), training recipe and hand-written notes survive regeneration.
    assert card.data.license_name == NON_COMMERCIAL_LICENSE_NAME
    assert "- epochs: 20" in card.text and "calibrated on the 512x384 release" in card.text
    assert card.text.count("## Notes") == 1
    assert "koniq" in card.data.tags and card.data.language == "en"  # hand-edited metadata kept


def test_foreign_readme_is_kept_as_notes(model_dir):
    with open(os.path.join(model_dir, "README.md"), "w") as handle:
        handle.write("---\nlicense: mit\n---\n# My own words\nKeep me.\n")
    card = write_model_card(model_dir)
    assert "Keep me." in card.text and "## Usage" in card.text
    assert card.data.license == "other" and card.data.license_name == "inherited"  # foreign metadata not trusted


def test_dmos_and_zero_shot_wording(tiny_model_factory, tmp_path):
    tiny_model_factory(mos_range=[0, 9], mos_higher_is_better=False).save_pretrained(tmp_path / "dmos")
    text = write_model_card(tmp_path / "dmos").text
    assert "lower = better" in text and "dmos = 9 - score * (9 - 0)" in text
    tiny_model_factory(use_adapter=False).save_pretrained(tmp_path / "zero")
    text = write_model_card(tmp_path / "zero", license="mit").text
    assert "knows no MOS scale" in text and "Zero-shot" in text and "Weights: `mit`" in text
    assert write_model_card(tmp_path / "zero", results=[KONIQ]).data.license == "mit"  # a choice is kept


def test_bad_inputs_are_named(model_dir, tmp_path):
    with pytest.raises(ModelCardError, match=r"results\[0\] \(koniq10k\): give 'srcc' and/or 'plcc'"):
        write_model_card(model_dir, results=[{"dataset": "koniq10k"}])
    with pytest.raises(ModelCardError, match=r"results\[1\] \(clive\): srcc=1.5 is not a correlation"):
        write_model_card(model_dir, results=[KONIQ, dict(CLIVE, srcc=1.5)])
    with pytest.raises(ModelCardError, match="unknown keys"):
        write_model_card(model_dir, results=[dict(KONIQ, sroc=0.9)])
    for not_a_correlation in (float("nan"), True):  # NaN: undefined; True was written as 1.0
        with pytest.raises(ModelCardError, match=r"results\[0\] \(koniq10k\): srcc=(nan|True) is not"):
            write_model_card(model_dir, results=[dict(KONIQ, srcc=not_a_correlation)])
    with pytest.raises(ModelCardError, match="neither a UniQA model"):
        write_model_card(tmp_path)
    assert not os.path.exists(os.path.join(model_dir, "README.md"))  # nothing half-written


def test_usage_snippet_runs_in_a_fresh_process(model_dir, tmp_path):
    card = write_model_card(model_dir, results=[KONIQ])
    snippet = python_block(card.text)
    assert 'trust_remote_code=True' in snippet and f'model="{model_dir}"' in snippet
    image = tmp_path / "photo.jpg"
    Image.fromarray(random_rgb(40, 48)).save(image)
    snippet = snippet.replace('"photo.jpg"', repr(str(image)))
    # Outside the repo and without it on the path: the saved remote code serves it.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=tmp_path, env=dict(env, HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'score':" in result.stdout and "'mos':" in result.stdout


def test_adapter_card_and_its_snippet(tiny_model_factory, tmp_path):
    model = tiny_model_factory(mos_range=[1, 5], training_dataset="clive")
    base = tiny_model_factory(use_adapter=False)
    base.clip.load_state_dict(model.clip.state_dict())
    base.save_pretrained(tmp_path / "base")
    adapter_dir = save_adapter(model, tmp_path / "adapter", base_name=str(tmp_path / "base"))
    assert not os.path.exists(os.path.join(adapter_dir, "README.md"))  # save_adapter writes no card
    card = write_model_card(adapter_dir)
    assert "adapter" in card.data.tags and card.data.base_model is None  # a local path is no Hub id
    assert "base_model_relation" not in card.data.to_dict()
    assert write_model_card(adapter_dir, base_model="my-org/uniqa-base").data.to_dict()["base_model_relation"] == "adapter"
    assert "only the UniQA head" in card.text and "trained on clive" in card.text
    image = tmp_path / "photo.png"
    Image.fromarray(random_rgb(32, 40)).save(image)
    namespace = {}
    exec(python_block(card.text).replace('"photo.jpg"', repr(str(image))).replace("print(", "result = ("), namespace)
    assert set(namespace["result"]) == {"score", "mos"}


def test_a_converted_folder_gets_the_card_of_its_source(tmp_path, tiny_tokenizer):
    clip_dir = tmp_path / "clip"
    CLIPModel._from_config(CLIPModel.config_class.from_dict(tiny_clip_config())).save_pretrained(clip_dir)
    tiny_tokenizer.save_pretrained(clip_dir)
    convert(str(clip_dir), output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out" / "README.md").exists()  # the library writes no card; `uniqa convert` does, so:
    write_model_card(str(tmp_path / "out"), source=card_source(str(clip_dir)))
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.library_name == "transformers" and card.data.license_name == "inherited"
    assert "from the HF CLIP checkpoint `clip`" in card.text


def test_command_line(model_dir, tmp_path, capsys):
    results = tmp_path / "results.json"
    results.write_text(json.dumps([KONIQ, CLIVE]))
    assert card_main(card_args([model_dir, "--results", str(results), "--license", "other", "--repo-id", "my-org/m"])) == 0
    card = ModelCard.load(os.path.join(model_dir, "README.md"))
    assert len(card.data.eval_results) == 4 and card.data.license_name == NON_COMMERCIAL_LICENSE_NAME
    assert 'pipeline(model="my-org/m"' in card.text
    results.write_text(json.dumps({"dataset": "koniq10k"}))
    assert card_main(card_args([model_dir, "--results", str(results)])) == 2
    assert "results must be a JSON list" in capsys.readouterr().err
    results.write_text("{not json")  # the package's one JSON reader: the error names the file
    assert card_main(card_args([model_dir, "--results", str(results)])) == 2
    assert f"{results}: not a readable JSON file" in capsys.readouterr().err


# Issue 23, finding 2: a card written into a staging folder names the folder it becomes.
@pytest.mark.parametrize("staging, final", [
    ("out/model/.model.partial", "out/model"),  # train_adapter.py, train_pretrain.py (write_model_folder)
    ("out/.mymodel.new-j22jlgwc", "out/mymodel"),  # uniqa heads (rewrite_model_folder)
    ("out/uniqa-tiny.partial", "out/uniqa-tiny"),
])
def test_card_written_in_a_staging_folder_names_the_final_folder(saved_tiny_model, tmp_path, monkeypatch, staging, final):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(saved_tiny_model, staging)
    text = write_model_card(staging).content
    staging_name = os.path.basename(staging)
    assert staging_name not in text
    assert f"# UniQA zero-shot model: {os.path.basename(final)}" in text or f": {os.path.basename(final)}\n" in text
    assert f'pipeline(model="{final}", trust_remote_code=True)' in text
    assert f"--model {final} " in text
    assert ModelCard.load(os.path.join(staging, "README.md")).data.model_name == os.path.basename(final)


def test_heads_add_card_names_the_model_folder(saved_tiny_model, tmp_path, monkeypatch):
    """`uniqa heads add` retitled the card `# UniQA fine-tuned model: .mymodel.new-j22jlgwc`."""
    from modeling_uniqa.cli import main as uniqa_main

    monkeypatch.chdir(tmp_path)
    shutil.copytree(saved_tiny_model, "mymodel")
    write_model_card("mymodel")
    assert uniqa_main(["heads", "add", "mymodel", "--prompts", "sharpness", "--name", "sharp"]) == 0
    with open("mymodel/README.md", encoding="utf-8") as handle:
        text = handle.read()
    assert ".new-" not in text and f'pipeline(model="{os.path.realpath("mymodel")}"' in text and ": mymodel\n" in text


def test_card_describes_the_folders_own_processor(saved_tiny_model, tmp_path):
    """The demo model's card said "ten random 224x224 crops" while its processor crops 64."""
    from modeling_uniqa import UniQAImageProcessor

    directory = tmp_path / "m"
    shutil.copytree(saved_tiny_model, directory)
    UniQAImageProcessor(crop_size=48, shortest_edge=96, view_policy="random10").save_pretrained(directory)
    text = write_model_card(directory).content
    assert "ten random 48x48 crops" in text and "224x224 crops" not in text
    assert "48x48 crops of the image resized to a short side of 96 pixels" in text
    UniQAImageProcessor(crop_size=48, view_policy="pyramid14").save_pretrained(directory)
    with open(directory / "config.json") as handle:
        config = json.load(handle)
    with open(directory / "config.json", "w") as handle:
        json.dump({**config, "view_policy": "pyramid14"}, handle)  # train_adapter.py writes both
    text = write_model_card(directory).content
    assert "`pyramid14` (seed 123):\n14 random 48x48 crops, half of the full-resolution image and half of the image halved" in text
    assert "crops of the full-resolution image (half of them) and of the image halved" in text


def test_card_is_a_new_file_not_written_through_a_link(model_dir, tmp_path):
    outside = tmp_path / "elsewhere.md"
    outside.write_text("keep me\n")
    os.symlink(outside, os.path.join(model_dir, "README.md"))
    write_model_card(model_dir)
    assert outside.read_text() == "keep me\n" and not os.path.islink(os.path.join(model_dir, "README.md"))
