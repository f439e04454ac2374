"""Benchmark the curation-scale paths: images/s through tar shards, `datasets` and Ray Data,
against `uniqa score` on the same images extracted to a folder.

    python benchmarks/bench_curation.py                      # 2000 JPEGs of 96x128, 3 shards, tiny model
    python benchmarks/bench_curation.py --images 2000 --shards 8 --workers 2 --no-ray

Writes `--images` JPEGs and a tiny random UniQA model (the tests' builder: 32-pixel views, the
model's random10 policy) to a temporary folder, the same JPEG bytes in `--shards` img2dataset-
style tars, and a `datasets` folder of the same bytes. Then times, each end to end in this
process (model loading included; it is small for the tiny model):

1. `uniqa score FOLDER --output x.csv --workers W` (the baseline);
2. `uniqa score shards/{..}.tar --output DIR --workers W` (streamed tars, Parquet per shard);
3. `score_dataset(ds, num_proc=None)` and with `num_proc=W` (decode and forward in map processes);
4. Ray Data local mode (`map_batches(UniQAScorer, concurrency=1)`), if `ray` is installed.

Target: the tar path is not slower than the folder path (ratio >= 1.0 within noise). With a
tiny model the forward is cheap, so the figures mostly measure reading and decoding; on a
shared machine they are noisy: run it on a quiet machine for figures to compare.
"""

import argparse
import logging
import os
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from datasets import Dataset, Image  # noqa: E402

from modeling_uniqa.cli import main as uniqa  # noqa: E402
from modeling_uniqa.scoring.score_datasets import score_dataset  # noqa: E402
from tests.curation_data import write_jpegs, write_shard  # noqa: E402
from tests.helpers import build_tiny_tokenizer, save_tiny_uniqa  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=96, help="Image height (width: +32 pixels).")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="Decoding workers (tar, folder) and map processes.")
    parser.add_argument("--batch-size", type=int, default=64, help="Views per forward.")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads of the scoring process (default 1: with a tiny model, thread synchronisation on a busy "
        "2-core machine costs ~10x the forward, which would hide the data paths; map processes always use 1).",
    )
    parser.add_argument("--no-ray", action="store_true", help="Skip the Ray Data path.")
    return parser.parse_args(argv)


def timed(label: str, images: int, function) -> float:
    start = time.perf_counter()
    function()
    seconds = time.perf_counter() - start
    print(f"{label:<44} {images / seconds:8.1f} images/s  ({seconds:.1f} s)", flush=True)
    return images / seconds


def main(args) -> None:
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as root:
        model = save_tiny_uniqa(os.path.join(root, "model"), build_tiny_tokenizer(), prompt_groups="natural", mos_range=[0, 100])
        paths = write_jpegs(os.path.join(root, "images"), args.images, size=args.size)
        samples = []
        for path in paths:
            with open(path, "rb") as handle:
                samples.append((os.path.basename(path)[:-4], handle.read()))
        per_shard = -(-len(samples) // args.shards)
        for shard in range(args.shards):
            write_shard(os.path.join(root, f"{shard:05d}.tar"), samples[shard * per_shard : (shard + 1) * per_shard])
        pattern = os.path.join(root, f"{{00000..{args.shards - 1:05d}}}.tar")
        dataset = Dataset.from_dict({"image": [{"bytes": data, "path": None} for _, data in samples]}).cast_column("image", Image())
        common = ["--model", model, "--workers", str(args.workers), "--batch-size", str(args.batch_size)]
        print(f"{args.images} JPEGs of {args.size}x{args.size + 32}, {args.shards} shards, tiny model, {os.cpu_count()} CPUs, {args.threads} torch thread(s)")

        folder = timed("uniqa score FOLDER (baseline)", args.images, lambda: uniqa(["score", os.path.join(root, "images"), "--output", os.path.join(root, "f.csv"), *common]))
        tar = timed("uniqa score SHARDS.tar", args.images, lambda: uniqa(["score", pattern, "--output", os.path.join(root, "tar_out"), *common]))
        timed("score_dataset (in process)", args.images, lambda: score_dataset(dataset, model, batch_size=args.batch_size))
        timed(f"score_dataset (num_proc={args.workers})", args.images, lambda: score_dataset(dataset, model, num_proc=args.workers, batch_size=args.batch_size))
        if not args.no_ray:
            try:
                import ray
            except ImportError:
                print("ray: not installed (pip install 'uniqa-hf[ray]')")
            else:
                from modeling_uniqa.scoring.ray_scorer import UniQAScorer

                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
                try:
                    items = ray.data.from_items([{"key": key, "jpg": data} for key, data in samples])
                    kwargs = {"model_dir": model, "image_column": "jpg", "key_column": "key", "batch_size": args.batch_size}
                    timed("Ray Data map_batches (concurrency=1)", args.images, lambda: items.map_batches(
                        UniQAScorer, fn_constructor_kwargs=kwargs, concurrency=1, num_cpus=1, batch_size=64).drop_columns(["jpg"]).materialize())
                finally:
                    ray.shutdown()
        print(f"tar / folder: {tar / folder:.2f}x (target >= 1.0; noisy on a shared machine)")


if __name__ == "__main__":
    main(parse_args())
