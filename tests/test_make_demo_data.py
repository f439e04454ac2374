import filecmp
import os

import numpy as np

import data_builders
from train_scripts import make_demo_data


def _make(folder, seed=0):
    make_demo_data.main(make_demo_data.parse_args(["--output_dir", str(folder), "--references", "3", "--size", "32", "--seed", str(seed)]))


def test_demo_data_reads_with_the_real_builders_and_is_deterministic(tmp_path):
    _make(tmp_path / "a")
    _make(tmp_path / "b")
    assert filecmp.cmp(tmp_path / "a/kadid/dmos.csv", tmp_path / "b/kadid/dmos.csv", shallow=False)
    assert filecmp.cmp(tmp_path / "a/ava/AVA.txt", tmp_path / "b/ava/AVA.txt", shallow=False)
    _make(tmp_path / "c", seed=1)
    assert not filecmp.cmp(tmp_path / "a/kadid/dmos.csv", tmp_path / "c/kadid/dmos.csv", shallow=False)

    kadid = data_builders.load("kadid10k", str(tmp_path / "a/kadid"), split_index=0)
    rows = kadid["train"].to_list() + kadid["test"].to_list()
    assert len(rows) == 3 * len(make_demo_data.DISTORTIONS) * make_demo_data.LEVELS
    assert {row["reference"] for row in kadid["train"]}.isdisjoint(row["reference"] for row in kadid["test"])
    mos = np.array([row["mos"] for row in rows])
    assert mos.min() >= 1 and mos.max() <= 5 and np.isfinite(mos).all()
    for kind in ("gaussian_blur", "gaussian_noise", "jpeg"):  # stronger distortion, lower pseudo-MOS
        index = make_demo_data.DISTORTIONS.index(kind) + 1
        by_level = [np.mean([r["mos"] for r in rows if r["image_name"].split("_")[1:] == [f"{index:02d}", f"{level:02d}.png"]]) for level in (1, 5)]
        assert by_level[0] > by_level[1], kind

    ava = data_builders.load("ava", str(tmp_path / "a/ava"))
    assert len(ava["train"]) + len(ava["test"]) == 3 * len(make_demo_data.AESTHETIC_VARIANTS)
    captions = data_builders.load("ava_captions", str(tmp_path / "a/ava"), image_dir=str(tmp_path / "a/ava/images"))
    assert all(len(row["captions"]) == 5 for row in captions["train"])
    assert "public domain" in (tmp_path / "a/SOURCES.md").read_text()
    assert os.path.exists(tmp_path / "a/kadid/images/I03_08_05.png")


def test_small_clip_folder_loads_like_a_hub_clip(tmp_path):
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    make_demo_data.write_small_clip(str(tmp_path), image_size=32, seed=0)
    model = CLIPModel.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer("bad image").input_ids == [49406, 2103, 2867, 49407]  # OpenAI's ids, not a toy vocabulary
    assert model.config.text_config.vocab_size == len(tokenizer)
    assert AutoImageProcessor.from_pretrained(tmp_path).crop_size["height"] == model.config.vision_config.image_size == 32
