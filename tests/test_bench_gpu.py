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


def test_a_failing_part_is_recorded_and_the_others_still_run_and_are_written(tmp_path, monkeypatch):
    """Device time is scarce: one broken part (or forward variant) must not cost the others'
    figures, and the figures on disk must be current after every part."""
    out = tmp_path / "out"

    def broken_decode(*_args):
        raise RuntimeError("decoder exploded")

    def failing_compile(model_dir, dtype, device, compile=False):
        if compile:
            raise RuntimeError("no compiler here")
        return real_load_scorer(model_dir, dtype, device)

    def forward_after_decode(*args):
        written = json.loads((out / "gpu_figures.json").read_text())  # part (b) ran first and was written
        assert "decoder exploded" in written["failed"]["decode"]
        return real_part_forward(*args)

    real_load_scorer, real_part_forward = bench_gpu.load_scorer, bench_gpu.part_forward
    monkeypatch.setattr(bench_gpu, "part_decode", broken_decode)
    monkeypatch.setattr(bench_gpu, "load_scorer", failing_compile)
    monkeypatch.setattr(bench_gpu, "part_forward", forward_after_decode)
    args = bench_gpu.parse_args([
        "--device", "cpu", "--tiny", "--images", "1", "--workers", "1", "--forward-batches", "1", "--seconds", "0.01",
        "--dtype", "float32", "--compile-batch", "1", "--parts", "ba", "--workdir", str(tmp_path / "work"), "--out", str(out),
    ])
    figures = bench_gpu.main(args)
    assert [("error" in f, f["compiled"]) for f in figures["forward"]] == [(False, False), (True, True)]
    assert "no compiler here" in figures["forward"][1]["error"]
    assert json.loads((out / "gpu_figures.json").read_text())["forward"][0]["views_per_s"] > 0
    assert list(figures["failed"]) == ["decode"]


def test_refuses_unknown_parts(capsys):
    with pytest.raises(SystemExit):
        bench_gpu.parse_args(["--device", "cpu", "--parts", "az"])
    assert "--parts" in capsys.readouterr().err
