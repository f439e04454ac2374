"""train_scripts/train_pretrain.py end to end on CPU: a tiny CLIP with the real CLIP BPE
tokenizer, generated images and a caption_jsonl corpus.

One uninterrupted single-process run is the reference. A two-process run killed from outside
(SIGKILL) once its checkpoint at step 4 (mid-epoch) is complete, then resumed with
`--resume_from_checkpoint latest`, must log the same batches and the same loss curve.
"""

import csv
import errno
import json
import math
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from accelerate.utils import is_tensorboard_available
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModel, CLIPConfig, CLIPModel, pipeline

import modeling_uniqa  # noqa: F401  (registers AutoModel and the image-quality task)
from modeling_uniqa import UniQAModel
from modeling_uniqa.clip_tokenizer import build_clip_tokenizer
from tests.helpers import (
    REPO_ROOT,
    file_size_limit,
    kill_process_tree,
    launch_two_processes,
    random_rgb,
    start_two_processes,
    tiny_clip_config,
)
from tests.test_pretrain_data import write_caption_corpus
from train_scripts.common.checkpointing import ResumeError
from train_scripts.common.numerics import DivergenceError
from train_scripts.train_pretrain import LOG_FILE, JsonlLog, load_init, load_tokenizer, main, parse_args

SCRIPT = os.path.join(REPO_ROOT, "train_scripts", "train_pretrain.py")


def make_clip_dir(folder) -> str:
    """A tiny random CLIP (32x32 images, 2-layer towers) with OpenAI's 49,408-token BPE."""
    config = tiny_clip_config(vocab_size=49408)
    config["text_config"].update(bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(**config)).save_pretrained(folder)
    build_clip_tokenizer(model_max_length=32).save_pretrained(folder)
    return str(folder)


def make_rating_dir(folder, count=8) -> str:
    """A folder_csv rating dataset whose MOS follows image brightness."""
    (folder / "images").mkdir(parents=True)
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mos"])
        for i in range(count):
            pixels = np.clip(random_rgb(40, 40, seed=100 + i).astype(int) // 2 + 16 * i, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / "images" / f"r{i}.png")
            writer.writerow([f"r{i}.png", 10 * i])
    return str(folder)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    return {
        "root": root,
        "clip": make_clip_dir(root / "clip"),
        "corpus": str(write_caption_corpus(root / "corpus", num_images=13)),  # 13 // 4 = 3 steps an epoch
        "rating": make_rating_dir(root / "rating"),
    }


def common_args(ws, output_dir, *extra):
    return [
        "--init",
        ws["clip"],
        "--corpus",
        f"caption_jsonl={ws['corpus']}",
        "--output_dir",
        str(output_dir),
        "--cache_dir",
        str(ws["root"] / "cache"),
        "--num_train_epochs",
        "2",
        "--learning_rate",
        "1e-3",
        "--checkpointing_steps",
        "2",
        "--checkpoints_total_limit",
        "2",
        "--dataloader_num_workers",
        "1",
        "--seed",
        "5",
        *extra,
    ]


def run_single(args, env=None, preexec_fn=None):
    environment = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO_ROOT, **(env or {}))
    return subprocess.run(
        [sys.executable, SCRIPT, *args], cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300,
        preexec_fn=preexec_fn,
    )


def read_log(output_dir):
    with open(os.path.join(output_dir, LOG_FILE)) as handle:
        return [json.loads(line) for line in handle]


def train_curve(records):
    return [(r["step"], r["epoch"], r["batch"], r["train/loss"]) for r in records if "train/loss" in r]


@pytest.fixture(scope="module")
def reference_run(workspace):
    """One process, global batch 4, never stopped; zero-shot check every 3 steps."""
    output_dir = workspace["root"] / "reference"
    args = common_args(
        workspace,
        output_dir,
        "--per_device_train_batch_size",
        "4",
        "--report_to",
        "tensorboard",
        "--eval_dataset",
        f"folder_csv={workspace['rating']}",
        "--eval_split",
        "train",
        "--eval_steps",
        "3",
        "--prompts",
        "natural",
    )
    result = run_single(args)
    assert result.returncode == 0, result.stderr[-4000:]
    return output_dir


def test_reference_run_logs_checkpoints_and_saves_a_zero_shot_uniqa_model(workspace, reference_run):
    records = read_log(reference_run)
    curve = train_curve(records)
    assert [step for step, *_ in curve] == [1, 2, 3, 4, 5, 6] and [e for _, e, *_ in curve] == [0, 0, 0, 1, 1, 1]
    assert len({batch for _, _, batch, _ in curve}) == 6  # a new permutation each epoch
    assert all(math.isfinite(loss) for *_, loss in curve)
    evals = [r for r in records if "eval/zero_shot_srcc" in r]
    assert [r["step"] for r in evals] == [3, 6] and all(-1 <= r["eval/zero_shot_srcc"] <= 1 for r in evals)
    assert not [n for n in os.listdir(reference_run) if n.startswith("checkpoint-")]  # beside the model, not in it
    assert sorted(n for n in os.listdir(checkpoints_of(reference_run)) if n.startswith("checkpoint-")) == [
        "checkpoint-4",
        "checkpoint-6",
    ]
    if is_tensorboard_available():
        assert os.listdir(reference_run / "logs")

    model = AutoModel.from_pretrained(reference_run)
    assert isinstance(model, UniQAModel) and model.adapter is None and not model.config.use_adapter
    assert model.config.prompt_group_names == ["default", "sharpness", "noise", "quality"]
    assert model.config.prompt_input_ids[0] == [49406, 2103, 2867, 49407]  # "bad image", real CLIP BPE
    initial = CLIPModel.from_pretrained(workspace["clip"])
    assert not torch.equal(model.clip.visual_projection.weight, initial.visual_projection.weight)  # it trained
    # CLIP's temperature trains with the towers (as in CLIP and the authors' release)
    assert not torch.equal(model.clip.logit_scale, initial.logit_scale)
    assert len({round(r["train/logit_scale"], 6) for r in curve_records(records)}) > 1
    scorer = pipeline("image-quality", model=str(reference_run))
    image = os.path.join(workspace["rating"], "images", "r0.png")
    out = scorer(image)
    assert 0.0 <= out["score"] <= 1.0


def read_log_through_fifo(fifo: str, until_step: int, process, timeout: float = 300) -> bytes:
    """The records a run writes to its log, here a FIFO, up to the record of `until_step`; then
    the reading end is closed. The script opens its log for each record, and opening a FIFO for
    writing waits for a reader: the run cannot log (nor checkpoint) past the next record."""
    deadline, data = time.monotonic() + timeout, b""
    descriptor = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        poller = select.poll()
        poller.register(descriptor, select.POLLIN)
        while until_step not in [json.loads(line)["step"] for line in data.split(b"\n")[:-1]]:
            if process.poll() is not None:
                raise AssertionError(f"the run ended (exit status {process.returncode}) before logging step {until_step}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no log record of step {until_step} within {timeout} s")
            if poller.poll(100):
                try:
                    chunk = os.read(descriptor, 1 << 16)
                except BlockingIOError:
                    chunk = None
                if chunk:
                    data += chunk
                else:
                    time.sleep(0.01)  # a record's writer closed; the next has not opened yet
    finally:
        os.close(descriptor)
    return data


def wait_for(condition, timeout: float = 300, interval: float = 0.05) -> bool:
    """Poll `condition()` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def checkpoints_of(output_dir):
    """Where a run into `output_dir` keeps its checkpoints: beside it."""
    return type(output_dir)(str(output_dir) + ".checkpoints") if not isinstance(output_dir, str) else output_dir + ".checkpoints"


def checkpoint_folders(output_dir):
    folder = checkpoints_of(output_dir)
    return sorted(name for name in os.listdir(folder) if name.startswith("checkpoint-")) if os.path.isdir(folder) else []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="stops the run with FIFOs, SIGKILL and /proc")
def test_two_processes_killed_and_resumed_reproduce_the_reference_curve(workspace, reference_run, tmp_path):
    output_dir = workspace["root"] / "ddp"
    # Gradient checkpointing recomputes the same activations: it must not change the curve either.
    args = common_args(
        workspace, output_dir, "--per_device_train_batch_size", "2", "--report_to", "none", "--gradient_checkpointing"
    )
    # The run is killed from outside, with SIGKILL, once checkpoint-4 (mid-epoch) is complete. To
    # kill it before checkpoint-6 whatever the machine's load, its log is a FIFO that the test
    # stops reading after step 4: the run can then log step 5 at most (if the reader is slow),
    # and it checkpoints step 6 only after logging it.
    os.makedirs(output_dir)
    log_path = str(output_dir / LOG_FILE)
    os.mkfifo(log_path)
    run = start_two_processes([SCRIPT, *args], str(tmp_path / "killed.txt"))
    try:
        logged = read_log_through_fifo(log_path, 4, run)
        complete = wait_for(lambda: "checkpoint-4" in checkpoint_folders(output_dir) or run.poll() is not None)
    finally:
        kill_process_tree(run)
    output = (tmp_path / "killed.txt").read_text(errors="replace")
    assert complete and run.returncode == -signal.SIGKILL, output[-4000:]  # killed, not ended by itself
    assert checkpoint_folders(output_dir) == ["checkpoint-2", "checkpoint-4"]
    assert not os.path.isfile(output_dir / "model.safetensors")
    os.remove(log_path)
    (output_dir / LOG_FILE).write_bytes(logged)  # what the run logged, as a regular file
    assert [r["step"] for r in read_log(output_dir)] in ([1, 2, 3, 4], [1, 2, 3, 4, 5])

    resumed = launch_two_processes([SCRIPT, *args, "--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "Resumed from" in resumed.stderr and "checkpoint-4" in resumed.stderr
    got, want = train_curve(read_log(output_dir)), train_curve(read_log(reference_run))
    # Same steps, epochs and batches (global batch 2 x 2 == 4 x 1); losses equal up to float
    # summation order (one process vs. two).
    assert [g[:3] for g in got] == [w[:3] for w in want]
    np.testing.assert_allclose([g[3] for g in got], [w[3] for w in want], rtol=0, atol=2e-4)
    assert AutoModel.from_pretrained(output_dir).adapter is None


def test_fresh_runs_over_a_run_and_changed_resumes_are_refused_and_divergence_stops(workspace, tmp_path):
    """In process: one short run, then the refusals; a diverging run stops at the step, unsaved."""

    def run(output_dir, *extra):
        return main(parse_args(common_args(workspace, output_dir, "--per_device_train_batch_size", "4", "--max_steps", "2",
                                           "--report_to", "none", "--dataloader_num_workers", "0", *extra)))

    output_dir = tmp_path / "run"
    run(output_dir)
    assert os.path.isdir(checkpoints_of(output_dir) / "checkpoint-2") and os.path.isfile(output_dir / "config.json")
    with open(checkpoints_of(output_dir) / "checkpoint-2" / "lr_scheduler.json") as handle:  # JSON: nothing unpickled with weights_only=False
        assert json.load(handle)["last_epoch"] == 2
    assert not [name for name in os.listdir(checkpoints_of(output_dir) / "checkpoint-2") if name.startswith("custom_checkpoint")]
    with pytest.raises(ResumeError, match=r"holds an earlier run \(\S+run\.checkpoints/checkpoint-2, a saved model"):
        run(output_dir)
    with pytest.raises(ResumeError, match="learning_rate: 0.001 then, 0.002 now"):
        run(output_dir, "--resume_from_checkpoint", "latest", "--learning_rate", "2e-3")
    with pytest.raises(ResumeError, match="global_batch_size: 4 then, 2 now"):
        run(output_dir, "--resume_from_checkpoint", "latest", "--per_device_train_batch_size", "2")
    other = CLIPModel.from_pretrained(workspace["clip"])
    with torch.no_grad():
        other.visual_projection.weight.mul_(2)
    other.save_pretrained(tmp_path / "other_init")
    build_clip_tokenizer(model_max_length=32).save_pretrained(tmp_path / "other_init")
    with pytest.raises(ResumeError, match=r"model: '\w+' then"):  # another --init, same architecture
        run(output_dir, "--resume_from_checkpoint", "latest", "--init", str(tmp_path / "other_init"))
    with pytest.raises(DivergenceError, match="not finite at step 2"):  # step 1 makes the weights NaN
        run(tmp_path / "diverged", "--learning_rate", "inf")
    assert not os.path.exists(tmp_path / "diverged" / "config.json")


@pytest.mark.slow
def test_a_checkpoint_over_the_file_size_limit_stops_the_run_with_one_line_and_it_resumes(workspace, tmp_path):
    """Issue 23, finding 8, as a user meets it: the script run with `python` under a file-size
    limit (`ulimit -f`; Python ignores SIGXFSZ, so the write fails with EFBIG) smaller than a
    checkpoint's largest file. Checkpoint files are the same size at every step, so the first
    checkpoint is written without the limit (a run of 2 steps), and the resumed run under it
    fails at its first checkpoint: exit 2, one line naming the checkpoint and the OS error, no
    traceback, no `.partial` left, the earlier checkpoint whole; resumed without the limit, the
    run goes on from it."""
    output_dir = tmp_path / "run"

    def args(max_steps, *extra):
        return common_args(workspace, output_dir, "--per_device_train_batch_size", "4", "--max_steps", str(max_steps),
                           "--lr_scheduler", "constant", "--report_to", "none", "--dataloader_num_workers", "0", *extra)

    main(parse_args(args(2)))
    first = checkpoints_of(output_dir) / "checkpoint-2"
    sizes = {name: os.path.getsize(first / name) for name in os.listdir(first)}
    limit = max(sizes.values()) - 1  # the largest checkpoint file cannot be written
    result = run_single(args(4, "--resume_from_checkpoint", "latest"), preexec_fn=file_size_limit(limit))
    assert result.returncode == 2, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "cannot write the checkpoint" in line]
    assert f"{checkpoints_of(output_dir) / 'checkpoint-4'}: cannot write the checkpoint" in line
    assert os.strerror(errno.EFBIG) in line and f"resumes from {first}" in line
    assert os.listdir(checkpoints_of(output_dir)) == ["checkpoint-2"]  # no checkpoint-4.partial
    assert {name: os.path.getsize(first / name) for name in os.listdir(first)} == sizes

    main(parse_args(args(4, "--resume_from_checkpoint", "latest")))
    assert [record["step"] for record in curve_records(read_log(output_dir))] == [1, 2, 3, 4]
    assert sorted(os.listdir(checkpoints_of(output_dir))) == ["checkpoint-2", "checkpoint-4"]


def curve_records(records):
    return [r for r in records if "train/loss" in r]


def test_freeze_logit_scale_keeps_the_temperature(workspace, tmp_path):
    output_dir = tmp_path / "frozen"
    args = common_args(workspace, output_dir, "--per_device_train_batch_size", "4", "--max_steps", "2",
                       "--report_to", "none", "--freeze_logit_scale")
    result = run_single(args)
    assert result.returncode == 0, result.stderr[-4000:]
    initial = CLIPModel.from_pretrained(workspace["clip"])
    assert torch.equal(AutoModel.from_pretrained(output_dir).clip.logit_scale, initial.logit_scale)
    assert len({r["train/logit_scale"] for r in curve_records(read_log(output_dir))}) == 1


def test_jsonl_log_drops_entries_after_the_resumed_step(tmp_path):
    path = tmp_path / LOG_FILE
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)))
    JsonlLog(str(path), enabled=True, resume_step=2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    JsonlLog(str(path), enabled=True, resume_step=None)  # a fresh run starts a fresh log
    assert not path.exists()


def test_init_from_a_uniqa_folder_drops_its_adapter(tmp_path, workspace):
    model = UniQAModel.from_clip(workspace["clip"], use_adapter=True)
    model.save_pretrained(tmp_path)
    build_clip_tokenizer(model_max_length=32).save_pretrained(tmp_path)
    loaded, tokenizer = load_init(str(tmp_path))
    assert loaded.adapter is None and not loaded.config.use_adapter
    assert loaded.clip.visual_projection.weight.dtype == torch.float32
    assert tokenizer("bad image")["input_ids"] == [49406, 2103, 2867, 49407]


def test_tokenizer_is_the_inits_or_the_packaged_openai_one(tmp_path, workspace):
    from tests.helpers import build_tiny_tokenizer, tiny_clip_config

    clip = CLIPModel.from_pretrained(workspace["clip"])
    clip.save_pretrained(tmp_path / "bare")  # weights, no tokenizer files
    tokenizer = load_tokenizer(str(tmp_path / "bare"))
    assert len(tokenizer) == 49408 and tokenizer("bad image")["input_ids"] == [49406, 2103, 2867, 49407]
    CLIPModel(CLIPConfig(**tiny_clip_config(vocab_size=64))).save_pretrained(tmp_path / "small")
    with pytest.raises(ValueError, match="--init"):  # neither its own tokenizer nor OpenAI's vocabulary
        load_tokenizer(str(tmp_path / "small"))
    build_tiny_tokenizer().save_pretrained(tmp_path / "small")  # 60 tokens for a 64-token tower
    with pytest.raises(ValueError, match="--init"):
        load_tokenizer(str(tmp_path / "small"))


def test_several_crops_per_image_train_with_their_own_layout(workspace, tmp_path):
    output_dir = tmp_path / "crops"
    args = common_args(workspace, output_dir, "--per_device_train_batch_size", "4", "--crops_per_image", "2",
                       "--max_steps", "2", "--image_transform", "native_crop", "--detail_prob", "0.5", "--report_to", "none")
    result = run_single(args)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "global batch 2 images x 2 crops" in result.stderr
    with open(checkpoints_of(output_dir) / "checkpoint-2" / "run_layout.json") as handle:
        layout = json.load(handle)
    assert layout["crops_per_image"] == 2 and layout["detail_prob"] == 0.5 and layout["detail_candidates"] == 4
    assert len(curve_records(read_log(output_dir))) == 2


def test_meaning_positives_train_with_their_own_layout_and_need_recorded_meanings(workspace, tmp_path):
    corpus = write_caption_corpus(tmp_path / "corpus", num_images=8, meanings=["quality|bad|blur", "quality|good|noise"])
    args = common_args({**workspace, "corpus": str(corpus)}, tmp_path / "run", "--per_device_train_batch_size", "4",
                       "--max_steps", "2", "--report_to", "none", "--meaning_positives")
    result = run_single(args)
    assert result.returncode == 0, result.stderr[-4000:]
    with open(checkpoints_of(tmp_path / "run") / "checkpoint-2" / "run_layout.json") as handle:
        assert json.load(handle)["meaning_positives"] is True
    # captions that record no meaning (an MLLM's, or written before meanings were recorded): refused
    result = run_single(common_args(workspace, tmp_path / "none", "--max_steps", "1", "--meaning_positives"))
    assert result.returncode == 2 and "--meaning_positives: no caption of the corpus records its meaning" in result.stderr


def test_the_weight_average_is_saved_checkpointed_and_resumed(workspace, tmp_path):
    """--ema_decay: the saved model is the average, not the last step; a run stopped at step 2 and
    resumed to step 4 saves the same average as a run never stopped."""
    ema = ("--per_device_train_batch_size", "4", "--report_to", "none", "--ema_decay", "0.5")
    whole = tmp_path / "whole"
    result = run_single(common_args(workspace, whole, *ema, "--max_steps", "4"))
    assert result.returncode == 0, result.stderr[-4000:]
    with open(checkpoints_of(whole) / "checkpoint-4" / "run_layout.json") as handle:
        assert json.load(handle)["ema_decay"] == 0.5
    weight = "vision_model.embeddings.patch_embedding.weight"
    last_step = load_file(str(checkpoints_of(whole) / "checkpoint-4" / "model.safetensors"))
    (last_weight,) = [value for name, value in last_step.items() if name.endswith(weight)]
    saved = AutoModel.from_pretrained(whole).clip
    assert not torch.equal(saved.state_dict()[weight], last_weight)  # the average, not the last step

    stopped = tmp_path / "stopped"
    result = run_single(common_args(workspace, stopped, *ema, "--max_steps", "2"))
    assert result.returncode == 0, result.stderr[-4000:]
    result = run_single(common_args(workspace, stopped, *ema, "--max_steps", "4", "--resume_from_checkpoint", "latest"))
    assert result.returncode == 0, result.stderr[-4000:]
    resumed = AutoModel.from_pretrained(stopped).clip.state_dict()
    assert all(torch.equal(resumed[name], value) for name, value in saved.state_dict().items())

    result = run_single(common_args(workspace, stopped, "--per_device_train_batch_size", "4", "--report_to", "none",
                                    "--ema_decay", "0.9", "--max_steps", "6", "--resume_from_checkpoint", "latest"))
    assert result.returncode == 2 and "ema_decay" in result.stderr  # another average: refused


def test_argument_errors():
    base = ["--init", "x", "--corpus", "caption_jsonl=y", "--output_dir", "z"]
    assert parse_args(base).train_batch_size == 960 and parse_args(base).learning_rate == 5e-6
    with pytest.raises(SystemExit):
        parse_args([*base, "--eval_steps", "5"])
    with pytest.raises(SystemExit):
        parse_args([*base, "--max_steps", "0"])
    with pytest.raises(SystemExit):
        parse_args([*base, "--crops_per_image", "0"])
    with pytest.raises(SystemExit):  # a batch counts views: whole images only
        parse_args([*base, "--per_device_train_batch_size", "3", "--crops_per_image", "2"])
    assert parse_args([*base, "--crops_per_image", "4"]).crops_per_image == 4
    for bad in (["--detail_prob", "0.5"], ["--image_transform", "native_crop", "--detail_prob", "2"],
                ["--image_transform", "native_crop", "--detail_prob", "0.5", "--detail_candidates", "0"]):
        with pytest.raises(SystemExit):  # detail crops are native crops; a probability; at least one window
            parse_args([*base, *bad])
    assert parse_args([*base, "--image_transform", "native_crop", "--detail_prob", "0.5"]).detail_candidates == 4
    with pytest.raises(SystemExit):  # 0 would mean "no limit", silently
        parse_args([*base, "--checkpoints_total_limit", "0"])
