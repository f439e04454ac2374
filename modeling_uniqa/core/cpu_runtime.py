"""Process-wide CPU settings that make the vision tower faster without changing a number.

glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
`mmap` and gives it back with `munmap` when freed. A ViT-B/16 forward of 80 views allocates
tensors of 50-200 MiB per layer, so each forward page-faults its whole working set in again:
measured on a 2-core Xeon, 3.7 million minor faults and 11 s of kernel time in a 26 s forward.
`tune_malloc` keeps freed memory in the heap (no mmap, no trimming), which removes the faults
with bit-identical results (with the row-chunked MLPs of `inference_speed`: 1.17-1.19x the bare
tower in `benchmarks/bench_model.py`); the cost is that the process keeps its peak memory until
it exits. `prepare_cpu_process` applies it, and the thread count, for `uniqa score` and `uniqa
retrieve` unless `--no-malloc-tuning` is given (or `UNIQA_MALLOC_TUNING=0` is set). It is a
no-op where the C library is not glibc.
"""

import contextlib
import ctypes
import ctypes.util
import functools
import os
import platform

import torch

from .device_defaults import local_process_count

# mallopt(3) parameter numbers and glibc's documented defaults for them.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
GLIBC_DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_THRESHOLD: 128 * 1024, M_MMAP_MAX: 65536}
TUNED = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}  # the largest value mallopt takes (an int)
MALLOC_TUNING_ENV = "UNIQA_MALLOC_TUNING"
DECODING_NICENESS = 19  # added to a decoding worker's nice value (19: the lowest priority)


@functools.cache
def _glibc():
    """The process's glibc (`ctypes.CDLL`), or `None` on other C libraries and systems."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


def _mallopt(settings: dict) -> bool:
    libc = _glibc()
    if libc is None:
        return False
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings.items())


def tune_malloc() -> bool:
    """Keep freed memory in the heap for reuse (see the module doc). `True` if applied (glibc)."""
    return _mallopt(TUNED)


def default_malloc() -> bool:
    """Back to glibc's documented defaults (with fixed thresholds: glibc's dynamic mmap threshold
    cannot be switched back on). Memory kept by `tune_malloc` is returned at the next frees."""
    return _mallopt(GLIBC_DEFAULTS)


def malloc_tuning_wanted(flag_off: bool = False) -> bool:
    """Whether to tune: not when `flag_off` (`--no-malloc-tuning`) or `UNIQA_MALLOC_TUNING=0`."""
    return not flag_off and os.environ.get(MALLOC_TUNING_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX512-BF16 or AMX). Without it
    PyTorch emulates bf16 and it runs slower than float32 (measured: 0.26x on an AVX512 Xeon)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def describe_cpu() -> str:
    """One line for benchmark headers: the CPU, its vector extensions and torch's threads."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    bf16 = "native bf16" if has_native_bf16() else "no native bf16"
    return f"{model}, {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}, {bf16}, {torch.get_num_threads()} torch threads"


def scoring_threads(requested: int | None, local_processes: int) -> int | None:
    """Torch threads for a CPU scoring process: `requested` (`--threads`) if given; else, when a
    launcher started several processes on this machine and set `OMP_NUM_THREADS=1` for them
    (`accelerate launch --multi_gpu` on CPUs and torchrun do by default), the machine's cores shared out among them;
    else `None`: keep torch's default (one thread per core, or what OMP_NUM_THREADS says)."""
    if requested is not None:
        return requested
    if local_processes > 1 and os.environ.get("OMP_NUM_THREADS") == "1":
        return max(1, len(os.sched_getaffinity(0)) // local_processes)
    return None


def decoding_worker_init(device: torch.device):
    """The `worker_init_fn` of a scoring DataLoader on `device`: on the CPU, `lower_priority`;
    elsewhere `None` (decoding is then the whole cost, the forward runs on the GPU)."""
    return lower_priority if device.type == "cpu" else None


def lower_priority(_worker_id: int | None = None) -> None:
    """Run this process (a decoding worker) at the lowest CPU priority (`nice` 19).

    On the CPU the decoding workers and the forward's threads share the cores. At equal priority
    a worker preempts a forward thread in the middle of a parallel region and the other threads
    wait for it; at the lowest priority the workers run when the forward leaves a core idle
    (between batches, while its threads wait), and still keep it fed: the forward blocks on the
    next batch when they fall behind, which frees the cores for them. UniQA-Tiny, 2 cores,
    1024x768 JPEGs: 72-78 images/s against 56-64 at equal priority. A no-op where `os.nice` is
    missing (Windows) or refused."""
    with contextlib.suppress(AttributeError, OSError):
        os.nice(DECODING_NICENESS)


def prepare_cpu_process(no_malloc_tuning: bool = False, threads: int | None = None) -> None:
    """What a CPU scoring process sets up before it allocates anything large: `tune_malloc`
    (unless `no_malloc_tuning` or `UNIQA_MALLOC_TUNING=0`; decoding workers forked later inherit
    it) and `scoring_threads` (`threads`: `--threads`; the local process count from the launcher)."""
    if malloc_tuning_wanted(no_malloc_tuning):
        tune_malloc()
    count = scoring_threads(threads, local_process_count())
    if count:
        torch.set_num_threads(count)
