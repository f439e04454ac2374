"""User errors of the training and evaluation scripts (issue #23, finding 8): one line naming the
file (or row), exit 2, never a traceback; unreadable images skipped and counted up to a limit;
the output folder checked before training."""

import csv
import json
import logging
import os
import re
import shutil

import pytest

from tests.helpers import save_tiny_uniqa, write_rated_folder
from tests.test_train_pretrain import make_clip_dir
from train_scripts import evaluate, train_adapter, train_pretrain
from train_scripts.common import checkpointing
from train_scripts.common.errors import DataError
from train_scripts.common.finetune import FinetuneConfig, finetune, load_splits
from train_scripts.common.script import TRAINING_ERRORS, run_script
from train_scripts.evaluate import ScoringOptions, evaluate_model, load_full

OPTIONS = {"split_scheme": "random", "mos_range": [1, 10]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("user_errors")
    write_rated_folder(str(root / "data"), n=32)
    return {"root": root, "data": str(root / "data"), "model": save_tiny_uniqa(str(root / "model"), tiny_tokenizer, mos_range=[1, 10]),
            "clip": make_clip_dir(root / "clip")}


def damaged_copy(workspace, tmp_path, names: dict) -> str:
    """A copy of the dataset with some images replaced: {name: bytes}."""
    data = str(tmp_path / "data")
    shutil.copytree(workspace["data"], data)
    for name, payload in names.items():
        with open(os.path.join(data, "images", name), "wb") as handle:
            handle.write(payload)
    return data


def truncated_png(workspace, name="im001.png") -> bytes:
    with open(os.path.join(workspace["data"], "images", name), "rb") as handle:
        return handle.read()[:200]


def one_line_exit_2(main, parse_args, argv, caplog) -> str:
    """Run a script's `__main__` path in-process: exit code 2 and one logged line, returned."""
    caplog.clear()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        run_script(main, lambda: parse_args(argv), TRAINING_ERRORS)
    assert exit_info.value.code == 2
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    return errors[0].getMessage()


def test_a_refusal_before_the_script_sets_up_logging_still_has_the_log_prefix(monkeypatch, capsys):
    """An output in use is refused before a script configures logging: the one line still carries
    the time, level and logger, like every other line the script writes."""
    from modeling_uniqa.errors import OutputError

    def refused(args):
        raise OutputError("/data/out: in use by another run")

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as in a fresh process (pytest's capture handlers set aside)
    with pytest.raises(SystemExit) as exit_info:
        run_script(refused, lambda: None, TRAINING_ERRORS)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR tests\.test_training_user_errors: /data/out: in use by another run", lines[0]), lines


# ------------------------------------------------------------------------------------------------
# Unreadable images: skipped and counted, up to --max_bad_fraction
# ------------------------------------------------------------------------------------------------
def test_fine_tuning_skips_and_counts_unreadable_images_up_to_the_limit(workspace, tmp_path):
    data = damaged_copy(workspace, tmp_path, {"im000.png": b"", "im001.png": truncated_png(workspace), "im002.png": b"not an image"})
    splits = load_splits("folder_csv", data, cache_dir=str(tmp_path / "cache"), options=OPTIONS)
    config = FinetuneConfig(num_train_epochs=1, bank_crops=1, checkpoints_total_limit=1, max_bad_fraction=0.2)
    results = finetune(workspace["model"], splits, str(tmp_path / "out"), config)
    skipped = results["skipped_images"]
    assert skipped["count"] == 3 and results["num_train"] + results["num_test"] == 29
    assert {os.path.basename(item["image"]) for item in skipped["images"]} == {"im000.png", "im001.png", "im002.png"}
    with open(tmp_path / "out" / "eval_results.json") as handle:
        assert json.load(handle)["skipped_images"]["count"] == 3

    with pytest.raises(DataError, match=r"of the \d+ images of the (train|test) split cannot be read \(.*im00\d\.png.*--max_bad_fraction 0\.01"):
        finetune(workspace["model"], splits, str(tmp_path / "out2"), FinetuneConfig(num_train_epochs=1, bank_crops=1))
    assert not os.path.exists(tmp_path / "out2" / "config.json")


def test_evaluation_skips_and_counts_unreadable_images(workspace, tmp_path):
    data = damaged_copy(workspace, tmp_path, {"im003.png": b""})
    full, metadata = load_full("folder_csv", data, str(tmp_path / "cache"), {"mos_range": [1, 10]})
    result = evaluate_model(workspace["model"], full, metadata, ScoringOptions(max_bad_fraction=0.05))
    assert result["num_images"] == 31 and result["skipped_images"]["count"] == 1
    with pytest.raises(DataError, match="im003.png"):
        evaluate_model(workspace["model"], full, metadata, ScoringOptions())


# ------------------------------------------------------------------------------------------------
# One line, exit 2
# ------------------------------------------------------------------------------------------------
def _adapter_argv(workspace, tmp_path, *extra, model=None, data=None, dataset="folder_csv"):
    return ["--model", model or workspace["model"], "--dataset", dataset, "--data_dir", data or workspace["data"],
            "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), "--num_train_epochs", "1",
            "--bank_crops", "1", "--dataset_option", "split_scheme=random", "--dataset_option", "mos_range=[1,10]", *extra]


def test_unknown_dataset_and_label_errors_are_one_line(workspace, tmp_path, caplog):
    message = one_line_exit_2(train_adapter.main, train_adapter.parse_args, _adapter_argv(workspace, tmp_path, dataset="kadid"), caplog)
    assert "unknown dataset 'kadid'" in message
    data = str(tmp_path / "labels")
    shutil.copytree(workspace["data"], data)
    with open(os.path.join(data, "labels.csv"), newline="") as handle:
        rows = list(csv.reader(handle))
    rows[5][1] = "nan"
    with open(os.path.join(data, "labels.csv"), "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    message = one_line_exit_2(train_adapter.main, train_adapter.parse_args, _adapter_argv(workspace, tmp_path, data=data), caplog)
    assert "labels.csv, line 6" in message
    message = one_line_exit_2(evaluate.main, evaluate.parse_args, ["--model", workspace["model"], "--dataset", "folder_csv", "--data_dir", data,
                                                                  "--output_dir", str(tmp_path / "eval"), "--cache_dir", str(tmp_path / "cache"),
                                                                  "--dataset_option", "mos_range=[1,10]", "--protocol", "cross"], caplog)
    assert "labels.csv, line 6" in message


@pytest.mark.parametrize("which", ["data folder", "CLIP folder"])
def test_a_model_that_is_not_a_uniqa_model_is_named(workspace, tmp_path, caplog, which):
    model = workspace["data"] if which == "data folder" else workspace["clip"]
    message = one_line_exit_2(train_adapter.main, train_adapter.parse_args, _adapter_argv(workspace, tmp_path, model=model), caplog)
    assert model in message and ("missing" in message if which == "data folder" else "not a UniQA model" in message)
    message = one_line_exit_2(evaluate.main, evaluate.parse_args, ["--model", model, "--dataset", "folder_csv", "--data_dir", workspace["data"],
                                                                  "--output_dir", str(tmp_path / "eval"), "--cache_dir", str(tmp_path / "cache"),
                                                                  "--dataset_option", "mos_range=[1,10]", "--protocol", "cross"], caplog)
    assert model in message


def test_pretraining_user_errors_are_one_line(workspace, tmp_path, caplog):
    corpus = str(tmp_path / "corpus")
    from tests.test_pretrain_data import write_caption_corpus

    write_caption_corpus(tmp_path / "corpus", num_images=5)
    base = ["--output_dir", str(tmp_path / "pre"), "--cache_dir", str(tmp_path / "cache"), "--dataloader_num_workers", "0"]
    message = one_line_exit_2(train_pretrain.main, train_pretrain.parse_args,
                              ["--init", workspace["data"], "--corpus", f"caption_jsonl={corpus}", *base], caplog)
    assert f"--init {workspace['data']}: not a CLIP or UniQA model" in message
    message = one_line_exit_2(train_pretrain.main, train_pretrain.parse_args,
                              ["--init", workspace["clip"], "--corpus", f"captions={corpus}", *base], caplog)
    assert "unknown dataset 'captions'" in message
    message = one_line_exit_2(train_pretrain.main, train_pretrain.parse_args,
                              ["--init", workspace["clip"], "--corpus", f"caption_jsonl={corpus}", *base], caplog)
    assert "5 images are fewer than one global batch of 960" in message


def test_an_unwritable_or_full_output_is_refused_before_training(workspace, tmp_path, caplog, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = _adapter_argv(workspace, tmp_path)
    argv[argv.index("--output_dir") + 1] = str(blocker / "out")
    message = one_line_exit_2(train_adapter.main, train_adapter.parse_args, argv, caplog)
    assert str(blocker) in message

    monkeypatch.setattr(checkpointing.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    message = one_line_exit_2(train_adapter.main, train_adapter.parse_args, _adapter_argv(workspace, tmp_path), caplog)
    assert "MiB free on its disk" in message and not os.path.exists(tmp_path / "out" / "config.json")


def test_pretraining_workers_default_to_the_cores_there_are(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert train_pretrain.default_num_workers() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert train_pretrain.default_num_workers() == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert train_pretrain.default_num_workers() == 4


def test_pretraining_skips_and_counts_unreadable_corpus_images(workspace, tmp_path, caplog):
    """Zero-byte, non-image, cut PNG, decompression bomb and 20000x20 strip: found from their
    headers and skipped before training; a truncated JPEG (its header is fine) is stood in for in
    training. All counted in the log; beyond --max_bad_fraction, one line and exit 2."""
    import io

    from PIL import Image

    from tests.test_bad_images import bomb_png
    from tests.test_pretrain_data import write_caption_corpus

    folder = write_caption_corpus(tmp_path / "corpus", num_images=20)
    png = io.BytesIO()
    Image.new("RGB", (40, 48), (9, 9, 9)).save(png, "PNG")
    strip = io.BytesIO()
    Image.new("RGB", (20000, 20), (9, 9, 9)).save(strip, "JPEG")
    jpeg = (folder / "img_5.jpg").read_bytes()
    damaged = {"img_0.jpg": b"", "img_1.jpg": b"not an image", "img_2.jpg": png.getvalue()[:-30], "img_3.jpg": bomb_png(),
               "img_4.jpg": strip.getvalue(), "img_5.jpg": jpeg[: len(jpeg) // 2]}
    for name, payload in damaged.items():
        (folder / name).write_bytes(payload)
    output = tmp_path / "pre"
    base = ["--init", workspace["clip"], "--corpus", f"caption_jsonl={folder}", "--cache_dir", str(tmp_path / "cache"),
            "--dataloader_num_workers", "0", "--report_to", "none", "--per_device_train_batch_size", "5", "--max_steps", "3"]
    train_pretrain.main(train_pretrain.parse_args([*base, "--output_dir", str(output), "--max_bad_fraction", "0.5"]))
    with open(output / train_pretrain.LOG_FILE) as handle:
        records = [json.loads(line) for line in handle]
    (summary,) = [record["skipped_images"] for record in records if "skipped_images" in record]
    assert summary["count"] == 6 and summary["corpus"] == 5 and summary["training"] == 1
    assert {item["image"].rsplit("/", 1)[-1] for item in summary["images"]} == set(damaged)
    assert os.path.isfile(output / "config.json")

    message = one_line_exit_2(train_pretrain.main, train_pretrain.parse_args, [*base, "--output_dir", str(tmp_path / "pre2")], caplog)
    assert "5 of the 20 images of the corpus split cannot be read" in message and "--max_bad_fraction 0.01" in message
    assert "img_0.jpg" in message and not os.path.exists(tmp_path / "pre2" / "config.json")

    # What only training finds (truncated JPEGs) counts against the limit too: one line, exit 2.
    for name in damaged:
        (folder / name).write_bytes(jpeg[: len(jpeg) // 2])
    message = one_line_exit_2(train_pretrain.main, train_pretrain.parse_args,
                              [*base, "--output_dir", str(tmp_path / "pre3"), "--max_bad_fraction", "0.1"], caplog)
    assert "found in training" in message and "--max_bad_fraction 0.1" in message


def test_fine_tuning_whose_checkpoint_cannot_be_written_stops_with_one_line_and_resumes(workspace, tmp_path, caplog, monkeypatch):
    """`train_adapter.py` (the shared `save_checkpoint`): a full disk at the second epoch's
    checkpoint is one line naming it, exit 2, no `.partial` left; the first epoch's checkpoint
    is kept and `--resume_from_checkpoint latest` finishes the run from it."""
    import errno

    import torch

    argv = _adapter_argv(workspace, tmp_path, "--checkpoints_total_limit", "2")
    argv[argv.index("--num_train_epochs") + 1] = "2"
    real_save, folders = torch.save, []

    def full_disk_at_the_second_checkpoint(obj, path, *args, **kwargs):
        if os.path.dirname(path) not in folders:
            folders.append(os.path.dirname(path))
        if len(folders) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_at_the_second_checkpoint)
    message = one_line_exit_2(train_adapter.main, train_adapter.parse_args, argv, caplog)
    monkeypatch.undo()
    (kept,) = checkpointing.list_checkpoints(str(tmp_path / "out"))
    failed = folders[1].removesuffix(".partial")
    assert message.startswith(f"{failed}: cannot write the checkpoint (") and os.strerror(errno.ENOSPC) in message
    assert f"resumes from {kept}" in message
    assert os.listdir(checkpointing.checkpoint_folder(str(tmp_path / "out"))) == [os.path.basename(kept)]
    assert not os.path.exists(tmp_path / "out" / "config.json")

    results = train_adapter.main(train_adapter.parse_args([*argv, "--resume_from_checkpoint", "latest"]))
    assert results["num_train"] > 0 and os.path.isfile(tmp_path / "out" / "config.json")


@pytest.mark.parametrize("count", [1, 2])
def test_a_dataset_too_small_to_split_or_correlate_is_one_line(workspace, tmp_path, caplog, count):
    """Issue 23, finding 8: a 1-image (or 2-image) dataset: fine-tuning cannot split it, evaluation
    cannot correlate it: one line naming the data, exit 2, before any model is trained or run."""
    data = str(tmp_path / "tiny")
    write_rated_folder(data, n=count)
    message = one_line_exit_2(train_adapter.main, train_adapter.parse_args, _adapter_argv(workspace, tmp_path, data=data), caplog)
    assert f"folder_csv at {data}: fine-tuning needs train and test splits" in message and f"too few images to split, {count}" in message
    message = one_line_exit_2(evaluate.main, evaluate.parse_args, ["--model", workspace["model"], "--dataset", "folder_csv", "--data_dir", data,
                                                                  "--output_dir", str(tmp_path / "eval"), "--cache_dir", str(tmp_path / "cache"),
                                                                  "--dataset_option", "mos_range=[1,10]", "--protocol", "cross"], caplog)
    assert os.path.join(data, "labels.csv") in message and f"{count} readable image(s) to evaluate" in message
