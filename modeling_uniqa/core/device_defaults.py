"""What a scoring process uses where the user gave no `--workers` or `--batch-size`, per device.

On the CPU the forward is the whole cost: decoding workers take their cores from it, and 32
ViT-B/16 views a batch (6,304 token rows) already keep the matrix units busy; a smaller tower gets
as many views as hold that many tokens (UniQA-Tiny: 96 views of 65 tokens, 1.15x the images/s of
32 views a batch). On a GPU decoding is the whole cost (5-10 ms of CPU
per 1024x768 JPEG against well under 1 ms of GPU per ViT-B/16 view), so every core but the
scorer's own decodes, and batches are large enough to amortise kernel launches.
"""

import os

import torch

CPU_WORKERS, CPU_BATCH_SIZE, GPU_BATCH_SIZE = 2, 32, 256
CPU_BATCH_TOKENS = CPU_BATCH_SIZE * 197  # token rows of 32 ViT-B/16 views at 224 px
MAX_GPU_WORKERS = 16


def local_process_count() -> int:
    """Scoring processes on this machine: `LOCAL_WORLD_SIZE`, which torchrun and `accelerate
    launch` set for each process they start; 1 for a plain process."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def decoding_workers(requested: int | None, device: torch.device, local_processes: int = 1) -> int:
    """DataLoader processes decoding images for one scoring process: `requested` (`--workers`)
    if given; else 2 on the CPU, and on a GPU this process's share of the cores (among
    `local_processes` on the machine) less one for itself, between 2 and 16."""
    if requested is not None:
        return requested
    if device.type == "cpu":
        return CPU_WORKERS
    return max(2, min(MAX_GPU_WORKERS, len(os.sched_getaffinity(0)) // max(1, local_processes) - 1))


def scoring_batch_size(requested: int | None, device: torch.device, tokens_per_view: int | None = None) -> int:
    """Views per forward: `requested` (`--batch-size`) if given; else on the CPU 32, or for views of
    fewer tokens (`tokens_per_view`, see `model_folder.view_tokens`) as many as hold 6,304 token rows;
    256 on a GPU (about 1 GB of activations for a ViT-B/16 in float32)."""
    if requested is not None:
        return requested
    if device.type != "cpu":
        return GPU_BATCH_SIZE
    return max(CPU_BATCH_SIZE, CPU_BATCH_TOKENS // tokens_per_view) if tokens_per_view else CPU_BATCH_SIZE
