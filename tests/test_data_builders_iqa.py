"""The IQA builders against tiny copies of each dataset written in the real formats."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import data_fixtures as fx  # noqa: E402

from data_builders import get_metadata  # noqa: E402

fx.quiet_datasets()


def test_koniq_official_sets(tmp_path):
    info = fx.write_koniq(str(tmp_path / "koniq"))
    ds = fx.build("koniq10k", tmp_path / "koniq", tmp_path)
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 12, "validation": 3, "test": 5}
    for split, names in fx.split_names(ds).items():
        assert all(info["sets"][n].startswith(split[:4]) or (split == "train" and info["sets"][n] == "training")
                   for n in names)
    fx.assert_disjoint(ds)
    fx.assert_scores(ds, (0, 100), True)
    row = ds["train"][0]
    assert row["image_path"].endswith(os.path.join("512x384", row["image_name"]))
    assert row["image"].size == (8, 8)
    assert sum(row["vote_distribution"]) == pytest.approx(1.0, abs=1e-3)
    assert row["num_votes"] == sum(info["counts"][0])
    meta = get_metadata(ds)
    assert meta["mos_range"] == [0.0, 100.0] and meta["higher_is_better"] is True
    assert meta["split"]["split_scheme"] == "official" and meta["num_rows"]["test"] == 5


@pytest.mark.parametrize("scores", [True, False])
def test_koniq_sd_is_kept_on_its_1_to_5_scale_not_as_std(tmp_path, scores):
    # SD is on the 1-5 vote scale while mos is 0-100 (MOS_zscore): it is no std of mos
    info = fx.write_koniq(str(tmp_path / "k"), scores=scores)
    ds = fx.build("koniq10k", tmp_path / "k", tmp_path)
    assert "std" not in ds["train"].column_names
    for part in ds.values():
        for name, sd in zip(part["image_name"], part["sd_1_to_5"]):
            assert sd == info["sd_sets"][name]


def test_koniq_sets_file_alone_gives_the_official_sets(tmp_path):
    info = fx.write_koniq(str(tmp_path / "k"), scores=False)
    ds = fx.build("koniq10k", tmp_path / "k", tmp_path, strict=True)
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 12, "validation": 3, "test": 5}
    expected = {"train": "training", "validation": "validation", "test": "test"}
    assert all(info["sets"][n] == expected[split] for split, names in fx.split_names(ds).items() for n in names)
    mos = {n: m for part in ds.values() for n, m in zip(part["image_name"], part["mos"])}
    assert mos == pytest.approx(dict(zip(info["names"], info["mos"])))
    assert get_metadata(ds)["label_files"] == [str(tmp_path / "k" / "koniq10k_distributions_sets.csv")]


def test_koniq_scores_file_only_gives_random_splits(tmp_path):
    info = fx.write_koniq(str(tmp_path / "k"), sets=False, folder="1024x768")
    ds = fx.build("koniq10k", tmp_path / "k", tmp_path)
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 16, "test": 4}
    mos = dict(zip(ds["train"]["image_name"], ds["train"]["mos"]))
    assert all(mos[n] == pytest.approx(m) for n, m in zip(info["names"], info["mos"]) if n in mos)  # MOS_zscore
    assert "1024x768" in ds["train"][0]["image_path"]
    sd = dict(zip(ds["train"]["image_name"], ds["train"]["sd_1_to_5"]))
    assert sd == {n: info["sd_scores"][n] for n in sd} and "std" not in ds["train"].column_names
    with pytest.raises(ValueError, match="koniq10k_distributions_sets.csv"):
        fx.build("koniq10k", tmp_path / "k", tmp_path, split_scheme="official")


def test_koniq_image_dir_option(tmp_path):
    fx.write_koniq(str(tmp_path / "k"), folder="my_resized")
    ds = fx.build("koniq10k", tmp_path / "k", tmp_path, image_dir="my_resized")
    assert sum(v.num_rows for v in ds.values()) == 20
    assert "my_resized" in ds["test"][0]["image_path"]


def test_spaq_reads_xlsx_with_attributes(tmp_path):
    fx.write_spaq(str(tmp_path / "spaq"))
    ds = fx.build("spaq", tmp_path / "spaq", tmp_path)
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 12, "test": 3}
    fx.assert_scores(ds, (0, 100), True)
    row = ds["test"][0]
    assert (row["brightness"], row["sharpness"]) == (50.0, 54.0)


def test_clive_drops_the_seven_training_images(tmp_path):
    info = fx.write_clive(str(tmp_path / "clive"))
    ds = fx.build("clive", tmp_path / "clive", tmp_path)
    names = sorted(n for part in fx.split_names(ds).values() for n in part)
    assert names == sorted(info["names"]) and len(names) == 20
    assert set(ds["train"]["std"]) == {12.0}
    fx.assert_scores(ds, (0, 100), True)


@pytest.mark.parametrize("realigned", [True, False])
def test_live_is_dmos_and_split_by_reference(tmp_path, realigned):
    info = fx.write_live(str(tmp_path / "live"), realigned=realigned)
    ds = fx.build("live", tmp_path / "live", tmp_path)
    assert sum(v.num_rows for v in ds.values()) == len(info["names"]) == 785
    fx.assert_disjoint(ds, "reference")
    assert len(set(ds["test"]["reference"])) == 1 and len(set(ds["train"]["reference"])) == 5  # 6 refs, 80/20
    fx.assert_scores(ds, (0, 100), False)
    row = ds["train"][0]
    assert row["mos"] == pytest.approx(info["dmos"][row["image_name"]])
    assert row["distortion"] == row["image_name"].split("/")[0] and row["level"] is None
    k = int(row["image_name"].split("img")[1].split(".")[0])
    assert row["distortion_param"] == pytest.approx(0.5 * k)
    assert row["std"] == (7.0 if realigned else None)
    assert get_metadata(ds)["higher_is_better"] is False and get_metadata(ds)["split_unit"] == "reference"


@pytest.mark.parametrize("label_txt", [False, True])
def test_csiq_xlsx_header_on_row_4_and_case_insensitive_files(tmp_path, label_txt):
    info = fx.write_csiq(str(tmp_path / "csiq"), label_txt=label_txt)
    ds = fx.build("csiq", tmp_path / "csiq", tmp_path, strict=True)
    assert sum(v.num_rows for v in ds.values()) == 60
    fx.assert_disjoint(ds, "reference")
    assert set(ds["train"]["reference"]) | set(ds["test"]["reference"]) == set(info["refs"])
    fx.assert_scores(ds, (0, 1), False)
    blur = [p for part in ds.values() for p in part["image_path"] if "/blur/" in p.lower()]
    assert len(blur) == 10 and all(os.path.isfile(p) for p in blur)
    assert set(ds["train"]["distortion"]) <= {"awgn", "jpeg", "jpeg2000", "fnoise", "blur", "contrast"}
    assert set(ds["train"]["level"]) == {1, 2}


def test_tid2013_upper_case_bmp_names(tmp_path):
    info = fx.write_tid2013(str(tmp_path / "tid"), upper_bmp=True)
    assert any(n.endswith(".BMP") for n in info["names"])
    ds = fx.build("tid2013", tmp_path / "tid", tmp_path, strict=True)
    rows = {n: (r, d, lev) for part in ds.values()
            for n, r, d, lev in zip(part["image_name"], part["reference"], part["distortion"], part["level"])}
    assert sorted(rows) == sorted(info["names"])
    assert rows["I05_01_1.BMP"] == ("I05", "01", 1) and rows["I05_02_2.BMP"] == ("I05", "02", 2)
    assert all(os.path.isfile(p) for part in ds.values() for p in part["image_path"])


def test_tid2013_case_differs_between_list_and_disk(tmp_path):
    info = fx.write_tid2013(str(tmp_path / "tid"))
    ds = fx.build("tid2013", tmp_path / "tid", tmp_path, strict=True)
    assert sorted(n for part in fx.split_names(ds).values() for n in part) == sorted(info["names"])
    fx.assert_disjoint(ds, "reference")
    fx.assert_scores(ds, (0, 9), True)
    row = ds["test"][0]
    assert row["reference"] == row["image_name"][:3] and row["level"] in (1, 2) and row["std"] == 0.75


def test_kadid_is_a_mos_and_split_by_reference(tmp_path):
    info = fx.write_kadid(str(tmp_path / "kadid"))
    ds = fx.build("kadid10k", tmp_path / "kadid", tmp_path)
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 24, "test": 6}
    fx.assert_disjoint(ds, "reference")
    fx.assert_scores(ds, (1, 5), True)
    # the 'var' column already holds the standard deviation: taken as it is, no square root
    for part in ds.values():
        assert dict(zip(part["image_name"], part["std"])) == {n: info["std"][n] for n in part["image_name"]}


def test_kadid_include_references_adds_each_reference_at_the_top_of_the_scale_in_its_split(tmp_path):
    fx.write_kadid(str(tmp_path / "kadid"))
    plain = fx.build("kadid10k", tmp_path / "kadid", tmp_path)
    ds = fx.build("kadid10k", tmp_path / "kadid", tmp_path, include_references=True)
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 28, "test": 7}  # 5 references added, 4 + 1
    fx.assert_disjoint(ds, "reference")
    for name, part in ds.items():
        references = [row for row in part if row["distortion"] == "00"]
        assert {row["image_name"] for row in references} == {f"{row['reference']}.png" for row in plain[name]}
        assert all(row["mos"] == 5.0 and row["score"] == 1.0 and row["level"] == 0 and row["std"] == 0.0 for row in references)
        assert os.path.isfile(references[0]["image_path"])
        assert sorted(row["image_name"] for row in part if row["distortion"] != "00") == sorted(plain[name]["image_name"])
    with pytest.raises(ValueError, match="include_references"):
        fx.build("kadid10k", tmp_path / "kadid", tmp_path, include_references="yes")


def test_flive_official_split_and_subfolders(tmp_path):
    info = fx.write_flive(str(tmp_path / "flive"))
    ds = fx.build("flive", tmp_path / "flive", tmp_path)
    names = fx.split_names(ds)
    assert names["test"] == info["test"] and names["validation"] == info["validation"]
    assert len(names["train"]) == 12
    assert os.path.isfile(ds["train"][0]["image_path"]) and "/" in ds["train"][0]["image_name"]
    random = fx.build("flive", tmp_path / "flive", tmp_path, split_scheme="random")
    assert {k: v.num_rows for k, v in random.items()} == {"train": 16, "test": 4}


def test_flive_validation_file_as_paq2piq_code_names_it(tmp_path):
    info = fx.write_flive(str(tmp_path / "flive"), valid_file="labels<=640_padded.csv")
    ds = fx.build("flive", tmp_path / "flive", tmp_path)
    names = fx.split_names(ds)
    assert names["validation"] == info["validation"] and names["test"] == info["test"]
    assert any(p.endswith("labels<=640_padded.csv") for p in get_metadata(ds)["label_files"])


def test_agiqa3k_prompts_and_extras(tmp_path):
    info = fx.write_agiqa(str(tmp_path / "agiqa"))
    ds = fx.build("agiqa3k", tmp_path / "agiqa", tmp_path, split_scheme="full")
    assert list(ds) == ["full"] and ds["full"].num_rows == 15
    row = ds["full"][1]
    assert row["prompt"] == "a cat, on a mat, number 1" and row["adj1"] is None and row["adj2"] is None
    assert ds["full"]["generator"] == info["generators"]
    assert row["mos_align"] == 3.0 and row["std"] == 0.4
    fx.assert_scores(ds, (0, 5), True)


def test_folder_csv_generic_builder(tmp_path):
    info = fx.write_folder_csv(str(tmp_path / "uw"))
    ds = fx.build("folder_csv", tmp_path / "uw", tmp_path)
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 16, "test": 4}
    fx.assert_scores(ds, (min(info["mos"]), max(info["mos"])), True)
    assert get_metadata(ds)["mos_range"] == [min(info["mos"]), max(info["mos"])]
    flipped = fx.build("folder_csv", tmp_path / "uw", tmp_path, mos_range=(0, 10), higher_is_better=False)
    fx.assert_scores(flipped, (0, 10), False)
    assert get_metadata(flipped)["mos_range"] == [0.0, 10.0]


def test_folder_csv_reference_column_splits_by_reference(tmp_path):
    fx.write_folder_csv(str(tmp_path / "uw"), reference=True)
    for split_index in range(3):
        ds = fx.build("folder_csv", tmp_path / "uw", tmp_path, reference_column="ref", split_index=split_index)
        fx.assert_disjoint(ds, "reference")
        assert len(set(ds["test"]["reference"])) == 1  # 4 references, 80/20 -> 3/1
