"""UniQA-Tiny, the model shipped in the package: shipping a recipe's folder, and the shipped
weights themselves (they load offline by default and rank real distortions)."""

import csv
import io
import os

import numpy as np
import pytest
from PIL import Image, ImageFilter

from modeling_uniqa import DEFAULT_MODEL
from modeling_uniqa.core import default_model
from tests.helpers import build_tiny_tokenizer, save_tiny_uniqa

SHIPPED = os.path.isfile(os.path.join(DEFAULT_MODEL, "model.safetensors"))


def test_ship_copies_a_checked_model_folder_atomically(tmp_path):
    source = save_tiny_uniqa(str(tmp_path / "model"), build_tiny_tokenizer())
    os.makedirs(tmp_path / "model" / "checkpoint-5")
    (tmp_path / "model" / "train_log.jsonl").write_text("{}\n")
    target = str(tmp_path / "package" / "uniqa-tiny")
    files = default_model.ship(source, target)
    assert "model.safetensors" in files and "config.json" in files and "train_log.jsonl" not in files
    assert not any(name.endswith(".py") for name in files)  # the package's own modules serve
    assert sorted(os.listdir(target)) == files and not os.path.exists(target + ".partial")
    from modeling_uniqa import UniQAModel

    assert UniQAModel.from_pretrained(target).adapter is not None
    # Versions of one photo are viewed in the same places; no path of the making machine is kept.
    from modeling_uniqa.processing_uniqa import UniQAImageProcessor

    UniQAImageProcessor.from_pretrained(source, view_seeding="per_image").save_pretrained(source)  # a recipe's new folder
    default_model.ship(source, target)
    assert UniQAImageProcessor.from_pretrained(target).view_seeding == default_model.SHIPPED_VIEW_SEEDING == "shared"
    with open(os.path.join(target, "config.json"), encoding="utf-8") as handle:
        assert str(tmp_path) not in handle.read()


def test_ship_refuses_what_cannot_be_the_default(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        default_model.ship(str(tmp_path), str(tmp_path / "t"))
    zero_shot = save_tiny_uniqa(str(tmp_path / "zs"), build_tiny_tokenizer(), use_adapter=False)
    with pytest.raises(ValueError, match="has no adapter"):
        default_model.ship(zero_shot, str(tmp_path / "t"))
    monkeypatch.setattr(default_model, "MAX_SHIPPED_BYTES", 1000)
    fine = save_tiny_uniqa(str(tmp_path / "ok"), build_tiny_tokenizer())
    with pytest.raises(ValueError, match="over the"):
        default_model.ship(fine, str(tmp_path / "t"))
    assert not os.path.exists(tmp_path / "t")
    assert default_model.main(["ship", str(tmp_path)]) == 2
    assert default_model.main([]) == 2


def _coffee(short_side=384):
    from skimage import data

    image = Image.fromarray(data.coffee())
    scale = short_side / min(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)


def _jpeg(image, quality):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


@pytest.mark.skipif(not SHIPPED, reason="the package was installed without its default model")
def test_the_shipped_model_is_small_loads_by_default_and_ranks_distortions():
    from transformers import AutoModel, pipeline

    size = sum(os.path.getsize(os.path.join(DEFAULT_MODEL, name)) for name in os.listdir(DEFAULT_MODEL))
    assert size <= default_model.MAX_SHIPPED_BYTES
    model = AutoModel.from_pretrained(DEFAULT_MODEL)
    assert model.adapter is not None
    with open(os.path.join(DEFAULT_MODEL, "README.md"), encoding="utf-8") as handle:
        card = handle.read()
    assert 'pipeline("image-quality")' in card and "license: gpl-3.0" in card and "BRISQUE" in card

    scorer = pipeline("image-quality")  # no model: the shipped one
    photo = _coffee()
    rng = np.random.default_rng(0)
    noisy = [Image.fromarray(np.clip(np.asarray(photo, dtype=np.float32) + rng.normal(0, s, (*photo.size[::-1], 3)), 0, 255).astype(np.uint8))
             for s in (8, 20, 40)]
    versions = {
        "blur": [photo.filter(ImageFilter.GaussianBlur(r)) for r in (1.0, 2.0, 4.0)],
        "noise": noisy,
        "jpeg": [_jpeg(photo, q) for q in (30, 12, 4)],
    }
    original = scorer(photo)["score"]
    for kind, images in versions.items():
        scores = [out["score"] for out in scorer(images)]
        assert original > scores[0] > scores[1] > scores[2], (kind, original, scores)


@pytest.mark.skipif(not SHIPPED, reason="the package was installed without its default model")
def test_uniqa_score_without_a_model_uses_the_shipped_one(tmp_path):
    from modeling_uniqa.cli import main

    photo = _coffee(256)
    photo.save(tmp_path / "sharp.png")
    photo.filter(ImageFilter.GaussianBlur(3)).save(tmp_path / "blurred.png")
    output = tmp_path / "scores.csv"
    assert main(["score", str(tmp_path / "sharp.png"), str(tmp_path / "blurred.png"), "--output", str(output)]) == 0
    with open(output, newline="") as handle:
        rows = {os.path.basename(row["path"]): float(row["score"]) for row in csv.DictReader(handle)}
    assert rows["sharp.png"] > rows["blurred.png"]
