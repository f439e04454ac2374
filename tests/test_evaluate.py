import json
import os
import statistics
import sys

import pytest

from tests.helpers import launch_two_processes, save_tiny_uniqa, write_rated_folder
from train_scripts import evaluate as evaluation
from train_scripts.common import paper_results
from train_scripts.common.finetune import FinetuneConfig

# 30 images: random splits of 24 train / 6 test.
TRAINING_FLAGS = ["--num_train_epochs", "1", "--bank_crops", "1", "--learning_rate", "1e-2"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("evaluate")
    write_rated_folder(str(root / "data"), n=30, seed=3)
    model_dir = save_tiny_uniqa(str(root / "model"), tiny_tokenizer, mos_range=[1, 10])
    return {"root": root, "model": model_dir, "data": str(root / "data"), "cache": str(root / "cache")}


def _run(workspace, output, protocol, *extra, model=None):
    args = evaluation.parse_args([
        "--model", model or workspace["model"], "--dataset", "folder_csv", "--data_dir", workspace["data"], "--protocol", protocol,
        "--output_dir", str(output), "--cache_dir", workspace["cache"], "--dataset_option", "split_scheme=random",
        "--dataset_option", "mos_range=[1,10]", *extra,
    ])
    results = evaluation.main(args)
    with open(os.path.join(output, "results.json")) as handle:
        written = json.load(handle)
    assert written["srcc"] == pytest.approx(results["srcc"]) and written["plcc"] == pytest.approx(results["plcc"])
    assert list(written)[:2] == ["srcc", "plcc"]  # the headline figure first
    with open(os.path.join(output, "results.md")) as handle:
        markdown = handle.read()
    assert os.path.isfile(os.path.join(output, "scatter.png"))
    return written, markdown


def _split(run_dir):
    with open(os.path.join(run_dir, "split.json")) as handle:
        split = json.load(handle)
    return set(split["train"]), set(split["test"])


def test_splits_runner_trains_once_per_disjoint_split_and_resumes(workspace, tmp_path):
    results, markdown = _run(workspace, tmp_path, "splits", "--num_splits", "3", "--paper_key", "koniq10k", *TRAINING_FLAGS)
    assert [row["split_index"] for row in results["runs"]] == [0, 1, 2]
    assert sorted(os.listdir(tmp_path / "runs")) == ["split_0", "split_1", "split_2"]
    tests = []
    for k in range(3):
        train, test = _split(tmp_path / "runs" / f"split_{k}")
        assert len(train) == 24 and len(test) == 6 and not train & test
        tests.append(test)
    assert len({frozenset(test) for test in tests}) == 3  # three different splits
    srccs = [row["srcc"] for row in results["runs"]]
    assert results["srcc"] == pytest.approx(statistics.median(srccs))
    assert results["summary"]["srcc"]["mean"] == pytest.approx(statistics.fmean(srccs))
    assert "| UniQA, paper (adapter) | 0.933 | 0.941 |" in markdown and "ours (median of 3 splits)" in markdown
    assert not [name for name in os.listdir(tmp_path / "runs" / "split_0") if name.startswith("checkpoint-")]
    assert not os.path.exists(tmp_path / "runs" / "split_0.checkpoints")  # a finished run's checkpoints are removed

    # A second call reuses the finished runs (an interrupted evaluation resumes).
    os.remove(tmp_path / "runs" / "split_2" / "eval_results.json")
    again, _ = _run(workspace, tmp_path, "splits", "--num_splits", "3", *TRAINING_FLAGS)
    assert [row["srcc"] for row in again["runs"]][:2] == srccs[:2]


def test_splits_runner_under_two_processes_changes_its_run_folders_from_the_main_process(workspace, tmp_path):
    """Every process runs the protocol; only the main one may clear, write and prune a run
    folder (two would delete each other's fresh split files and checkpoints)."""
    output = tmp_path / "two"
    result = launch_two_processes([
        "train_scripts/evaluate.py", "--model", workspace["model"], "--dataset", "folder_csv", "--data_dir", workspace["data"],
        "--protocol", "splits", "--num_splits", "2", "--output_dir", str(output), "--cache_dir", str(tmp_path / "cache"),
        "--dataset_option", "split_scheme=random", "--dataset_option", "mos_range=[1,10]", *TRAINING_FLAGS,
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no checkpoint to resume" not in result.stderr  # a fresh run: no process found another's half-made folder
    for split in ("split_0", "split_1"):
        run_dir = output / "runs" / split
        assert (run_dir / "predictions.json").is_file() and (run_dir / "split.json").is_file()
        assert not [name for name in os.listdir(run_dir) if name.startswith("checkpoint-")]
        assert not os.path.exists(output / "runs" / f"{split}.checkpoints")
    assert len(json.loads((output / "results.json").read_text())["runs"]) == 2


def test_few_label_runner_draws_nested_subsets_with_one_test_set(workspace, tmp_path):
    results, markdown = _run(workspace, tmp_path, "few_label", "--few_label_sizes", "4,8", "--repetitions", "2", "--paper_key", "clive", *TRAINING_FLAGS)
    expected = [(4, 0, 4), (4, 1, 4), (8, 0, 8), (8, 1, 8)]
    assert [(row["few_label"], row["repetition"], row["num_train"]) for row in results["runs"]] == expected * 2
    for label in ("single", "ensemble"):
        splits = {name: _split(tmp_path / "runs" / label / name) for name in ("few4_rep0", "few4_rep1", "few8_rep0", "few8_rep1")}
        assert len({frozenset(test) for _, test in splits.values()}) == 1  # the same test set throughout
        assert all(not train & test for train, test in splits.values())
        assert splits["few4_rep0"][0] != splits["few4_rep1"][0]  # repetitions draw different images
        assert splits["few4_rep0"][0] < splits["few8_rep0"][0]  # nested sizes
    # Issue 24 item 1: both of Table IX's configurations run, the headline is the ensemble's (Ours*).
    assert {label: row["prompt_groups"] for label, row in results["rows"].items()} == {"single": "default", "ensemble": "natural"}
    assert results["srcc"] == pytest.approx(results["rows"]["ensemble"]["by_size"]["4"]["srcc"]["median"])
    assert "prompt ensemble" in results["headline"]
    groups = {label: json.loads((tmp_path / "runs" / label / "few4_rep0" / "config.json").read_text())["prompt_group_names"] for label in ("single", "ensemble")}
    assert groups == {"single": ["default"], "ensemble": ["default", "sharpness", "noise", "quality"]}
    assert "| 50 |" not in markdown and "| single (default) | Ours | 4 | — |" in markdown and "| ensemble (natural) | Ours* | 4 | — |" in markdown


def test_few_label_report_puts_each_configuration_beside_its_paper_row():
    summary = evaluation.summarise([{"srcc": 0.5, "plcc": 0.6}])
    rows = {label: {"prompt_groups": groups, "by_size": {"50": summary}} for label, groups in (("single", "default"), ("ensemble", "natural"))}
    markdown = evaluation.markdown_table("few_label", "koniq10k", {"rows": rows, "headline": "h", "split_description": "random split 0",
                                                                   "selection": "best test SRCC over evaluations every 5 steps"})
    assert "Split: random split 0." in markdown and "Model selection: best test SRCC over evaluations every 5 steps." in markdown  # items 3, 6
    single, ensemble = paper_results.FEW_LABEL_SINGLE_SRCC["koniq10k"][50], paper_results.FEW_LABEL_SRCC["koniq10k"][50]
    assert f"| single (default) | Ours | 50 | {single:.3f} | 0.500 | 0.600 |" in markdown
    assert f"| ensemble (natural) | Ours* | 50 | {ensemble:.3f} | 0.500 | 0.600 |" in markdown


def test_single_cross_and_zero_shot(workspace, tmp_path):
    trained = tmp_path / "trained"
    _run(workspace, trained, "splits", "--num_splits", "1", "--keep_run_models", *TRAINING_FLAGS)
    model_dir = str(trained / "runs" / "split_0")
    with open(os.path.join(model_dir, "eval_results.json")) as handle:
        training = json.load(handle)
    single, _ = _run(workspace, tmp_path / "single", "single", model=model_dir)
    # The model's forward over the processor's views reproduces the training run's evaluation.
    assert single["srcc"] == pytest.approx(training["srcc"], abs=1e-6) and single["plcc"] == pytest.approx(training["plcc"], abs=1e-5)
    cross, markdown = _run(workspace, tmp_path / "cross", "cross", "--logistic", model=model_dir)
    assert cross["num_images"] == 30 and cross["trained_on"] == "folder_csv" and "plcc_logistic" in cross
    zero, markdown = _run(workspace, tmp_path / "zero", "zero_shot", "--paper_key", "koniq10k")
    assert zero["single_prompt"]["prompt_groups"] == ["default"]
    assert zero["ensemble"]["prompt_groups"] == ["default", "sharpness", "noise", "quality"]
    # Issue 23: the headline is what the model scores with (its own prompts), the others beside it.
    assert zero["headline"] == "model_prompts" and zero["srcc"] == zero["model_prompts"]["srcc"]
    assert zero["model_prompts"]["prompt_groups"] == evaluation.load_model(workspace["model"]).model.config.prompt_group_names
    assert "the model's own (" in markdown
    assert f"| {paper_results.ZERO_SHOT_SRCC['koniq10k'][1]:.3f} |" in markdown


@pytest.mark.filterwarnings("ignore::scipy.optimize.OptimizeWarning")  # a logistic fit on 6 points
def test_protocol_functions_take_explicit_parameters(workspace, tmp_path):
    """The library path, no argparse namespace: train one split, then score the trained run."""
    dataset = evaluation.DatasetSpec("folder_csv", workspace["data"], {"split_scheme": "random", "mos_range": [1, 10]}, workspace["cache"])
    config = FinetuneConfig(num_train_epochs=1, bank_crops=1, learning_rate=1e-2)
    trained = evaluation.protocol_splits(workspace["model"], dataset, config, str(tmp_path), num_splits=1, keep_run_models=True)
    assert config.resume_from_checkpoint is None  # the caller's config is not changed by the run
    assert trained["mode"] == "adapter" and [row["split_index"] for row in trained["runs"]] == [0]
    scoring = evaluation.ScoringOptions(eval_batch_size=20, logistic=True)
    single = evaluation.protocol_single(str(tmp_path / "runs" / "split_0"), dataset, scoring, split="test", split_index=0)
    assert single["srcc"] == pytest.approx(trained["srcc"], abs=1e-6) and single["num_images"] == 6 and "plcc_logistic" in single
    with pytest.raises(ValueError, match="--split validation: folder_csv has the splits"):
        evaluation.protocol_single(str(tmp_path / "runs" / "split_0"), dataset, scoring, split="validation")


def test_summaries_leave_out_runs_with_undefined_correlations(caplog):
    """NaN (constant predictions) sorted among numbers would make the median any of them."""
    rows = [{"srcc": value, "plcc": value} for value in (0.5, float("nan"), 0.9, 0.7)]
    summary = evaluation.summarise(rows)
    assert summary["srcc"]["median"] == 0.7 and summary["srcc"]["undefined_runs"] == 1
    assert summary["plcc"]["mean"] == pytest.approx(0.7) and "1 of 4 runs have an undefined SRCC" in caplog.text
    assert evaluation._median_run(rows)["srcc"] == 0.7
    nothing = evaluation.summarise([{"srcc": float("nan"), "plcc": float("nan")}])["srcc"]
    assert all(value != value for value in (nothing["median"], nothing["mean"], nothing["std"]))  # NaN, not a number made up


def test_scatter_plot_degrades_without_matplotlib(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert evaluation.scatter_plot([1, 2], [1, 2], "t", str(tmp_path / "s.png")) is None
    assert "pip install '.[viz]'" in caplog.text and not os.path.exists(tmp_path / "s.png")
