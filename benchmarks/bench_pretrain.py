"""Pre-training speed and memory at ViT-B/16 size (random weights), as train_pretrain.py trains.

    python benchmarks/bench_pretrain.py [--batch-size 4] [--steps 2] [--memory-batch-size 32]

Each configuration runs in a fresh process (so peak memory is its own): the training step of
`train_scripts/train_pretrain.py` (both towers, global-batch CLIP loss, Adam) on random
224x224 images and 48-token captions. Prints, per configuration:

* samples/s over `--steps` timed steps after one warm-up step, at `--batch-size`, in fp32 and
  bf16 autocast, with and without gradient checkpointing;
* memory at `--memory-batch-size` (one step): the peak resident memory during forward +
  backward (activations, gradients) and during the whole step (plus the optimizer update's
  temporaries), minus the resident memory before the step; the weights and Adam state,
  allocated by a batch-1 warm-up step, are excluded. Target: with gradient checkpointing at
  most half of without.

On a GPU (when one is present) it also times batch 128 in bf16 and projects the paper's run
(5 epochs over about 0.5M images). Figures on a shared CPU are noisy.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_model import VIT_B16  # noqa: E402

PAPER_IMAGES, PAPER_EPOCHS = 500_000, 5
TEXT_LENGTH = 48


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4, help="batch of the speed runs")
    parser.add_argument("--steps", type=int, default=2, help="timed steps of the speed runs")
    parser.add_argument("--memory-batch-size", type=int, default=32, help="batch of the memory runs (one step)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one configuration as JSON
    return parser.parse_args(argv)


class PeakRSS:
    """Samples this process's resident memory in a thread; `peak` is the highest seen (bytes)."""

    def __init__(self, interval=0.002):
        import psutil

        self.process, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def rss(self) -> int:
        return self.process.memory_info().rss

    def __enter__(self):
        self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _release_free_memory():
    """Return freed heap pages to the OS (glibc), so resident memory measures live data."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_worker(config: dict) -> dict:
    """One configuration: build, warm up, then time or measure; returns figures."""
    from transformers import CLIPConfig, CLIPModel

    from train_scripts.common.clip_loss import ClipLoss
    from train_scripts.train_pretrain import ContrastiveCLIP

    device = torch.device(config["device"])
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(**VIT_B16)).to(device).train()
    if config["checkpointing"]:
        clip.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model, loss_fn = ContrastiveCLIP(clip), ClipLoss()
    optimizer = torch.optim.Adam(clip.parameters(), lr=5e-6, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)
    dtype = torch.bfloat16 if config["precision"] == "bf16" else None

    def forward_backward(batch):
        pixels = torch.randn(batch, 3, 224, 224, device=device)
        ids = torch.randint(0, 49406, (batch, TEXT_LENGTH), device=device)
        ids[:, -1] = 49407  # end of text: the pooled token
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            image, text, scale = model(pixels, ids, torch.ones_like(ids))
        loss_fn(image, text, scale).backward()

    def update():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(batch):
        forward_backward(batch)
        update()

    batch = config["batch"]
    if config["kind"] == "memory":
        step(1)  # allocates Adam's state, so the measured step holds only what the batch needs
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            forward_backward(batch)
            figures = {"forward_backward_gib": (torch.cuda.max_memory_allocated() - before) / 2**30}
            update()
            return {**figures, "step_gib": (torch.cuda.max_memory_allocated() - before) / 2**30}
        _release_free_memory()
        with PeakRSS() as meter:
            before = meter.rss()
            forward_backward(batch)
        figures = {"forward_backward_gib": (meter.peak - before) / 2**30}
        with PeakRSS() as step_meter:
            update()
        return {
            **figures,
            "step_gib": (max(meter.peak, step_meter.peak) - before) / 2**30,
            "peak_rss_gib": max(meter.peak, step_meter.peak) / 2**30,
        }
    step(batch)  # warm-up
    start = time.perf_counter()
    for _ in range(config["steps"]):
        step(batch)
    return {"samples_per_s": batch * config["steps"] / (time.perf_counter() - start)}


def run_config(config: dict) -> dict:
    """Run one configuration in a fresh process (its own peak memory)."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(config)]
    env = dict(os.environ)
    if config["kind"] == "memory":
        # glibc otherwise keeps freed activation buffers in its heap (dynamic mmap threshold), so
        # resident memory would count memory already freed: serve large blocks by mmap instead.
        env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{config} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(args):
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    torch_threads = torch.get_num_threads()
    print(f"CLIP ViT-B/16 pre-training step, random weights, {torch_threads} CPU threads, {TEXT_LENGTH}-token captions")
    if not args.skip_speed:
        print(f"\nspeed, CPU, batch {args.batch_size}, {args.steps} timed steps")
        for precision in ("fp32", "bf16"):
            for checkpointing in (False, True):
                config = {
                    "kind": "speed",
                    "device": "cpu",
                    "batch": args.batch_size,
                    "steps": args.steps,
                    "precision": precision,
                    "checkpointing": checkpointing,
                }
                figures = run_config(config)
                print(
                    f"  {precision:5s} checkpointing={'on ' if checkpointing else 'off'}  {figures['samples_per_s']:.2f} samples/s"
                )
    if not args.skip_memory:
        print(
            f"\nmemory, CPU, fp32, batch {args.memory_batch_size}, one step (increase over the resident memory before it)"
        )
        memory = {}
        for checkpointing in (False, True):
            config = {
                "kind": "memory",
                "device": "cpu",
                "batch": args.memory_batch_size,
                "precision": "fp32",
                "checkpointing": checkpointing,
            }
            memory[checkpointing] = figures = run_config(config)
            print(
                f"  checkpointing={'on ' if checkpointing else 'off'}  forward+backward {figures['forward_backward_gib']:.2f} GiB"
                f"  whole step {figures['step_gib']:.2f} GiB  (process peak {figures['peak_rss_gib']:.2f} GiB)"
            )
        for key, label in (("forward_backward_gib", "forward+backward"), ("step_gib", "whole step")):
            ratio = memory[True][key] / memory[False][key]
            print(
                f"  {label}, with / without checkpointing: {ratio:.2f} (target <= 0.50: {'met' if ratio <= 0.5 else 'NOT met'})"
            )
    if torch.cuda.is_available():
        config = {
            "kind": "speed",
            "device": "cuda",
            "batch": 128,
            "steps": max(args.steps, 5),
            "precision": "bf16",
            "checkpointing": False,
        }
        speed = run_config(config)["samples_per_s"]
        hours = PAPER_EPOCHS * PAPER_IMAGES / speed / 3600
        print(f"\nGPU ({torch.cuda.get_device_name()}), batch 128, bf16: {speed:.1f} samples/s")
        print(
            f"  projection of the paper's run ({PAPER_EPOCHS} epochs x {PAPER_IMAGES:,} images) on one such GPU: {hours:.1f} h"
        )
    else:
        print("\nGPU: none on this machine, skipped.")


if __name__ == "__main__":
    main(parse_args())
