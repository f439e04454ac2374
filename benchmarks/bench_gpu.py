"""GPU scoring speed at ViT-B/16 size: forward-only views/s, decoding, `uniqa score` end to end.

On a machine with a CUDA GPU (one call; about 4 minutes on an H100 with 16 CPU cores):

    PYTHONUNBUFFERED=1 python benchmarks/bench_gpu.py --out "$OUT"

It prints the versions it ran with, each figure as it is measured, and a summary against the
targets, and writes them all to `--out`/gpu_figures.json, rewritten after every part (a run cut
short keeps what it measured). A part, or a forward variant of part (a), that fails is recorded
with its error under `failed` and the rest still runs. The device machines of this workplace
have torch, transformers, accelerate, pillow, numpy, scipy, tqdm and psutil (not `datasets`,
which scoring files does not need): run it from the repository root with nothing installed.
Their transformers may be older than `setup.cfg` asks for (5.17 was seen there): the first line
printed gives the versions; should an older one fail, carry the wheel of the version this project
pins, as the device tool's README says (`pip download --no-deps transformers==5.24.0 -d .whl`,
then `pip install --no-deps --target /tmp/site .whl/*.whl` there and `PYTHONPATH=/tmp/site:.`).
A smoke run of every part on the CPU, with a tiny model, is what the test suite runs:

    python benchmarks/bench_gpu.py --device cpu --tiny --images 4 --workers 1 --batch-size 2 --forward-batches 2 \
        --seconds 0.1 --no-compile --policies resize+draft

Parts (`--parts`, default `abcd`), all on `--images` 1024x768 photo-like JPEGs (quality 90) and
a UniQA model with random weights at ViT-B/16 size:

(a) forward only: `Normalizer` + the model on uint8 views already on the GPU, as `uniqa score`'s
    loop runs it, in `--dtype` (default bfloat16) at batches of 64-512 views eager, in float32 for
    comparison, then at 256 views with `--compile` (`torch.compile` of the vision tower; about a
    minute of compiling per batch size). Views/s and the peak GPU memory of each.
(b) decoding alone: `--workers` DataLoader processes turning the JPEGs into one uint8 view each
    (`view_loader`, as `uniqa score`), per view policy: `center` (crop of the full decode),
    `resize`, and `resize` with JPEG draft decoding (libjpeg's DCT scaling to 1/2 here). Images/s:
    the most `uniqa score` can reach on these cores, whatever the GPU.
(c) end to end: `uniqa score FOLDER --device cuda --dtype bfloat16 --batch-size B --workers W`
    in a fresh process, per view policy, at the images/s the command reports (model loading
    excluded, decoding included), with its peak GPU memory.
(d) two GPUs, when there are: the same command under `accelerate launch --multi_gpu
    --num_processes 2` (one output file), and its scaling over one GPU.

Targets (issue #15): end to end >= 2,000 images/s single-view, forward only >= 5,000 views/s in
bfloat16.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_score_images import rate_in_output, write_jpegs, write_model  # noqa: E402

from modeling_uniqa.core.runtime import DTYPES  # noqa: E402
from modeling_uniqa.scoring.score_images import Normalizer, load_scorer, set_jpeg_draft, view_loader  # noqa: E402

TINY_VISION = {"image_size": 224, "patch_size": 32, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77}
POLICIES = {"center": ("center", False), "resize": ("resize", False), "resize+draft": ("resize", True)}  # (view policy, JPEG draft)
TARGET_END_TO_END, TARGET_FORWARD = 2000.0, 5000.0
GIB = 2**30


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8192, help="1024x768 JPEGs to write and score (default 8192).")
    parser.add_argument("--workers", type=int, default=None, help="Decoding workers (default: CPU cores - 1).")
    parser.add_argument("--batch-size", type=int, default=256, help="Views per forward of parts (b)-(d) (default 256).")
    parser.add_argument("--forward-batches", default="64,128,256,512", help="Batch sizes (views) of part (a).")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke run.")
    parser.add_argument("--parts", default="abcd", help="Parts to run, in this order (default abcd).")
    parser.add_argument("--policies", default=",".join(POLICIES), help=f"Views of parts (b)-(d), among {', '.join(POLICIES)} (default all).")
    parser.add_argument("--compile-batch", type=int, default=256, help="Batch size (views) of part (a)'s compiled forward (default 256).")
    parser.add_argument("--no-compile", action="store_true", help="Skip the compiled forward of part (a).")
    parser.add_argument("--tiny", action="store_true", help="A tiny random model instead of ViT-B/16 (smoke runs).")
    parser.add_argument("--seconds", type=float, default=3.0, help="Time each forward measurement for about this long (default 3).")
    parser.add_argument("--workdir", default=None, help="Keep the JPEGs and model here (default: a temporary folder).")
    parser.add_argument("--out", default=None, help="Folder for gpu_figures.json.")
    args = parser.parse_args(argv)
    if not args.parts or set(args.parts) - set("abcd"):
        parser.error(f"--parts {args.parts!r}: letters among a, b, c, d.")
    unknown = [name for name in args.policies.split(",") if name not in POLICIES]
    if unknown:
        parser.error(f"--policies: unknown {', '.join(unknown)}; choose among {', '.join(POLICIES)}.")
    args.policies = [POLICIES[name] for name in args.policies.split(",")]
    if args.workers is None:
        args.workers = max(1, (os.cpu_count() or 2) - 1)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: pass --device cpu for a smoke run.")
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_machine(device: torch.device) -> dict:
    import transformers

    facts = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
             "cpu_cores": os.cpu_count(), "device": str(device)}
    if device.type == "cuda":
        facts |= {"gpu": torch.cuda.get_device_name(device), "gpus": torch.cuda.device_count(), "cuda": torch.version.cuda}
    return facts


def forward_rate(model, normalize: Normalizer, batch: int, crop: int, device: torch.device, seconds: float) -> dict:
    """Views/s and peak memory of `normalize` + the model on `batch` uint8 views already on `device`."""
    views = torch.randint(0, 256, (batch, 1, crop, crop, 3), dtype=torch.uint8, device=device)
    with torch.inference_mode():
        for _ in range(3):  # warm-up: kernels chosen, a compiled graph built
            model(pixel_values=normalize(views))
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        calls, start = 0, time.perf_counter()
        while True:
            model(pixel_values=normalize(views))
            calls += 1
            if calls % 5 == 0:
                synchronize(device)
                if time.perf_counter() - start >= seconds:
                    break
        elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
    return {"batch": batch, "views_per_s": calls * batch / elapsed, "peak_gib": peak}


def part_forward(model_dir: str, device: torch.device, args) -> list:
    """(a): eager forwards in `--dtype` per batch size, float32 eager at the largest batch, then
    compiled at `--compile-batch` (a compile costs about a minute per batch size). A run that fails
    (a compiler missing on the machine, say) is recorded with its error; the others still run."""
    batches = [int(size) for size in args.forward_batches.split(",")]
    runs = [(args.dtype, False, batches)]
    if args.dtype != "float32":
        runs.append(("float32", False, [max(batches)]))
    if not args.no_compile:
        runs.append((args.dtype, True, [args.compile_batch]))
    figures = []
    for dtype, compiled, sizes in runs:
        mode = "compiled" if compiled else "eager"
        try:
            model, processor = load_scorer(model_dir, DTYPES[dtype], device, compile=compiled)
            normalize, crop = Normalizer(processor, device), processor.crop_size
            for size in sizes:
                started = time.perf_counter()
                figure = forward_rate(model, normalize, size, crop, device, args.seconds)
                figure |= {"dtype": dtype, "compiled": compiled, "seconds_with_warmup": time.perf_counter() - started}
                figures.append(figure)
                peak = f", peak {figure['peak_gib']:.2f} GiB" if figure["peak_gib"] is not None else ""
                print(f"(a) forward {dtype:<8} {mode:<8} batch {size:>4}: {figure['views_per_s']:9.1f} views/s{peak}", flush=True)
            del model
        except Exception as error:  # noqa: BLE001 - recorded in the figures and printed
            traceback.print_exc()
            figures.append({"dtype": dtype, "compiled": compiled, "error": f"{type(error).__name__}: {error}"[:2000]})
            print(f"(a) forward {dtype:<8} {mode:<8}: FAILED ({type(error).__name__})", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return figures


def part_decode(model_dir: str, paths: list, args) -> list:
    """(b): images/s of `--workers` processes decoding one view an image, per policy."""
    from modeling_uniqa.processing_uniqa import UniQAImageProcessor

    figures = []
    for policy, draft in args.policies:
        processor = UniQAImageProcessor.from_pretrained(model_dir)
        set_jpeg_draft(processor, draft, policy)  # before the workers fork
        loader = view_loader(paths, processor, policy, 0, args.batch_size, args.workers, torch.device("cpu"))
        start, decoded = time.perf_counter(), 0
        for batch in loader:
            decoded += len(batch.indices)
            if batch.errors:
                raise RuntimeError(f"decoding failed: {batch.errors[:3]}")
        rate = decoded / (time.perf_counter() - start)
        figures.append({"view_policy": policy, "jpeg_draft": draft, "workers": args.workers, "images_per_s": rate})
        print(f"(b) decode {policy}{' --jpeg-draft' if draft else '':<13} {args.workers} workers: {rate:8.1f} images/s", flush=True)
    return figures


def score_command(image_dir: str, model_dir: str, output: str, policy: str, draft: bool, workers: int, args) -> list:
    command = ["-m", "modeling_uniqa.cli", "score", image_dir, "--model", model_dir, "--output", output, "--overwrite",
               "--view-policy", policy, "--batch-size", str(args.batch_size), "--workers", str(workers),
               "--dtype", args.dtype, "--device", "cuda" if args.device.startswith("cuda") else "cpu"]
    return command + (["--jpeg-draft"] if draft else [])


def run_scoring(command: list) -> dict:
    """Run a `uniqa score` command; its reported images/s and peak GPU memory, and the wall time."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=os.environ | {"PYTHONPATH": REPO_ROOT})
    wall = time.perf_counter() - started
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed with exit code {result.returncode}:\n{output[-4000:]}")
    peak = re.search(r"Peak GPU memory of the main process: ([\d.]+) GiB", output)
    return {"images_per_s": rate_in_output(output), "peak_gib": float(peak.group(1)) if peak else None, "command_seconds": wall}


def part_end_to_end(image_dir: str, model_dir: str, workdir: str, args) -> list:
    """(c): `uniqa score` in a fresh process per view policy."""
    figures = []
    for policy, draft in args.policies:
        command = [sys.executable, *score_command(image_dir, model_dir, os.path.join(workdir, "scores.csv"), policy, draft, args.workers, args)]
        figure = run_scoring(command) | {"view_policy": policy, "jpeg_draft": draft, "workers": args.workers, "batch": args.batch_size}
        figures.append(figure)
        peak = f", peak {figure['peak_gib']:.2f} GiB" if figure["peak_gib"] is not None else ""
        print(f"(c) uniqa score {policy}{' --jpeg-draft' if draft else '':<13}: {figure['images_per_s']:8.1f} images/s{peak} "
              f"({figure['command_seconds']:.1f} s for the whole command)", flush=True)
    return figures


def part_two_gpus(image_dir: str, model_dir: str, workdir: str, single: list, args) -> list:
    """(d): the best single-GPU policy again over two GPUs with `accelerate launch`."""
    if torch.cuda.device_count() < 2 or not single:
        print("(d) two GPUs: skipped, " + ("this machine has fewer than two." if single else "part (c) did not run."), flush=True)
        return []
    best = max(single, key=lambda figure: figure["images_per_s"])
    workers = max(1, args.workers // 2)  # each process gets half the cores
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]
    command = launch + score_command(image_dir, model_dir, os.path.join(workdir, "scores2.csv"), best["view_policy"], best["jpeg_draft"],
                                    workers, args)
    figure = run_scoring(command) | {"view_policy": best["view_policy"], "jpeg_draft": best["jpeg_draft"], "gpus": 2}
    figure["scaling"] = figure["images_per_s"] / best["images_per_s"]
    print(f"(d) two GPUs, {best['view_policy']}: {figure['images_per_s']:.1f} images/s, {figure['scaling']:.2f}x one GPU", flush=True)
    return [figure]


def summary(figures: dict) -> list:
    lines = []
    eager = [f for f in figures.get("forward", []) if f["dtype"] != "float32" and "error" not in f]
    if eager:
        best = max(eager, key=lambda f: f["views_per_s"])
        lines.append(f"forward only, best: {best['views_per_s']:.0f} views/s ({best['dtype']}, batch {best['batch']}, "
                     f"{'compiled' if best['compiled'] else 'eager'}); target >= {TARGET_FORWARD:.0f}")
    if figures.get("end_to_end"):
        best = max(figures["end_to_end"], key=lambda f: f["images_per_s"])
        decode = {(f["view_policy"], f["jpeg_draft"]): f["images_per_s"] for f in figures.get("decode", [])}
        bound = decode.get((best["view_policy"], best["jpeg_draft"]))
        lines.append(f"end to end, best: {best['images_per_s']:.0f} images/s ({best['view_policy']}"
                     f"{' --jpeg-draft' if best['jpeg_draft'] else ''}, {best['workers']} workers"
                     f"{f'; decoding alone {bound:.0f}' if bound else ''}); target >= {TARGET_END_TO_END:.0f}")
    return lines


def write_figures(figures: dict, out: str | None) -> None:
    """`out`/gpu_figures.json, rewritten after every part: a run cut short by the device's time
    limit still leaves what it measured."""
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "gpu_figures.json"), "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=1)


def run_part(name: str, measure, figures: dict, out: str | None) -> None:
    """`figures[name] = measure()`; a part that fails is recorded under `failed` with its error and
    the other parts still run (device time is scarce: one broken part must not cost the rest)."""
    try:
        figures[name] = measure()
    except Exception as error:  # noqa: BLE001 - reported and recorded, never hidden
        traceback.print_exc()
        figures.setdefault("failed", {})[name] = f"{type(error).__name__}: {error}"[:2000]
        print(f"{name}: FAILED ({type(error).__name__}: {str(error)[:300]})", flush=True)
    write_figures(figures, out)


def main(args) -> dict:
    device = torch.device(args.device)
    figures = {"machine": describe_machine(device), "images": args.images, "model": "tiny" if args.tiny else "ViT-B/16"}
    print(json.dumps(figures["machine"]), flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or scratch
        image_dir, model_dir = os.path.join(workdir, "images"), os.path.join(workdir, "model")
        os.makedirs(image_dir, exist_ok=True)
        started = time.perf_counter()
        paths = write_jpegs(image_dir, args.images, processes=min(16, os.cpu_count() or 1) if args.images >= 256 else 1)
        if not os.path.isfile(os.path.join(model_dir, "config.json")):
            write_model(model_dir, "center", TINY_VISION if args.tiny else None, TINY_TEXT if args.tiny else None)
        print(f"{args.images} JPEGs and the model written in {time.perf_counter() - started:.1f} s", flush=True)
        parts = {
            "a": ("forward", lambda: part_forward(model_dir, device, args)),
            "b": ("decode", lambda: part_decode(model_dir, paths, args)),
            "c": ("end_to_end", lambda: part_end_to_end(image_dir, model_dir, workdir, args)),
            "d": ("two_gpus", lambda: part_two_gpus(image_dir, model_dir, workdir, figures.get("end_to_end") or [], args)),
        }
        for part in args.parts:  # in the order given: `--parts cab` measures end to end first
            if part == "d" and device.type != "cuda":
                continue
            run_part(*parts[part], figures, args.out)
    for line in summary(figures):
        print(line)
    write_figures(figures, args.out)
    return figures


if __name__ == "__main__":
    main(parse_args())
