"""make_quality_corpus.py (photos -> KADID-layout train / held-out corpora) and make_small_clip.py,
on generated 'photos' standing in for the packages (the package reading is test_photo_sources.py's)."""

import filecmp
import json
import os

import numpy as np
import pytest
from PIL import Image

import data_builders
from tests.helpers import random_rgb
from train_scripts import make_quality_corpus, make_small_clip
from train_scripts.common.photo_sources import Photo, PhotoSource


@pytest.fixture
def fake_sources(monkeypatch):
    sources = (PhotoSource("pkg-a", "deb", include=("*",)), PhotoSource("pkg-b", "deb", include=("*",)),
               PhotoSource("scikit-image", "skimage", include=("x",)))

    def load(source, cache_dir):
        seed = sum(map(ord, source.name))
        return [Photo(source.name, f"photo{i}.jpg", Image.fromarray(random_rgb(90 + 10 * i, 120, seed=seed + i)),
                      "CC0-1.0", "Someone", "1.0") for i in range(2)]

    monkeypatch.setattr(make_quality_corpus, "SOURCES", sources)
    monkeypatch.setattr(make_quality_corpus, "load_source", load)


def _run(folder, *extra):
    args = make_quality_corpus.parse_args(["--output_dir", str(folder), "--codes", "01", "11", "--short_side", "64", "80",
                                           "--workers", "1", "--heldout_sources", "scikit-image", *extra])
    return make_quality_corpus.main(args)


def test_corpus_is_split_by_source_in_kadid_layout_and_deterministic(tmp_path, fake_sources):
    assert _run(tmp_path / "a") == 0
    assert _run(tmp_path / "b") == 0
    for split in ("train", "heldout"):
        assert filecmp.cmp(tmp_path / "a" / split / "dmos.csv", tmp_path / "b" / split / "dmos.csv", shallow=False)
    train = data_builders.load("kadid10k", str(tmp_path / "a/train"), split_scheme="full")["full"]
    heldout = data_builders.load("kadid10k", str(tmp_path / "a/heldout"), split_scheme="full")["full"]
    assert len(train) == 4 * 2 * 5 and len(heldout) == 2 * 2 * 5  # photos x codes x levels
    assert set(train["reference"]).isdisjoint(heldout["reference"])
    assert set(train["distortion"]) == {"01", "11"}
    mos = np.asarray(train["mos"])
    assert (mos >= 1).all() and (mos <= 5).all()
    for code in ("01", "11"):  # stronger level, lower pseudo-MOS, on average
        by_level = [np.mean([r["mos"] for r in train if r["distortion"] == code and r["level"] == lev]) for lev in (1, 5)]
        assert by_level[0] > by_level[1]
    with Image.open(tmp_path / "a/train/images/I001.png") as reference:
        assert min(reference.size) in range(64, 81)
    sources = (tmp_path / "a/SOURCES.md").read_text()
    assert "| heldout | I005.png |" in sources and "pkg-a" in sources and "CC0-1.0" in sources


def test_vary_implementation_changes_training_images_only(tmp_path, fake_sources):
    """Training images draw their blur and noise implementations; held-out ones keep the defaults."""
    assert _run(tmp_path / "plain") == 0
    assert _run(tmp_path / "varied", "--vary_implementation") == 0
    for split, same in (("train", False), ("heldout", True)):
        names = sorted(os.listdir(tmp_path / "plain" / split / "images"))
        assert names == sorted(os.listdir(tmp_path / "varied" / split / "images"))
        equal = [filecmp.cmp(tmp_path / "plain" / split / "images" / name, tmp_path / "varied" / split / "images" / name, shallow=False)
                 for name in names if "_" in name]
        assert all(equal) if same else not all(equal), split


def test_gmsd_exponent_spreads_the_top_of_the_scale_and_keeps_the_ranking(tmp_path, fake_sources):
    assert _run(tmp_path / "linear") == 0
    assert _run(tmp_path / "curved", "--gmsd_exponent", "0.5") == 0
    for split in ("train", "heldout"):
        linear, curved = (data_builders.load("kadid10k", str(tmp_path / run / split), split_scheme="full")["full"] for run in ("linear", "curved"))
        assert list(linear["image_name"]) == list(curved["image_name"])
        before, after = np.asarray(linear["mos"]), np.asarray(curved["mos"])
        # Same images, same pixels, the same order; every MOS below 5 moves down.
        np.testing.assert_allclose(after, 5 - 4 * ((5 - before) / 4) ** 0.5, atol=1e-3)  # both rounded to 4 places
        assert (after <= before + 1e-9).all() and (np.diff(after[np.argsort(before)]) >= 0).all()
    assert filecmp.cmp(tmp_path / "linear/train/images/I001_11_01.png", tmp_path / "curved/train/images/I001_11_01.png", shallow=False)


def test_corpus_argument_errors(tmp_path, fake_sources):
    with pytest.raises(SystemExit):
        make_quality_corpus.parse_args(["--output_dir", "x", "--short_side", "80", "64"])
    with pytest.raises(SystemExit):
        make_quality_corpus.parse_args(["--output_dir", "x", "--jitter", "1.5"])
    with pytest.raises(SystemExit):
        make_quality_corpus.parse_args(["--output_dir", "x", "--gmsd_exponent", "0"])


def test_small_clip_is_written_once_and_kept_on_a_rerun(tmp_path):
    argv = ["--output_dir", str(tmp_path / "clip"), "--image_size", "32", "--patch_size", "8", "--vision_width", "32",
            "--vision_layers", "1", "--vision_heads", "2", "--text_width", "16", "--text_layers", "1", "--text_heads", "1",
            "--projection_dim", "16"]
    assert make_small_clip.main(make_small_clip.parse_args(argv)) == 0
    weights = (tmp_path / "clip/model.safetensors").read_bytes()
    assert make_small_clip.main(make_small_clip.parse_args(argv)) == 0  # same settings: kept
    assert (tmp_path / "clip/model.safetensors").read_bytes() == weights
    assert make_small_clip.main(make_small_clip.parse_args([*argv[:-2], "--projection_dim", "8"])) == 2  # another model
    assert make_small_clip.main(make_small_clip.parse_args([*argv, "--vision_heads", "3"])) == 2  # 32 % 3
    config = json.loads((tmp_path / "clip/config.json").read_text())
    assert config["vision_config"]["image_size"] == 32 and not os.path.exists(tmp_path / "clip.partial")


def test_training_photos_give_one_reference_per_short_side_range(tmp_path, fake_sources):
    # fake photos have short sides 90 and 100: the 95:100 range skips the smaller one (never upscaled)
    assert _run(tmp_path / "c", "--train_short_sides", "64:80", "95:100") == 0
    train = data_builders.load("kadid10k", str(tmp_path / "c/train"), split_scheme="full")["full"]
    references = sorted(set(train["reference"]))
    assert len(references) == 4 + 2  # 4 photos at 64-80 px, the 2 of 100 px again at 95-100
    short_sides = []
    for name in references:
        with Image.open(tmp_path / "c/train/images" / f"{name}.png") as reference:
            short_sides.append(min(reference.size))
    assert sorted(short_sides)[:4] == sorted(s for s in short_sides if s <= 80) and sum(s >= 95 for s in short_sides) == 2
    heldout = data_builders.load("kadid10k", str(tmp_path / "c/heldout"), split_scheme="full")["full"]
    assert set(heldout["reference"]) == {"I007", "I008"}  # numbered after the training references
    with pytest.raises(SystemExit):
        make_quality_corpus.parse_args(["--output_dir", "x", "--train_short_sides", "200"])
