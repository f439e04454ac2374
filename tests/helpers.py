"""Helpers shared by the tests: tiny random CLIP/UniQA models, an offline tokenizer, images,
and launching real multi-process runs. Fixtures that use them live in `conftest.py`.

Everything is built here, offline: no weights or tokenizers come from the Hub.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import torch
from PIL import Image
from transformers import CLIPTokenizer

from modeling_uniqa import UniQAConfig, UniQAModel

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_IMAGE_SIZE = 32


def tiny_clip_config(projection_dim: int = 16, vocab_size: int = 60) -> dict:
    """A CLIP with 2-layer, 32-wide towers on 32x32 images (patch 8); its vocabulary is the
    60 ids of `build_tiny_tokenizer` (prompt tokenizers must match the text tower exactly)."""
    return {
        "text_config": {
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 32,
            "hidden_act": "quick_gelu",
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        "vision_config": {
            "image_size": TINY_IMAGE_SIZE,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "hidden_act": "quick_gelu",
        },
        "projection_dim": projection_dim,
    }


def build_tiny_tokenizer() -> CLIPTokenizer:
    """A character-level CLIP BPE tokenizer (plus a few merges) covering the named prompts."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz-":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    merges = [("i", "m"), ("a", "g"), ("im", "ag"), ("imag", "e</w>")]
    for first, second in merges:
        vocab[first + second] = len(vocab)
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def make_tiny_uniqa(tokenizer, seed: int = 0, **config_kwargs) -> UniQAModel:
    """A random tiny UniQA model with its prompts embedded, in eval mode."""
    torch.manual_seed(seed)
    config_kwargs.setdefault("clip_config", tiny_clip_config())
    model = UniQAModel(UniQAConfig(**config_kwargs)).eval()
    model.set_prompts(None, tokenizer)
    return model


def same_backbone(model: UniQAModel, base: UniQAModel) -> UniQAModel:
    """`model` with `base`'s CLIP weights (its own head kept), prompts re-embedded."""
    model.clip.load_state_dict(base.clip.state_dict())
    model.refresh_prompt_embeds()
    return model


def head_on_backbone(tokenizer, base: UniQAModel, seed: int, **config_kwargs) -> UniQAModel:
    """A model with `base`'s CLIP and a head of its own (random adapter, moved level scores), as
    if fine-tuned on it: what `uniqa heads add --from` and `--adapter` accept on `base`."""
    model = make_tiny_uniqa(tokenizer, seed=seed, **config_kwargs)
    torch.manual_seed(seed + 100)
    model.adapter.reset_parameters()
    with torch.no_grad():
        model.level_scores.copy_(torch.tensor([0.1, 0.3, 0.5, 0.9, 1.2]))
    return same_backbone(model, base)


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (uint8), so crops at different places differ."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(base).resize((width, height), Image.BILINEAR))


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_process_command(arguments: list, env: dict | None) -> tuple:
    """The `accelerate launch` command line and environment of `launch_two_processes`."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), *[str(argument) for argument in arguments],
    ]
    # PYTHONFAULTHANDLER: a run that hangs can be made to print every thread's stack (SIGABRT).
    environment = dict(os.environ, ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1", PYTHONPATH=REPO_ROOT, PYTHONFAULTHANDLER="1")
    return command, dict(environment, **(env or {}))


def file_size_limit(limit: int):
    """A `subprocess` `preexec_fn` that limits the child's files to `limit` bytes (`ulimit -f`;
    Python ignores SIGXFSZ, so a write past it fails with EFBIG). Set in the child only: the test
    process itself is never limited."""

    def limit_file_size():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return limit_file_size


def launch_two_processes(arguments: list, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `accelerate launch` with two real CPU processes (gloo DDP) on `arguments`
    (e.g. `["-m", "modeling_uniqa.cli", "score", ...]` or `["train_scripts/x.py", ...]`).

    `accelerate launch --cpu --num_processes 2` silently runs one process; `--multi_gpu` with
    `ACCELERATE_USE_CPU=1` runs two.
    """
    command, environment = _two_process_command(arguments, env)
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # A hang: every process prints its threads' stacks (faulthandler, on SIGABRT), workers
        # first, so that the failure shows where each one waits.
        for pid in reversed(process_tree(process.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGABRT)
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            kill_process_tree(process)
            stdout, stderr = process.communicate()
        raise AssertionError(f"{' '.join(command)} did not end in {timeout} s; its stacks:\n{stderr[-30000:]}") from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def start_two_processes(arguments: list, output_file: str, env: dict | None = None) -> subprocess.Popen:
    """`launch_two_processes` without waiting: the running launcher, its stdout and stderr going
    to `output_file` (a pipe nobody reads could fill up and stall the run). Stop it with
    `kill_process_tree`: the launcher starts its workers in sessions of their own."""
    command, environment = _two_process_command(arguments, env)
    with open(output_file, "wb") as output:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT)


def _children() -> dict:
    """Parent pid -> child pids of every process now (Linux `/proc`)."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    stat = handle.read()
            except OSError:  # ended meanwhile
                continue
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])  # the command name may hold spaces
            children.setdefault(parent, []).append(int(name))
    return children


def process_tree(pid: int) -> list:
    """`pid` and all its descendants, parents first (Linux `/proc`)."""
    children, tree = _children(), [pid]
    for process in tree:
        tree.extend(children.get(process, []))
    return tree


def kill_process_tree(process: subprocess.Popen) -> None:
    """SIGKILL `process` and every process under it, as a power cut would, and reap it.

    The tree is frozen first (SIGSTOP until no new process appears), so that no child escapes
    by being started, or re-parented to init, between the listing and the kill."""
    if process.poll() is not None:  # already reaped: its pid may belong to another process now
        return
    stopped = set()
    while True:
        tree = [pid for pid in process_tree(process.pid) if pid not in stopped]
        if not tree:
            break
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(pid, signal.SIGSTOP)
            stopped.add(pid)
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


def write_rated_folder(root: str, n: int = 32, seed: int = 0, size: tuple = (40, 48)) -> list:
    """A `folder_csv` dataset (`labels.csv` + `images/`) whose MOS (1-10) sets each image's
    brightness, so that a model can learn it. Returns the MOS values."""
    import csv

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rows = []
    for index in range(n):
        mos = round(float(rng.uniform(1, 10)), 3)
        pixels = (random_rgb(*size, seed=seed * 1000 + index).astype(np.float32) * mos / 10).astype(np.uint8)
        name = f"im{index:03d}.png"
        Image.fromarray(pixels).save(os.path.join(root, "images", name))
        rows.append((name, mos))
    with open(os.path.join(root, "labels.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "MOS"])
        writer.writerows(rows)
    return [mos for _, mos in rows]


def save_tiny_uniqa(directory: str, tokenizer, seed: int = 0, **config_kwargs) -> str:
    """A complete tiny model folder (weights, remote code, 32-pixel processor, tokenizer)."""
    from modeling_uniqa import UniQAImageProcessor

    model = make_tiny_uniqa(tokenizer, seed=seed, **config_kwargs)
    model.save_pretrained(directory)
    UniQAImageProcessor(crop_size=TINY_IMAGE_SIZE, view_policy="random10").save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)
