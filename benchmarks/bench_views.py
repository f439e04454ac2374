"""What each test-time view policy costs per image, and what JPEG draft decoding saves and changes.

    python benchmarks/bench_views.py                                   # ViT-B/16 random weights (+ the demo model if built)
    python benchmarks/bench_views.py --demo-model demo-output/model    # after `make demo`
    python benchmarks/bench_views.py --parts c --repeats 3             # the end-to-end runs only

On `--photos` 1024x768 JPEGs (quality 90): scikit-image's public-domain / CC0 sample photographs
(those of `make demo`) scaled and cropped to 1024x768, each with one of the demo's distortions at
a cycling level so the scores spread, plus a little sensor-like noise (without scikit-image:
`bench_score_images.write_jpegs`' synthetic photos). Measured in this process with the real
decode path (`score_images.decode_views`, image by image) and forward (`Normalizer` + the model,
batched as `uniqa score`), malloc tuned as `uniqa score` tunes it:

(a) the demo model (`--demo-model`, `make demo`'s `demo-output/model`: 64x64 views; skipped when
    absent) and (b) a ViT-B/16-sized UniQA with random weights: per view policy (`center`,
    `five_crop`, `ten_crop`, `random10`, `resize`, and `resize` with `--jpeg-draft`), the decode +
    views time and the forward time per image (`--batch-size` views per forward, as `uniqa
    score`), and the resulting images/s of one process doing both in turn;
(d) draft decoding's effect on the scores against full decoding, per model: the largest and the
    mean absolute score change, the spread (std) of the scores over the photos for scale, and
    the Spearman correlation of the two rankings;
(c) end to end at ViT-B/16 size: `uniqa score`'s loop (`view_loader` with `--workers` decoding
    processes + `score_batch`) for `center`, `resize` and `resize` with draft decoding, against
    the forward alone on pre-decoded views, alternated `--repeats` times (best kept). Printed
    with every run's rate, so that interference from other programs shows. Target: >= 0.9x
    forward-only.

Figures on a shared machine are noisy: run it twice before trusting a difference under ~10%.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

from bench_score_images import write_jpegs, write_model  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from modeling_uniqa.configuration_uniqa import view_count  # noqa: E402
from modeling_uniqa.core.cpu_runtime import describe_cpu, malloc_tuning_wanted, tune_malloc  # noqa: E402
from modeling_uniqa.scoring.score_images import (  # noqa: E402
    Normalizer,
    decode_views,
    load_scorer,
    output_columns,
    score_batch,
    view_loader,
)

POLICIES = ("center", "five_crop", "ten_crop", "random10", "resize")
WIDTH, HEIGHT = 1024, 768


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-model", default=os.path.join(REPO_ROOT, "demo-output", "model"), help="The demo's model folder (default demo-output/model; skipped when absent).")
    parser.add_argument("--photos", type=int, default=32, help="1024x768 JPEGs written; the end-to-end runs score them all (default 32).")
    parser.add_argument("--images", type=int, default=4, help="Images timed per view policy at ViT-B/16 size (~0.2 s a view on 2 cores; default 4).")
    parser.add_argument("--error-images", type=int, default=8, help="Images on which ViT-B/16's draft score error is measured (default 16; the demo model uses all).")
    parser.add_argument("--batch-size", type=int, default=32, help="Views per forward, as `uniqa score --batch-size` (default 32).")
    parser.add_argument("--workers", type=int, default=2, help="Decoding workers of the end-to-end runs (default 2).")
    parser.add_argument("--e2e-batch-size", type=int, default=8, help="--batch-size of the end-to-end runs (default 8: several batches per worker from few images).")
    parser.add_argument("--repeats", type=int, default=2, help="End-to-end measurements, alternated, best kept (default 2).")
    parser.add_argument("--parts", default="abcd", help="Which parts to run, e.g. `c` for the end-to-end runs only (default abcd).")
    return parser.parse_args(argv)


def write_photos(folder: str, count: int) -> str:
    """`count` 1024x768 JPEGs of distorted sample photographs (see the module docstring). Returns what they are."""
    try:
        from train_scripts.common.demo_images import DISTORTIONS, LEVELS, REFERENCES, distort, load_references

        references = load_references(HEIGHT, len(REFERENCES))
    except ImportError:  # no scikit-image: synthetic photo-like JPEGs
        write_jpegs(folder, count, WIDTH, HEIGHT)
        return "synthetic photo-like JPEGs (smooth colour fields + noise; scikit-image absent)"
    rng = np.random.default_rng(0)
    for index in range(count):
        _, reference = references[index % len(references)]
        scale = max(WIDTH / reference.width, HEIGHT / reference.height)
        image = reference.resize((round(reference.width * scale), round(reference.height * scale)), Image.LANCZOS)
        left, top = (image.width - WIDTH) // 2, (image.height - HEIGHT) // 2
        image = image.crop((left, top, left + WIDTH, top + HEIGHT))
        kind, level = DISTORTIONS[index % len(DISTORTIONS)], 1 + (index // len(DISTORTIONS)) % LEVELS
        image = distort(image, kind, level, rng)
        grain = np.asarray(image, dtype=np.float32) + rng.normal(0, 2.0, size=(HEIGHT, WIDTH, 3))
        Image.fromarray(np.clip(grain, 0, 255).round().astype(np.uint8)).save(os.path.join(folder, f"photo_{index:04d}.jpg"), quality=90)
    return "scikit-image sample photographs (public domain / CC0), distorted as in `make demo`, plus noise sigma 2"


def decode_all(paths: list, processor, policy: str, seed: int) -> tuple:
    """uint8 views of every path (the `uniqa score` decode path) and the seconds it took."""
    decode_views(paths[0], processor, policy, seed, paths[0])  # warm-up: imports, PIL plug-ins
    start = time.perf_counter()
    decoded = [decode_views(path, processor, policy, seed, path) for path in paths]
    seconds = time.perf_counter() - start
    errors = [error for _, error, _ in decoded if error]
    if errors:
        raise RuntimeError(f"decoding failed: {errors[0]}")
    return torch.stack([views for views, _, _ in decoded]), seconds


def forward_all(model, processor, views: torch.Tensor, batch_size: int) -> tuple:
    """Scores of `views` (images, views, crop, crop, 3) in forwards of `batch_size` views, and the seconds they took."""
    normalize = Normalizer(processor, torch.device("cpu"))
    per_forward = max(1, batch_size // views.shape[1])
    with torch.inference_mode():
        if not getattr(model, "_bench_warm", False):  # oneDNN builds its kernels on the first calls
            model(pixel_values=normalize(views[:1, :1]))
            model._bench_warm = True
        start = time.perf_counter()
        scores = torch.cat([model(pixel_values=normalize(views[i : i + per_forward])).scores for i in range(0, len(views), per_forward)])
        return scores.float(), time.perf_counter() - start


def policy_costs(name: str, model, processor, paths: list, batch_size: int) -> None:
    """Part (a)/(b): per policy, decode + views and forward time per image."""
    seed = model.config.view_seed
    print(f"\n{name}: {processor.crop_size}x{processor.crop_size} views, {len(paths)} images per policy, batch {batch_size} views")
    print(f"  {'policy':<18}{'views':>6}{'decode+views ms/img':>22}{'forward ms/img':>17}{'images/s':>10}")
    forward_per_image = {}
    for policy in (*POLICIES, "resize+draft"):
        processor.jpeg_draft = policy.endswith("+draft")
        base = policy.removesuffix("+draft")
        views, decode_seconds = decode_all(paths, processor, base, seed)
        if base not in forward_per_image:  # the draft's views cost the same forward
            forward_per_image[base] = forward_all(model, processor, views, batch_size)[1] / len(paths)
        decode, forward = decode_seconds / len(paths), forward_per_image[base]
        print(f"  {policy:<18}{view_count(base):>6}{1000 * decode:>22.1f}{1000 * forward:>17.1f}{1 / (decode + forward):>10.2f}")
    processor.jpeg_draft = False


def draft_error(name: str, model, processor, paths: list, batch_size: int, shortest_edge: int | None = None) -> None:
    """Part (d): scores with draft decoding against full decoding (resize views, or center views after `shortest_edge`)."""
    policy = "center" if shortest_edge else "resize"
    processor.shortest_edge = shortest_edge
    scores, seconds = {}, {}
    for draft in (False, True):
        processor.jpeg_draft = draft
        views, seconds[draft] = decode_all(paths, processor, policy, model.config.view_seed)
        scores[draft] = forward_all(model, processor, views, batch_size)[0].numpy()
    processor.jpeg_draft, processor.shortest_edge = False, None
    change = np.abs(scores[True] - scores[False])
    setting = f"center after shortest_edge={shortest_edge}" if shortest_edge else "resize"
    print(f"  {name}, {setting}, {len(paths)} images: |score change| max {change.max():.1e} mean {change.mean():.1e} "
          f"(score std {scores[False].std():.1e}), Spearman {spearmanr(scores[False], scores[True])[0]:.4f}; "
          f"decode+views {1000 * seconds[False] / len(paths):.1f} -> {1000 * seconds[True] / len(paths):.1f} ms/img "
          f"({seconds[False] / seconds[True]:.2f}x)")


def timed(function) -> float:
    """Wall-clock seconds of `function()`."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def end_to_end(model, processor, paths: list, args) -> None:
    """Part (c): `uniqa score`'s loop (`view_loader` with worker processes + `score_batch`)
    against the forward alone on pre-decoded views, alternated `--repeats` times, best kept."""
    cpu_device, seed, columns = torch.device("cpu"), model.config.view_seed, output_columns(model, None)
    normalize = Normalizer(processor, cpu_device)
    views = decode_all(paths, processor, "center", seed)[0]
    per_forward = max(1, args.e2e_batch_size)  # one view an image

    def forward_only():
        with torch.inference_mode():
            for start in range(0, len(views), per_forward):
                model(pixel_values=normalize(views[start : start + per_forward]))

    def scoring(policy: str, draft: bool):
        def run():
            processor.jpeg_draft = draft  # before the loader forks its workers
            loader = view_loader(paths, processor, policy, seed, args.e2e_batch_size, args.workers, cpu_device)
            with torch.inference_mode():
                for batch in loader:
                    score_batch(model, normalize, batch, paths, columns)
            processor.jpeg_draft = False

        return run

    runs = {"forward only (pre-decoded)": forward_only, "center": scoring("center", False), "resize": scoring("resize", False),
            "resize --jpeg-draft": scoring("resize", True)}
    measured = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            measured[name].append(timed(run))
    rates = {name: [len(paths) / seconds for seconds in values] for name, values in measured.items()}
    forward_rates = rates.pop("forward only (pre-decoded)")
    print(f"\n(c) ViT-B/16, {len(paths)} images, {args.workers} workers, batch {args.e2e_batch_size} views, best of {args.repeats}: "
          f"forward only {max(forward_rates):.2f} images/s (runs {', '.join(f'{rate:.2f}' for rate in forward_rates)})")
    for name, values in rates.items():
        print(f"  uniqa score {name:<20} {max(values):6.2f} images/s  ratio {max(values) / max(forward_rates):.3f} "
              f"(target >= 0.9; runs {', '.join(f'{rate:.2f}' for rate in values)})")


def main(args) -> None:
    torch.manual_seed(0)
    tuned = malloc_tuning_wanted() and tune_malloc()  # as `uniqa score` does on the CPU (UNIQA_MALLOC_TUNING=0: off)
    print(f"{describe_cpu()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, malloc tuning {'on' if tuned else 'off'}")
    with tempfile.TemporaryDirectory() as workdir:
        image_dir = os.path.join(workdir, "images")
        os.makedirs(image_dir)
        started = time.perf_counter()
        what = write_photos(image_dir, args.photos)
        paths = sorted(os.path.join(image_dir, name) for name in os.listdir(image_dir))
        print(f"{len(paths)} JPEGs {WIDTH}x{HEIGHT} quality 90: {what} ({time.perf_counter() - started:.0f} s to write)")

        demo = None
        if os.path.isfile(os.path.join(args.demo_model, "config.json")):
            demo = load_scorer(args.demo_model, torch.float32, torch.device("cpu"))
        elif "a" in args.parts:
            print(f"\n(a) skipped: no demo model at {args.demo_model} (run `make demo`, or pass --demo-model)")
        if demo is not None and "a" in args.parts:
            policy_costs(f"(a) demo model {args.demo_model}", *demo, paths, args.batch_size)
        write_model(os.path.join(workdir, "model"), "center")
        vit = load_scorer(os.path.join(workdir, "model"), torch.float32, torch.device("cpu"))
        if "b" in args.parts:
            policy_costs("(b) ViT-B/16, random weights", *vit, paths[: args.images], args.batch_size)
        if "d" in args.parts:
            print("\n(d) JPEG draft decoding against full decoding")
            if demo is not None:
                draft_error("demo model", *demo, paths, args.batch_size)
            draft_error("ViT-B/16 random", *vit, paths[: args.error_images], args.batch_size)
            draft_error("ViT-B/16 random", *vit, paths[: args.error_images], args.batch_size, shortest_edge=256)
        if "c" in args.parts:
            end_to_end(*vit, paths, args)


if __name__ == "__main__":
    main(parse_args())
