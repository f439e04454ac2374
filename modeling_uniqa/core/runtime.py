"""Process-wide runtime helpers shared by the library, the `uniqa` commands and the training
scripts: the dtypes a job may run in, and closing torch.distributed's process group at exit."""

from __future__ import annotations

import gc
import sys

import torch

# The compute dtypes a scoring or inference job may be given by name (the one table of them).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """A dtype by name; ``auto``: bf16 on a GPU that supports it, else fp16 on a GPU, fp32 on the CPU."""
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {sorted(DTYPES)}, got {name!r}")
        return DTYPES[name]
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def close_process_group() -> None:
    """Destroy torch.distributed's process group, if this process set one up, while the
    interpreter is still whole. Left to interpreter shutdown, gloo's worker threads can abort a
    process that has finished its work (SIGABRT, "terminate called without an active
    exception"), and with it the whole `accelerate launch`. Every entry point calls this last.

    Objects that hold work of the group (a DDP reducer kept alive by a reference cycle, say after
    an error) are collected first, while the group is still whole."""
    distributed = sys.modules.get("torch.distributed")  # not imported: no process group to close
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        gc.collect()
        distributed.destroy_process_group()


__all__ = ["DTYPES", "close_process_group", "resolve_dtype"]
