"""Splits, few-label subsets, split files, text levels, metadata and caching."""

import json
import os
import sys

import datasets
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import data_fixtures as fx  # noqa: E402

from data_builders import (  # noqa: E402
    DatasetFormatError,
    assign_levels,
    few_label_subset,
    get_metadata,
    mos_convention,
    mos_to_score,
    random_split,
    read_split,
    score_to_mos,
    write_split,
)

fx.quiet_datasets()


def test_random_split_is_deterministic_disjoint_and_order_free():
    units = [f"img{i}" for i in range(50)]
    train, test = random_split(units, seed=123, split_index=0)
    assert len(train) == 40 and len(test) == 10 and not train & test and train | test == set(units)
    assert random_split(list(reversed(units)), seed=123, split_index=0) == (train, test)
    tests = {frozenset(random_split(units, seed=123, split_index=i)[1]) for i in range(10)}
    assert len(tests) == 10
    assert random_split(units, seed=7, split_index=0)[1] != test
    with pytest.raises(ValueError):
        random_split(units, seed=-1)


def test_few_label_subsets_are_nested_and_deterministic():
    names = [f"img{i}" for i in range(300)]
    s50, s100 = few_label_subset(names, 50), few_label_subset(names, 100)
    assert len(s50) == 50 and s50 < s100 and few_label_subset(names, 50) == s50
    assert few_label_subset(names, 50, repetition=1) != s50
    assert few_label_subset(names, 50, split_index=1) != s50
    with pytest.raises(ValueError, match="more than"):
        few_label_subset(names[:10], 50)


def test_ten_splits_of_a_synthetic_set_are_reference_disjoint(tmp_path):
    fx.write_tid2013(str(tmp_path / "tid"), n_refs=10, n_dist=2, levels=1)
    test_refs = []
    for split_index in range(10):
        ds = fx.build("tid2013", tmp_path / "tid", tmp_path, split_index=split_index)
        fx.assert_disjoint(ds, "reference")
        assert len(set(ds["train"]["reference"])) == 8 and len(set(ds["test"]["reference"])) == 2
        test_refs.append(frozenset(ds["test"]["reference"]))
    assert len(set(test_refs)) > 5
    again = fx.build("tid2013", tmp_path / "tid", tmp_path, split_index=3, cache_dir=str(tmp_path / "fresh"))
    assert frozenset(again["test"]["reference"]) == test_refs[3]  # regenerated, not read from the cache
    assert again["test"].cache_files[0]["filename"].startswith(str(tmp_path / "fresh"))


def test_builder_few_label_keeps_the_test_set(tmp_path):
    fx.write_koniq(str(tmp_path / "k"), n=40, sets=False)
    full = fx.build("koniq10k", tmp_path / "k", tmp_path, split_index=2)
    few = fx.build("koniq10k", tmp_path / "k", tmp_path, split_index=2, few_label=5, repetition=1)
    other = fx.build("koniq10k", tmp_path / "k", tmp_path, split_index=2, few_label=5, repetition=2)
    assert few["train"].num_rows == 5 and set(few["train"]["image_name"]) < set(full["train"]["image_name"])
    assert few["test"]["image_name"] == full["test"]["image_name"]
    assert set(other["train"]["image_name"]) != set(few["train"]["image_name"])
    assert get_metadata(few)["split"]["few_label"] == 5
    with pytest.raises(ValueError, match="few_label"):
        fx.build("koniq10k", tmp_path / "k", tmp_path, few_label=0)


def test_split_file_round_trip_reproduces_exactly(tmp_path):
    fx.write_kadid(str(tmp_path / "kadid"))
    ds = fx.build("kadid10k", tmp_path / "kadid", tmp_path, split_index=4, few_label=7, repetition=3)
    path = write_split(ds, str(tmp_path / "splits" / "kadid_4.json"))
    splits, meta = read_split(path)
    assert splits == fx.split_names(ds)
    assert meta["dataset"] == "kadid10k" and meta["split"]["split_index"] == 4 and meta["format"]
    again = fx.build("kadid10k", tmp_path / "kadid", tmp_path, split_file=path)
    assert fx.split_names(again) == fx.split_names(ds)
    assert get_metadata(again)["split"]["split_scheme"] == "file"


def test_split_file_errors(tmp_path):
    fx.write_kadid(str(tmp_path / "kadid"))
    foreign = write_split({"train": ["nope.png"], "test": ["I01_01_01.png"]}, str(tmp_path / "foreign.json"))
    with pytest.raises(DatasetFormatError, match="not in the label files"):
        fx.build("kadid10k", tmp_path / "kadid", tmp_path, split_file=foreign)
    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps({"train": ["a.png"], "test": ["a.png"]}))
    with pytest.raises(DatasetFormatError, match="in both"):
        read_split(str(clash))
    broken = tmp_path / "broken.json"
    broken.write_text('{"train": [\n"a.png",\n')
    with pytest.raises(DatasetFormatError, match="broken.json, line"):
        read_split(str(broken))
    edited = tmp_path / "edited.json"  # hand-edited on Windows: byte-order mark and CRLF
    edited.write_bytes(b"\xef\xbb\xbf" + json.dumps({"train": ["a.png"], "test": ["b.png"]}, indent=1).encode().replace(b"\n", b"\r\n"))
    assert read_split(str(edited))[0] == {"train": ["a.png"], "test": ["b.png"]}


def test_assign_levels_rank_quintiles_and_ties():
    assert assign_levels(range(10)) == [lvl for lvl in ("bad", "poor", "fair", "good", "perfect") for _ in range(2)]
    assert assign_levels([3.0]) == ["fair"] and assign_levels([2.0] * 7) == ["fair"] * 7
    mos = [1, 2, 2, 2, 3, 4, 5, 6, 7, 8]
    levels = assign_levels(mos)
    assert len({levels[i] for i in (1, 2, 3)}) == 1  # ties share a level
    shuffled = [9, 0, 5, 3, 7, 1, 8, 2, 6, 4]
    assert [assign_levels([mos[i] for i in shuffled])[k] for k in np.argsort(shuffled)] == levels
    assert assign_levels(range(10), higher_is_better=False) == assign_levels(range(10))[::-1]
    assert assign_levels([0, 20, 39.9, 40, 100], method="width", mos_range=(0, 100)) == [
        "bad", "poor", "poor", "fair", "perfect"]
    assert assign_levels([0, 100], higher_is_better=False, method="width") == ["perfect", "bad"]
    with pytest.raises(ValueError):
        assign_levels([1, 2], method="median")


def test_level_binning_option_adds_text_levels(tmp_path):
    fx.write_koniq(str(tmp_path / "k"), n=20)
    ds = fx.build("koniq10k", tmp_path / "k", tmp_path, level_binning="rank")
    rows = [r for part in ds.values() for r in zip(part["mos"], part["text_level"])]
    expected = dict(zip([m for m, _ in rows], assign_levels([m for m, _ in rows])))
    assert all(level == expected[m] for m, level in rows)
    assert sorted(level for _, level in rows).count("perfect") == 4


def test_metadata_survives_save_and_reload_and_converts_scores(tmp_path):
    fx.write_live(str(tmp_path / "live"))
    ds = fx.build("live", tmp_path / "live", tmp_path)
    ds.save_to_disk(str(tmp_path / "saved"))
    meta = get_metadata(datasets.load_from_disk(str(tmp_path / "saved"))["test"])
    assert meta["mos_range"] == [0.0, 100.0] and meta["higher_is_better"] is False and meta["mos_kind"] == "DMOS"
    assert "lower is better" in ds["test"].info.description
    assert ds["test"].info.supervised_keys.output == "score"
    assert mos_convention("live") == {"mos_range": (0.0, 100.0), "higher_is_better": False}
    mos = np.array(ds["test"]["mos"])
    np.testing.assert_allclose(score_to_mos(np.array(ds["test"]["score"]), meta["mos_range"], False), mos)
    assert mos_to_score(25.0, (0, 100), False) == pytest.approx(0.75)


def test_options_and_label_changes_get_their_own_cache(tmp_path):
    fx.write_spaq(str(tmp_path / "spaq"))
    first = fx.build("spaq", tmp_path / "spaq", tmp_path, split_index=0)
    second = fx.build("spaq", tmp_path / "spaq", tmp_path, split_index=1)
    assert first["test"]["image_name"] != second["test"]["image_name"]
    assert first["test"].cache_files[0]["filename"] != second["test"].cache_files[0]["filename"]
    again = fx.build("spaq", tmp_path / "spaq", tmp_path, split_index=0)
    assert again["test"].cache_files[0]["filename"] == first["test"].cache_files[0]["filename"]
    fx.write_spaq(str(tmp_path / "spaq"), n=10)  # the label file changes: regenerate
    changed = fx.build("spaq", tmp_path / "spaq", tmp_path, split_index=0)
    assert sum(p.num_rows for p in changed.values()) == 10


def test_bad_options_are_rejected(tmp_path):
    fx.write_spaq(str(tmp_path / "spaq"))
    for options in ({"split_scheme": "bogus"}, {"split_index": -1}, {"train_fraction": 1.5},
                    {"level_binning": "median"}, {"mos_range": (5, 1)}):
        with pytest.raises(ValueError):
            fx.build("spaq", tmp_path / "spaq", tmp_path, **options)
    with pytest.raises(ValueError, match="has no official split"):
        fx.build("spaq", tmp_path / "spaq", tmp_path, split_scheme="official")
    with pytest.raises(ValueError, match="unknown dataset"):
        fx.build("nope", tmp_path / "spaq", tmp_path)
