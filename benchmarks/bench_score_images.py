"""Benchmark `uniqa score`: end-to-end images/s against the forward-only rate, and peak memory.

    python benchmarks/bench_score_images.py                       # 64 JPEGs, center view, batch 32
    python benchmarks/bench_score_images.py --view-policy five_crop --images 32

Writes `--images` random-looking 1024x768 JPEGs and a ViT-B/16-sized UniQA model with random
weights to a temporary folder, then measures, each in a fresh process:

1. forward-only: the model loaded as `uniqa score` loads it, run on the already decoded and
   normalised views of every image, with the same batch size and view policy (the rate a free,
   instant decoder would allow);
2. end-to-end: `uniqa score FOLDER --workers W`, at the rate the command itself reports (model
   loading excluded), while its memory is sampled: the resident set of the main process, of the
   main process plus its decoding workers, and their proportional set size (pages shared after
   fork counted once).

Both run in fresh processes because a process's allocator history moves the CPU forward by up to
~20% (page faults of freshly mapped activation memory): the two rates compare like with like.

3. thin images: the time and traced peak memory of cutting the views of a 3x290 strip, which
   `UniQAImageProcessor.views` cuts without upscaling it whole (the whole upscale would be
   224x21653 pixels), against cropping the whole upscale as it was done before.

Target on the 2-core CPU machine: end-to-end >= 0.85x forward-only with 2 workers, peak memory
under 2 GB at batch 32 in float32.
"""

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np
import psutil
import torch
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from modeling_uniqa import UniQAConfig, UniQAImageProcessor, UniQAModel, load_image  # noqa: E402
from modeling_uniqa.clip_tokenizer import build_clip_tokenizer  # noqa: E402
from modeling_uniqa.core.runtime import DTYPES  # noqa: E402
from modeling_uniqa.processing_uniqa import crop_boxes  # noqa: E402

VIT_B16_VISION = {
    "image_size": 224,
    "patch_size": 16,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
}
GIB = 2**30


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="Number of 1024x768 JPEGs (default 64).")
    parser.add_argument("--view-policy", default="center", help="View policy of both measurements (default center: 1 view an image; random10 is ~10x slower).")
    parser.add_argument("--batch-size", type=int, default=32, help="Views per forward, as in `uniqa score` (default 32).")
    parser.add_argument("--workers", type=int, default=2, help="Decoding workers of the end-to-end run (default 2).")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--repeats", type=int, default=3, help="Measure both rates this many times, alternating, and keep the best of each (default 3).")
    parser.add_argument("--forward-only", metavar="WORKDIR", help=argparse.SUPPRESS)  # the forward-only child process
    return parser.parse_args(argv)


def write_jpeg(path: str, seed: int, width: int = 1024, height: int = 768) -> None:
    """A photo-like JPEG: smooth colour fields plus fine noise, so it decodes like a real photo."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 32, width // 32, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
    noisy = np.clip(smooth + rng.integers(-12, 13, size=smooth.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path, quality=90)


def write_jpegs(folder: str, count: int, width: int = 1024, height: int = 768, processes: int = 1) -> list:
    """`count` photo-like JPEGs `photo_NNNNN.jpg` in `folder` (image i seeded with i), written by
    `processes` processes. Returns their paths."""
    jobs = [(os.path.join(folder, f"photo_{index:05d}.jpg"), index, width, height) for index in range(count)]
    if processes > 1:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            pool.starmap(write_jpeg, jobs, chunksize=16)
    else:
        for job in jobs:
            write_jpeg(*job)
    return [job[0] for job in jobs]


def write_model(folder: str, view_policy: str, vision: dict | None = None, text: dict | None = None) -> None:
    """A UniQA model with random weights and the `natural` prompt ensemble: ViT-B/16-sized unless
    `vision` / `text` give other CLIP sub-configs (a tiny one for smoke runs)."""
    torch.manual_seed(0)
    clip_config = {"vision_config": vision or VIT_B16_VISION, "projection_dim": 512}
    if text:
        clip_config["text_config"] = text
    config = UniQAConfig(clip_config=clip_config, prompt_groups="natural", view_policy=view_policy, mos_range=[1, 5])
    model = UniQAModel(config).eval()
    model.set_prompts(None, build_clip_tokenizer())
    model.save_pretrained(folder)


def measure_forward_only(workdir: str, args) -> tuple:
    """(images, seconds) of the model alone on pre-computed views, batched as `uniqa score` does."""
    model_dir, image_dir = os.path.join(workdir, "model"), os.path.join(workdir, "images")
    model = UniQAModel.from_pretrained(model_dir, dtype=DTYPES[args.dtype]).eval()
    processor = UniQAImageProcessor.from_pretrained(model_dir)
    paths = sorted(os.path.join(image_dir, name) for name in os.listdir(image_dir))
    views = [processor.normalize_views(processor.views(load_image(path), args.view_policy)) for path in paths]
    per_batch = max(1, args.batch_size // len(views[0]))  # `--batch-size` counts views, as in `uniqa score`
    batches = [torch.from_numpy(np.stack(views[start : start + per_batch])) for start in range(0, len(views), per_batch)]
    with torch.inference_mode():
        start = time.perf_counter()
        for pixel_values in batches:
            model(pixel_values=pixel_values)
        return len(paths), time.perf_counter() - start


def run_sampling_memory(command: list) -> tuple:
    """Run `command`, sampling the memory of its process tree. Returns (output, peaks in bytes)."""
    process = psutil.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT)
    peaks = {"main_rss": 0, "tree_rss": 0, "tree_pss": 0}
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            infos = [member.memory_full_info() for member in tree]
        except psutil.Error:  # a worker came or went while being read
            continue
        peaks["main_rss"] = max(peaks["main_rss"], infos[0].rss)
        peaks["tree_rss"] = max(peaks["tree_rss"], sum(info.rss for info in infos))
        peaks["tree_pss"] = max(peaks["tree_pss"], sum(info.pss for info in infos))
        time.sleep(0.5)  # reading PSS costs ~5 ms a process: sample sparsely so as not to slow the run
    output = process.stdout.read()
    if process.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed with exit code {process.returncode}:\n{output}")
    return output, peaks


def rate_in_output(output: str) -> float:
    """Images/s from the `... N images in T s` line both measurements print."""
    match = re.search(r"(\d+) images in ([\d.]+) s", output)
    if match is None:
        raise RuntimeError(f"no rate in the output:\n{output}")
    return int(match.group(1)) / float(match.group(2))


def measure_thin_image(view_policy: str) -> None:
    """Views of a 3x290 strip: windowed (now) against cropping the whole bicubic upscale (before)."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(290, 3, 3), dtype=np.uint8))
    processor = UniQAImageProcessor()
    size = (224, round(290 * 224 / 3))

    def whole_upscale():
        pixels = np.asarray(image.resize(size, Image.BICUBIC))
        return [pixels[top : top + 224, left : left + 224] for left, top, _ in crop_boxes(*size, 224, view_policy, 0)]

    for name, cut in (("windowed views", lambda: processor.views(image, view_policy, 0)), ("whole upscale, then crops", whole_upscale)):
        tracemalloc.start()
        started = time.perf_counter()
        cut()
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"thin 3x290 image, {view_policy}, {name}: {1000 * seconds:.0f} ms, traced peak {peak / 2**20:.1f} MiB")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.forward_only:
        images, seconds = measure_forward_only(args.forward_only, args)
        print(f"forward only: {images} images in {seconds:.3f} s")
        return
    common = ["--batch-size", str(args.batch_size), "--view-policy", args.view_policy, "--dtype", args.dtype]
    with tempfile.TemporaryDirectory() as workdir:
        image_dir, model_dir = os.path.join(workdir, "images"), os.path.join(workdir, "model")
        os.makedirs(image_dir)
        write_jpegs(image_dir, args.images)
        write_model(model_dir, args.view_policy)
        print(f"{args.images} JPEGs 1024x768, ViT-B/16 random weights, view policy {args.view_policy}, "
              f"batch {args.batch_size}, {args.dtype}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}")
        forward_command = [sys.executable, os.path.abspath(__file__), "--forward-only", workdir, *common]
        score_command = [
            sys.executable, "-m", "modeling_uniqa.cli", "score", image_dir, "--model", model_dir,
            "--output", os.path.join(workdir, "scores.csv"), "--workers", str(args.workers), *common,
        ]
        # The CPU is shared (other programs, other virtual machines on the host): alternate the
        # two measurements and keep the best of each.
        forward_rates, end_to_end_rates, peaks = [], [], {}
        for repeat in range(1, args.repeats + 1):
            output = subprocess.run(forward_command, capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout
            forward_rates.append(rate_in_output(output))
            started = time.perf_counter()
            output, run_peaks = run_sampling_memory(score_command)
            wall = time.perf_counter() - started
            end_to_end_rates.append(rate_in_output(output))
            peaks = {key: max(value, peaks.get(key, 0)) for key, value in run_peaks.items()}
            print(f"run {repeat}: forward only {forward_rates[-1]:.2f} images/s, end to end ({args.workers} workers) "
                  f"{end_to_end_rates[-1]:.2f} images/s, ratio {end_to_end_rates[-1] / forward_rates[-1]:.3f} "
                  f"({wall:.1f} s for the whole command, start-up and model loading included)")
        forward_rate, end_to_end_rate = max(forward_rates), max(end_to_end_rates)
        print(f"best: forward only {forward_rate:.2f} images/s, end to end {end_to_end_rate:.2f} images/s")
        print(f"ratio end-to-end / forward-only: {end_to_end_rate / forward_rate:.3f} (target >= 0.85)")
        print(f"peak memory: main process RSS {peaks['main_rss'] / GIB:.2f} GiB, main + workers RSS "
              f"{peaks['tree_rss'] / GIB:.2f} GiB, PSS {peaks['tree_pss'] / GIB:.2f} GiB (target < 2 GB)")
    measure_thin_image("random10")


if __name__ == "__main__":
    main()
