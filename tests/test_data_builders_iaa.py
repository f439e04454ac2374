"""The IAA builders (AVA, AADB, BAID) against tiny copies in the real formats."""

import logging
import os
import shutil
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import data_fixtures as fx  # noqa: E402

from data_builders import DatasetFormatError, MissingImageError, get_metadata  # noqa: E402

fx.quiet_datasets()


def test_ava_standard_split_mos_and_extras(tmp_path, caplog):
    info = fx.write_ava(str(tmp_path / "ava"))
    with caplog.at_level(logging.WARNING, logger="data_builders"):
        ds = fx.build("ava", tmp_path / "ava", tmp_path)
    names = fx.split_names(ds)
    assert sorted(names["test"]) == sorted(f"{i}.jpg" for i in info["test"])
    assert len(names["train"]) == 30 - 6 - 1  # the missing image is skipped
    assert "1 of 30 images" in caplog.text and f"{info['missing'][0]}.jpg" in caplog.text
    fx.assert_disjoint(ds)
    fx.assert_scores(ds, (1, 10), True)
    row = ds["test"][2]
    line = info["lines"][2].split()
    votes = [int(v) for v in line[2:12]]
    assert row["votes"] == votes and row["num_votes"] == sum(votes)
    assert row["mos"] == pytest.approx(np.dot(np.arange(1, 11), votes) / sum(votes))
    assert row["semantic_tag_ids"] == [3, 2] and row["semantic_tags"] == ["Animals", "Still Life"]
    assert (row["challenge_id"], row["challenge"]) == (1396, "Shadows")
    assert get_metadata(ds)["skipped_images"] == {"missing": 1}
    assert get_metadata(ds)["task"] == "aesthetics"


def test_ava_strict_and_verify_images(tmp_path):
    info = fx.write_ava(str(tmp_path / "ava"))
    with pytest.raises(MissingImageError, match="not found") as error:
        fx.build("ava", tmp_path / "ava", tmp_path, strict=True)
    assert error.value.missing == [f"{info['missing'][0]}.jpg"]
    ds = fx.build("ava", tmp_path / "ava", tmp_path, verify_images=True)
    all_names = [n for part in fx.split_names(ds).values() for n in part]
    assert f"{info['corrupt'][0]}.jpg" not in all_names and len(all_names) == 28
    fx.write_ava(str(tmp_path / "ava2"), missing=0)
    with pytest.raises(MissingImageError, match="could not be decoded"):
        fx.build("ava", tmp_path / "ava2", tmp_path, verify_images=True, strict=True)


def test_ava_without_test_list_uses_random_split_and_official_fails(tmp_path):
    fx.write_ava(str(tmp_path / "ava"), missing=0)
    os.remove(tmp_path / "ava" / "aesthetics_image_lists" / "generic_test.jpgl")
    ds = fx.build("ava", tmp_path / "ava", tmp_path)
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 24, "test": 6}
    with pytest.raises(ValueError, match="generic_test.jpgl"):
        fx.build("ava", tmp_path / "ava", tmp_path, split_scheme="official")


def test_ava_malformed_line_names_file_and_line(tmp_path):
    fx.write_ava(str(tmp_path / "ava"))
    path = tmp_path / "ava" / "AVA.txt"
    lines = path.read_text().splitlines()
    lines[4] = " ".join(lines[4].split()[:14])  # 14 fields instead of 15
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"AVA\.txt, line 5: expected 15") as error:
        fx.build("ava", tmp_path / "ava", tmp_path)
    assert error.value.line == 5


def test_aadb_official_splits_and_attributes(tmp_path):
    info = fx.write_aadb(str(tmp_path / "aadb"))
    ds = fx.build("aadb", tmp_path / "aadb", tmp_path)
    assert fx.split_names(ds) == {"train": info["train"], "validation": info["validation"], "test": info["test"]}
    fx.assert_scores(ds, (0, 1), True)
    assert set(ds["test"]["balancing_elements"]) == {0.2}
    assert ds["test"]["color_harmony"][-1] is None and ds["test"]["color_harmony"][0] == -0.4
    assert set(ds["train"]["symmetry"]) == {None}


@pytest.mark.parametrize("test_attributes", ["Test", "TestNew"])
def test_aadb_attribute_files_of_the_test_part_old_or_new_names(tmp_path, test_attributes):
    fx.write_aadb(str(tmp_path / "aadb"), test_attributes=test_attributes)
    ds = fx.build("aadb", tmp_path / "aadb", tmp_path)
    assert set(ds["test"]["balancing_elements"]) == {0.2}
    assert ds["test"]["color_harmony"][-1] is None and ds["test"]["color_harmony"][0] == -0.4
    assert any(f"imgList{test_attributes}Regression_ColorHarmony.txt" in p for p in get_metadata(ds)["label_files"])


@pytest.mark.parametrize("label_folder", ["", "dataset"])
def test_baid_official_splits(tmp_path, label_folder):
    info = fx.write_baid(str(tmp_path / "baid"), label_folder=label_folder)
    ds = fx.build("baid", tmp_path / "baid", tmp_path, strict=True)
    assert fx.split_names(ds) == info
    fx.assert_scores(ds, (0, 10), True)
    expected = os.path.join(str(tmp_path / "baid"), label_folder, "test_set.csv")
    assert expected in get_metadata(ds)["label_files"]


def test_embedded_images_survive_moving_the_folder(tmp_path):
    fx.write_baid(str(tmp_path / "baid"))
    ds = fx.build("baid", tmp_path / "baid", tmp_path, embed_images=True)
    shutil.rmtree(tmp_path / "baid")
    assert ds["test"][0]["image"].size == (8, 8)
    assert get_metadata(ds)["image_storage"] == "bytes"
    raw = ds["test"].cast_column("image", type(ds["test"].features["image"])(decode=False))[0]["image"]
    assert raw["bytes"] and raw["path"] == ds["test"][0]["image_name"]


def test_paths_are_stored_not_bytes_by_default(tmp_path):
    fx.write_baid(str(tmp_path / "baid"))
    ds = fx.build("baid", tmp_path / "baid", tmp_path)
    raw = ds["train"].cast_column("image", type(ds["train"].features["image"])(decode=False))[0]["image"]
    assert raw["bytes"] is None and raw["path"] == ds["train"][0]["image_path"]
