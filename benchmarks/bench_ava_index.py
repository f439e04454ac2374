"""Benchmark: index a full-size AVA (255,530 lines, 255,530 placeholder images).

Generates ``AVA.txt`` (random votes), ``tags.txt``, ``challenges.txt``,
``aesthetics_image_lists/generic_test.jpgl`` (20,000 ids) and one empty placeholder file
per image in a temporary folder, then times

1. indexing: parsing the label files, the official split and finding every image on disk
   (what ``download_and_prepare`` does before writing Arrow), and
2. the whole ``download_and_prepare()`` + ``as_dataset()`` into a fresh cache.

No image may be opened: ``open``/``io.open`` and ``PIL.Image.open`` are watched and the run
fails if any ``.jpg`` is opened. Target: indexing under 30 s on the project's 2-core machine.

Usage: ``python benchmarks/bench_ava_index.py [--lines N] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import builtins
import io
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_builders import AVA  # noqa: E402


def generate(root: str, lines: int, n_test: int = 20000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    ids = 1 + rng.permutation(lines * 4)[:lines]
    votes = rng.integers(0, 40, size=(lines, 10))
    votes[:, 4] += 1  # at least one vote per image
    tags = rng.integers(0, 67, size=(lines, 2))
    challenges = rng.integers(1, 1400, size=lines)
    with open(os.path.join(root, "AVA.txt"), "w") as handle:
        for i in range(lines):
            fields = [i + 1, ids[i], *votes[i], *tags[i], challenges[i]]
            handle.write(" ".join(map(str, fields)) + "\n")
    with open(os.path.join(root, "tags.txt"), "w") as handle:
        handle.writelines(f"{t} Tag{t}\n" for t in range(1, 67))
    with open(os.path.join(root, "challenges.txt"), "w") as handle:
        handle.writelines(f"{c} Challenge{c}\n" for c in range(1, 1400))
    os.makedirs(os.path.join(root, "aesthetics_image_lists"))
    with open(os.path.join(root, "aesthetics_image_lists", "generic_test.jpgl"), "w") as handle:
        handle.writelines(f"{i}\n" for i in ids[: min(n_test, lines)])
    images = os.path.join(root, "images")
    os.makedirs(images)
    for image_id in ids:
        os.close(os.open(os.path.join(images, f"{image_id}.jpg"), os.O_CREAT | os.O_WRONLY, 0o644))


@contextmanager
def no_image_opened():
    """Fail if a .jpg is opened through open()/io.open() or PIL.Image.open()."""
    import PIL.Image

    opened = []
    real_open, real_pil = builtins.open, PIL.Image.open

    def watch(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and os.fsdecode(file).lower().endswith(".jpg"):
            opened.append(file)
        return real_open(file, *args, **kwargs)

    def refuse(*args, **kwargs):
        opened.append(args[0] if args else "?")
        raise AssertionError("an image was opened")

    builtins.open = io.open = watch
    PIL.Image.open = refuse
    try:
        yield opened
    finally:
        builtins.open = io.open = real_open
        PIL.Image.open = real_pil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=255530)
    parser.add_argument("--workdir", default=None, help="where to generate (default: a temporary folder)")
    args = parser.parse_args()

    import datasets

    datasets.disable_progress_bars()
    work = tempfile.mkdtemp(prefix="bench_ava_", dir=args.workdir)
    try:
        root = os.path.join(work, "AVA")
        os.makedirs(root)
        start = time.perf_counter()
        generate(root, args.lines)
        print(f"generated {args.lines:,} lines and placeholder images in {time.perf_counter() - start:.1f} s")

        with no_image_opened() as opened:
            start = time.perf_counter()
            builder = AVA(data_dir=root, cache_dir=os.path.join(work, "cache"))
            rows, _, source = builder._collect()
            rows = builder._attach_images([r for r in rows if r["_split"]], source)
            index_s = time.perf_counter() - start

            start = time.perf_counter()
            builder = AVA(data_dir=root, cache_dir=os.path.join(work, "cache"))
            builder.download_and_prepare()
            ds = builder.as_dataset()
            full_s = time.perf_counter() - start
        assert not opened, f"images were opened: {opened[:3]}"
        assert len(rows) == args.lines == sum(part.num_rows for part in ds.values())

        print(f"indexing:              {index_s:6.2f} s  {args.lines / index_s:10,.0f} rows/s  (target < 30 s)")
        print(f"download_and_prepare:  {full_s:6.2f} s  {args.lines / full_s:10,.0f} rows/s  (index + Arrow write)")
        print(f"splits: {{{', '.join(f'{k}: {v.num_rows:,}' for k, v in ds.items())}}}; images opened: {len(opened)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
