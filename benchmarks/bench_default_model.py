#!/usr/bin/env python
"""The shipped default model (UniQA-Tiny) beside BRISQUE, on photos and distortion settings it never saw.

    python benchmarks/bench_default_model.py [--model DIR] [--sources mate-backgrounds scikit-image ...]

Photos: the recipe's held-out sources (`train_scripts/common/photo_sources.py`; Debian packages
are fetched into `--cache_dir` with `apt-get download`), resized to a short side of 512 px.
`--sources palapeli-data` checks on photos that neither the recipe (for training or held-out
figures) nor the demo ever reads: KDE's jigsaw photographs. Distortions, each at 5 levels, with implementations and parameters
that differ from the training corpus (`common/synthetic_distortions.py`):

* blur: `scipy.ndimage.gaussian_filter`, sigma 0.7 .. 4.0 (training: PIL's box-approximated blur, 0.5 .. 3.2);
* JPEG: PIL with 4:4:4 chroma (training: 4:2:0), quality 60 .. 7;
* noise: one Gaussian field added to all three channels (grey noise; training: per channel), sigma 5 .. 36;
* pixelation: bilinear down, nearest up (training: box down), factor 1.8 .. 7.5.

Prints, per distortion and overall, the SRCC / PLCC of the model and of BRISQUE against a
full-reference pseudo-MOS (GMSD, as the recipe), the SRCC against the level within each kind,
and the share of adjacent levels of one photo whose score falls; then the scoring speed of
`uniqa score` with the model's default views on 1024x768 JPEGs (images/s, model load excluded).

Ten random views per image make the overall figure depend on where they fall: `--view_seeds 123 1 2 3 4`
scores the same images under each seed of the crop positions (the table is the first seed's) and
prints the overall SRCC and the blur and noise "falls" of every seed, with their mean and range.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image
from scipy import ndimage

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from modeling_uniqa import DEFAULT_MODEL  # noqa: E402
from train_scripts.common.full_reference import pseudo_mos  # noqa: E402
from train_scripts.common.metrics import srcc  # noqa: E402
from train_scripts.common.photo_sources import BENCHMARK_ONLY_SOURCES, SOURCES, load_source  # noqa: E402
from train_scripts.common.quality_report import Brisque, RatedImage, distortion_metrics, markdown_table  # noqa: E402

SETTINGS = {
    "blur": (0.7, 1.2, 1.8, 2.7, 4.0),
    "JPEG": (60, 38, 22, 13, 7),
    "noise": (5.0, 10.0, 16.0, 24.0, 36.0),
    "pixelation": (1.8, 2.6, 3.6, 5.0, 7.5),
}


def distort(image: Image.Image, kind: str, value: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    if kind == "blur":
        return Image.fromarray(np.clip(ndimage.gaussian_filter(pixels, sigma=(value, value, 0)), 0, 255).round().astype(np.uint8))
    if kind == "JPEG":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(value), subsampling=0)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "noise":
        field = rng.normal(0.0, value, size=pixels.shape[:2])[..., None]
        return Image.fromarray(np.clip(pixels + field, 0, 255).round().astype(np.uint8))
    if kind == "pixelation":
        small = image.resize((max(1, round(image.width / value)), max(1, round(image.height / value))), Image.BILINEAR)
        return small.resize(image.size, Image.NEAREST)
    raise ValueError(kind)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--sources", nargs="+", default=["mate-backgrounds", "lomiri-wallpapers-20.04", "scikit-image"],
                        choices=[source.name for source in SOURCES + BENCHMARK_ONLY_SOURCES])
    parser.add_argument("--cache_dir", default=os.path.join(os.path.expanduser("~"), ".cache", "uniqa-photos"))
    parser.add_argument("--short_side", type=int, default=512)
    parser.add_argument("--max_photos", type=int, default=None, help="Per source.")
    parser.add_argument("--speed_images", type=int, default=1000, help="JPEGs timed for the speed figure (0: skip; 1,000: about 15 s of scoring, so the +-1 s of model loading weighs little).")
    parser.add_argument("--view_policy", default=None, help="Test-time views (default: the model's own, e.g. random10).")
    parser.add_argument("--skip_brisque", action="store_true", help="Score the model only (BRISQUE takes most of the time).")
    parser.add_argument("--view_seeds", type=int, nargs="+", default=None,
                        help="Seeds of the views' crop positions (default: the model's own); the table shows the first.")
    parser.add_argument("--seed", type=int, default=2026, help="Seed of the distortions' noise.")
    return parser.parse_args(argv)


def photos_of(args) -> list:
    photos = []
    for source in SOURCES + BENCHMARK_ONLY_SOURCES:
        if source.name in args.sources:
            for photo in load_source(source, args.cache_dir)[: args.max_photos]:
                scale = args.short_side / min(photo.image.size)
                size = (round(photo.image.width * scale), round(photo.image.height * scale))
                photos.append((f"{source.name}:{os.path.basename(photo.path)}", photo.image.resize(size, Image.LANCZOS)))
    return photos


def speed(model: str, count: int, folder: str, view_policy: str | None = None, repeats: int = 3) -> float:
    """images/s of `uniqa score` on `count` 1024x768 JPEGs with `view_policy` (default: the model's), the
    model's load subtracted (a run on 1 image). Loading takes about 5 s and varies by +-1 s from run
    to run, as much as scoring 100 images: each run is timed `repeats` times and the fastest kept."""
    rng = np.random.default_rng(0)
    base = np.asarray(Image.open(os.path.join(folder, "0000.png")).convert("RGB").resize((1024, 768)), dtype=np.float32)
    jpegs = os.path.join(folder, "jpegs")
    os.makedirs(jpegs, exist_ok=True)
    for i in range(count):
        noisy = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(os.path.join(jpegs, f"{i:04d}.jpg"), quality=90)

    def fastest(inputs):
        views = ["--view-policy", view_policy] if view_policy else []
        times = []
        for repeat in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "modeling_uniqa.cli", "score", *inputs, "--model", model, *views, "--output",
                            os.path.join(folder, f"scores-{len(inputs)}-{repeat}.csv")], check=True, capture_output=True, cwd=REPO_ROOT)
            times.append(time.perf_counter() - start)
        return min(times)

    one = fastest([os.path.join(jpegs, "0000.jpg")])
    many = fastest([os.path.join(jpegs, f"{i:04d}.jpg") for i in range(count)])
    return (count - 1) / max(many - one, 1e-9)


def view_seed_summary(rows: list) -> str:
    """`rows` of (seed, overall SRCC, blur falls, noise falls) -> one line each, then their mean and range."""
    lines = [f"  view seed {seed:>6}: SRCC {value:.4f}, blur falls {blur:.1%}, noise falls {noise:.1%}" for seed, value, blur, noise in rows]
    for column, name in ((1, "SRCC"), (2, "blur falls"), (3, "noise falls")):
        values = np.array([row[column] for row in rows])
        lines.append(f"  {name:11s} mean {values.mean():.4f}, min {values.min():.4f}, max {values.max():.4f}")
    return "\n".join(lines)


def main(args) -> int:
    from transformers import pipeline

    rng = np.random.default_rng(args.seed)
    photos = photos_of(args)
    scorer = pipeline("image-quality", model=args.model)
    brisque = None if args.skip_brisque else Brisque()
    view_seeds = list(dict.fromkeys(args.view_seeds or [None]))  # a seed given twice is scored once
    call_options = {} if args.view_policy is None else {"view_policy": args.view_policy}
    items = {seed: [] for seed in view_seeds}
    level_srcc = {kind: [] for kind in SETTINGS}
    with tempfile.TemporaryDirectory() as folder:
        for index, (name, reference) in enumerate(photos):
            reference.save(os.path.join(folder, f"{index:04d}.png"))
            pixels = np.asarray(reference)
            for kind, values in SETTINGS.items():
                images = [distort(reference, kind, value, rng) for value in values]
                targets = [np.asarray(image) for image in images]
                labels = [pseudo_mos(pixels, target) for target in targets]
                brisque_scores = [None if brisque is None else brisque.quality(target) for target in targets]
                for seed in view_seeds:
                    seed_options = call_options | ({} if seed is None else {"view_seed": seed})
                    scores = [out["score"] for out in scorer(images, batch_size=len(images), **seed_options)]
                    if seed == view_seeds[0]:
                        level_srcc[kind].append(srcc(scores, -np.arange(len(values))))
                    for level, (label, score, other) in enumerate(zip(labels, scores, brisque_scores), start=1):
                        items[seed].append(RatedImage(name, kind, level, label, {"UniQA-Tiny": float(score)}
                                                      | ({} if other is None else {"BRISQUE": other})))
        methods = ["UniQA-Tiny"] + ([] if brisque is None else ["BRISQUE"])
        reports = {seed: distortion_metrics(seed_items, methods) for seed, seed_items in items.items()}
        report = reports[view_seeds[0]]
        print(f"{len(photos)} unseen photos x {len(SETTINGS)} distortions x 5 levels; reference: GMSD pseudo-MOS\n")
        print(markdown_table(report))
        print("\nSRCC against the level within each photo and kind (mean over photos):")
        for kind, values in level_srcc.items():
            print(f"  {kind:11s} {np.mean(values):.3f}")
        print("\noverall SRCC: " + ", ".join(f"{method} {report[method]['overall']['srcc']:.4f}" for method in methods))
        for kind in ("blur", "noise"):
            print(f"score falls with each step of {kind}: {report['UniQA-Tiny']['kinds'][kind]['falling_pairs']:.1%} of adjacent-level pairs")
        if len(view_seeds) > 1:
            figures = {seed: reports[seed]["UniQA-Tiny"] for seed in view_seeds}
            print(f"\nUniQA-Tiny under {len(view_seeds)} seeds of the view positions:")
            print(view_seed_summary([(seed, f["overall"]["srcc"], f["kinds"]["blur"]["falling_pairs"], f["kinds"]["noise"]["falling_pairs"])
                                     for seed, f in figures.items()]))
        if args.speed_images > 1:
            print(f"speed: {speed(args.model, args.speed_images, folder, args.view_policy):.1f} images/s (uniqa score, 1024x768 JPEGs, "
                  f"{args.view_policy or 'default'} views, "
                  f"{os.cpu_count()} CPU cores, model load excluded)")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
