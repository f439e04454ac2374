import numpy as np
import pytest
import torch

from data_builders.iqa import REFERENCE_DISTORTION
from tests.data_fixtures import write_kadid
from tests.helpers import save_tiny_uniqa
from train_scripts import train_adapter
from train_scripts.common.errors import SettingsError
from train_scripts.common.finetune import FinetuneConfig, finetune, load_splits
from train_scripts.common.reference_ranking import RANK_TEMPERATURE, rank_pairs, reference_rank_loss, reference_rows


@pytest.fixture(scope="module")
def kadid(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("ranking")
    write_kadid(str(root / "kadid"), n_refs=6, n_dist=2, levels=3)
    return {"data": str(root / "kadid"), "cache": str(root / "cache"), "model": save_tiny_uniqa(str(root / "model"), tiny_tokenizer)}


def _splits(kadid, **options):
    return load_splits("kadid10k", kadid["data"], cache_dir=kadid["cache"], options={"split_scheme": "random", **options})


def test_each_distorted_row_points_at_its_own_reference_row(kadid):
    train = _splits(kadid, include_references=True).train
    rows = reference_rows(train).tolist()
    for row, target in enumerate(rows):
        if train[row]["distortion"] == REFERENCE_DISTORTION:
            assert target == -1
        else:
            assert train[target]["distortion"] == REFERENCE_DISTORTION and train[target]["reference"] == train[row]["reference"]
    assert rows.count(-1) == len(set(train["reference"])) > 0


def test_rows_without_their_references_are_refused_with_the_option_that_adds_them(kadid):
    with pytest.raises(ValueError, match="include_references=true"):
        reference_rows(_splits(kadid).train)


def test_pairs_keep_only_distorted_rows_below_their_reference():
    references = torch.tensor([-1, 0, 0, -1, 3])
    labels = torch.tensor([1.0, 0.5, 1.0, 0.9, 0.2])
    positions, paired = rank_pairs(torch.tensor([4, 2, 1, 0]), references, labels)
    assert positions.tolist() == [0, 2] and paired.tolist() == [3, 0]  # row 2 ties its reference: no order to learn


def test_the_loss_falls_as_references_rise_above_their_images_and_is_zero_without_pairs():
    distorted = torch.tensor([0.5, 0.5])
    tie, right, wrong = (reference_rank_loss(distorted, distorted + d) for d in (0.0, 0.1, -0.1))
    assert wrong > tie > right and tie.item() == pytest.approx(np.log(2))
    assert reference_rank_loss(distorted, distorted + RANK_TEMPERATURE).item() == pytest.approx(np.log1p(np.exp(-1)))
    empty = torch.zeros(0, requires_grad=True)
    loss = reference_rank_loss(empty, empty)
    loss.backward()
    assert loss.item() == 0.0


def test_the_ranking_term_trains_a_different_adapter(kadid, tmp_path):
    splits = _splits(kadid, include_references=True)
    settings = {"num_train_epochs": 3, "learning_rate": 1e-2, "bank_crops": 2, "per_device_train_batch_size": 16, "checkpoints_total_limit": None}
    plain = finetune(kadid["model"], splits, str(tmp_path / "plain"), FinetuneConfig(**settings))
    ranked = finetune(kadid["model"], splits, str(tmp_path / "ranked"), FinetuneConfig(reference_rank_weight=1.0, **settings))
    assert np.isfinite(ranked["predictions"]).all()
    assert not np.allclose(plain["predictions"], ranked["predictions"])


def test_bad_weights_and_data_without_references_are_user_errors(kadid, tmp_path, caplog):
    from tests.test_training_user_errors import one_line_exit_2

    with pytest.raises(SettingsError, match="reference_rank_weight"):
        FinetuneConfig(reference_rank_weight=-1.0)
    with pytest.raises(SettingsError, match="feature bank"):
        FinetuneConfig(reference_rank_weight=0.5, mode="full")
    line = one_line_exit_2(train_adapter.main, train_adapter.parse_args, [
        "--model", kadid["model"], "--dataset", "kadid10k", "--data_dir", kadid["data"], "--cache_dir", kadid["cache"],
        "--dataset_option", "split_scheme=random", "--reference_rank_weight", "0.5", "--num_train_epochs", "1",
        "--output_dir", str(tmp_path / "out"),
    ], caplog)
    assert "include_references=true" in line


def test_a_run_resumed_mid_epoch_with_the_ranking_term_gives_the_same_model(kadid, tmp_path):
    import os
    import shutil

    splits = _splits(kadid, include_references=True)
    settings = {"num_train_epochs": 2, "learning_rate": 1e-2, "bank_crops": 2, "per_device_train_batch_size": 8,
                "checkpoints_total_limit": None, "checkpointing_steps": 3, "reference_rank_weight": 1.0}
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    expected = finetune(kadid["model"], splits, straight, FinetuneConfig(**settings))
    assert 3 % -(-expected["num_train"] // 8)  # batches of 8: the checkpoint at step 3 is mid-epoch
    shutil.copytree(os.path.join(straight + ".checkpoints", "checkpoint-3"), os.path.join(resumed + ".checkpoints", "checkpoint-3"))
    got = finetune(kadid["model"], splits, resumed, FinetuneConfig(resume_from_checkpoint="latest", **settings))
    np.testing.assert_allclose(got["predictions"], expected["predictions"], atol=1e-6)


@pytest.mark.slow
def test_two_process_ddp_run_with_the_ranking_term(kadid, tmp_path):
    import json

    from tests.helpers import launch_two_processes

    output = tmp_path / "ddp"
    completed = launch_two_processes([
        "train_scripts/train_adapter.py", "--model", kadid["model"], "--dataset", "kadid10k", "--data_dir", kadid["data"],
        "--cache_dir", kadid["cache"], "--dataset_option", "split_scheme=random", "--dataset_option", "include_references=true",
        "--reference_rank_weight", "0.5", "--num_train_epochs", "2", "--bank_crops", "1", "--per_device_train_batch_size", "4",
        "--output_dir", output,
    ])
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(output / "eval_results.json") as handle:
        results = json.load(handle)
    assert len(results["epochs"]) == 2 and all(np.isfinite(epoch["train_loss"]) for epoch in results["epochs"])
