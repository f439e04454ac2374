"""The GPU benchmark must run the day a GPU is lent: every part, smoke-run on the CPU with a tiny model."""

import json
import os
import sys

import pytest
import torch

from tests.helpers import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
import bench_gpu  # noqa: E402


def test_every_part_runs_and_reports(tmp_path):
    args = bench_gpu.parse_args([
        "--device", "cpu", "--tiny", "--images", "3", "--workers", "1", "--batch-size", "2", "--forward-batches", "1,2",
        "--seconds", "0.05", "--no-compile", "--policies", "resize+draft", "--workdir", str(tmp_path / "work"),
        "--out", str(tmp_path / "out"),
    ])
    figures = bench_gpu.main(args)
    assert [(f["dtype"], f["batch"]) for f in figures["forward"]] == [("bfloat16", 1), ("bfloat16", 2), ("float32", 2)]
    assert [(f["view_policy"], f["jpeg_draft"]) for f in figures["decode"]] == [("resize", True)]
    assert [(f["view_policy"], f["jpeg_draft"]) for f in figures["end_to_end"]] == [("resize", True)]
    assert all(f["views_per_s"] > 0 for f in figures["forward"]) and all(f["images_per_s"] > 0 for f in figures["end_to_end"])
    assert os.path.isfile(tmp_path / "work" / "scores.csv")
    assert json.loads((tmp_path / "out" / "gpu_figures.json").read_text())["model"] == "tiny"
    assert "two_gpus" not in figures  # part (d) is for GPUs only


def test_refuses_a_missing_gpu_and_unknown_policies(capsys):
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            bench_gpu.parse_args([])
        assert "--device cpu" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_gpu.parse_args(["--device", "cpu", "--policies", "center,sideways"])
    assert "sideways" in capsys.readouterr().err
