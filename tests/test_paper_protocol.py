"""Issue 24: the paper's protocol by default (splits, BAID's training parts, selection on the test
split at the release's cadence)."""

import json
import os

import pytest

from tests.data_fixtures import write_baid, write_koniq
from tests.helpers import save_tiny_uniqa
from train_scripts import train_adapter
from train_scripts.common.finetune import describe_split, load_splits


@pytest.fixture(scope="module")
def koniq(tmp_path_factory):
    root = tmp_path_factory.mktemp("koniq")
    info = write_koniq(str(root / "data"), n=20)  # official sets: 12 train / 3 validation / 5 test
    return {"data": str(root / "data"), "cache": str(root / "cache"), "names": info["names"], "sets": info["sets"]}


def test_koniq_splits_default_to_the_papers_random_80_20_of_all_images(koniq):
    """Item 3: without options KonIQ-10k is split 80/20 at random, its official sets only on request."""
    splits = load_splits("koniq10k", koniq["data"], cache_dir=koniq["cache"])
    assert len(splits.train) == 16 and len(splits.test) == 4 and splits.validation is None
    assert set(splits.train["image_name"]) | set(splits.test["image_name"]) == set(koniq["names"])
    assert splits.metadata["split"]["split_scheme"] == "random" and splits.metadata["train_parts"] == ["train"]
    assert describe_split(splits.metadata["split"]) == "random 80%/20% split 0 (seed 123) of all images"
    official = load_splits("koniq10k", koniq["data"], cache_dir=koniq["cache"], options={"split_scheme": "official"})
    assert sorted(official.test["image_name"]) == sorted(name for name, part in koniq["sets"].items() if part == "test")
    assert len(official.train) == 12 and len(official.validation) == 3
    assert describe_split(official.metadata["split"]) == "the official split"


def test_baid_trains_on_train_and_validation_by_default(tmp_path):
    """Item 4: BAID's training part is train + validation (the paper's 53,937 images); the old
    behaviour (train alone, validation for selection) on request."""
    names = write_baid(str(tmp_path / "baid"))
    splits = load_splits("baid", str(tmp_path / "baid"), cache_dir=str(tmp_path / "cache"))
    assert sorted(splits.train["image_name"]) == sorted(names["train"] + names["validation"]) and splits.validation is None
    assert sorted(splits.test["image_name"]) == sorted(names["test"])
    assert splits.metadata["split"]["split_scheme"] == "official" and splits.metadata["train_parts"] == ["train", "validation"]
    assert describe_split(splits.metadata["split"], splits.metadata["train_parts"]) == "the official split, trained on train + validation"
    alone = load_splits("baid", str(tmp_path / "baid"), cache_dir=str(tmp_path / "cache"), train_on_validation=False)
    assert sorted(alone.train["image_name"]) == sorted(names["train"]) and sorted(alone.validation["image_name"]) == sorted(names["validation"])


def _adapter_args(model, data, output, cache, *extra):
    return train_adapter.parse_args([
        "--model", model, "--dataset", "koniq10k", "--data_dir", data, "--output_dir", output, "--cache_dir", cache,
        "--num_train_epochs", "1", "--bank_crops", "1", *extra,
    ])


def test_train_adapter_koniq_run_without_options_trains_on_a_random_80_percent(koniq, tmp_path, tiny_tokenizer):
    """Item 3's command line: no options, a random 80% of all images; --split_scheme official
    for the official sets; the results say which."""
    model = save_tiny_uniqa(str(tmp_path / "model"), tiny_tokenizer)
    results = train_adapter.main(_adapter_args(model, koniq["data"], str(tmp_path / "paper"), koniq["cache"]))
    assert results["num_train"] == 16 and results["num_test"] == 4 and results["split"]["split_scheme"] == "random"
    written = json.loads((tmp_path / "paper" / "eval_results.json").read_text())
    assert written["split_description"].startswith("random 80%/20% split 0")
    assert "random 80%/20% split 0" in (tmp_path / "paper" / "README.md").read_text()
    official = train_adapter.main(_adapter_args(model, koniq["data"], str(tmp_path / "official"), koniq["cache"], "--split_scheme", "official"))
    assert official["num_train"] == 12 and official["num_test"] == 5 and official["split_description"] == "the official split"
    assert official["selection"].startswith("best epoch on a validation part (the official validation split)")
    with pytest.raises(SystemExit):  # two different answers to one question
        _adapter_args(model, koniq["data"], "o", "c", "--split_scheme", "official", "--dataset_option", "split_scheme=random")
    assert _adapter_args(model, koniq["data"], "o", "c", "--no_train_on_validation").train_on_validation is False
    assert os.path.isdir(tmp_path / "official")


def test_select_on_test_follows_the_releases_cadence_when_asked(tmp_path, tiny_tokenizer):
    """Item 6: `selection_steps` evaluates every N steps (the release's val_freq) and keeps the
    best test SRCC; the results name the rule. The default stays the last epoch."""
    from tests.helpers import write_rated_folder
    from train_scripts.common.finetune import FinetuneConfig, finetune

    write_rated_folder(str(tmp_path / "data"), n=32)
    model = save_tiny_uniqa(str(tmp_path / "model"), tiny_tokenizer)
    splits = load_splits("folder_csv", str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), options={"mos_range": [1, 10]})
    assert splits.metadata["split"]["split_scheme"] == "random"
    config = FinetuneConfig(num_train_epochs=2, learning_rate=1e-2, bank_crops=1, select_on_test=True, selection_steps=3)
    results = finetune(model, splits, str(tmp_path / "run"), config)
    steps_per_epoch = -(-len(splits.train) // 8)
    evaluations = [entry for epoch in results["epochs"] for entry in epoch.get("selection", [])]
    assert [entry["step"] for entry in evaluations] == list(range(3, 2 * steps_per_epoch + 1, 3))
    best = max(evaluations, key=lambda entry: entry["srcc"])
    assert results["selected_step"] == best["step"] and abs(results["srcc"]) == pytest.approx(best["srcc"], abs=1e-6)
    assert results["selection"] == "best test SRCC over evaluations every 3 steps (optimistic: the release's rule and cadence)"
    with pytest.raises(ValueError, match="selection_steps"):
        FinetuneConfig(selection_steps=3)  # nothing to select on
    assert train_adapter.parse_args(["--model", "m", "--dataset", "d", "--data_dir", "d", "--output_dir", "o",
                                     "--select_on_test", "--selection_steps", "5"]).selection_steps == 5
