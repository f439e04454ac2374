#!/usr/bin/env python
"""UniQA-Tiny's quality corpus: real photographs from packages, distorted, in KADID-10k's layout.

    python train_scripts/make_quality_corpus.py --output_dir uniqa-tiny/data [--cache_dir ~/.cache/uniqa-photos]

1. Photos (`common/photo_sources.py`): Debian packages fetched with `apt-get download` into
   `--cache_dir` (no root needed) and scikit-image's samples; each photo's licence and copyright
   holder read from its package's copyright file.
2. Split by source: whole sources (`--heldout_sources`) are held out, the rest train.
3. References: each photo downscaled (Lanczos) so its short side is drawn from
   `--short_side LOW HIGH` (downscaling leaves a clean, sharp picture at several scales). With
   `--train_short_sides LOW:HIGH ...` each training photo gives one reference per range instead:
   the same scene at several scales, so training covers the pixel statistics of large pictures
   too (held-out references keep `--short_side`; a photo smaller than a further range's LOW gets
   no reference there, as photos are never upscaled).
4. Every reference distorted by each of `--codes` (KADID numbering, `common/synthetic_distortions.py`)
   at 5 levels; training images draw their parameter within +-`--jitter` levels of the anchor,
   and with `--vary_implementation` the implementation too (PIL's or a true Gaussian blur, JPEG's
   chroma subsampling, noise per channel or grey, pixelation's shrinking filter), so the model
   learns the distortion rather than one library's traces of it. Held-out images keep the anchors
   and the default implementations, so held-out figures stay comparable between recipes.
5. A full-reference pseudo-MOS on KADID's 1-5 scale from GMSD (`common/full_reference.py`;
   `--gmsd_exponent` below 1 spreads the top of the scale), and a vote spread in `var` as KADID has.

PNGs are stored uncompressed (`compress_level=0`): pre-training decodes every image once per
epoch, and a stored PNG decodes 4x faster than a deflated one (for about twice the disk).

Writes `train/` and `heldout/` (each `images/I001.png`, `images/I001_10_03.png`, ...,
`dmos.csv`), read by the `kadid10k` builder, and `SOURCES.md` (file, source, package version,
path inside the package, licence, copyright holder, split). Deterministic for a `--seed`.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from train_scripts.common.flags import ArgumentParser
from train_scripts.common.full_reference import kadid_row
from train_scripts.common.photo_sources import SOURCE_NAMES, SOURCES, PhotoSourceError, load_source
from train_scripts.common.synthetic_distortions import CODES, LEVELS, distort

DEFAULT_HELDOUT = ("mate-backgrounds", "lomiri-wallpapers-20.04", "scikit-image")
# Desaturation (07) is left out: a grey picture is not a worse one by any full-reference measure of detail.
DEFAULT_CODES = tuple(code for code in CODES if code != "07")


def _short_side_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH (two whole numbers of pixels), got {text!r}") from None
    if not 64 <= low <= high:
        raise argparse.ArgumentTypeError(f"needs 64 <= LOW <= HIGH, got {text!r}")
    return low, high


def _default_workers() -> int:
    return min(2, os.cpu_count() or 1)


@dataclass(kw_only=True)
class QualityCorpusArguments:
    """The command line of `make_quality_corpus.py`."""

    output_dir: str = field(metadata={"help": "Writes train/, heldout/ and SOURCES.md here."})
    cache_dir: str = field(default=os.path.join(os.path.expanduser("~"), ".cache", "uniqa-photos"),
                           metadata={"help": "Where the Debian packages are downloaded and unpacked."})
    heldout_sources: list[str] = field(default_factory=lambda: list(DEFAULT_HELDOUT), metadata={
        "choices": SOURCE_NAMES, "help": "Sources kept out of training and used for evaluation."})
    codes: list[str] = field(default_factory=lambda: list(DEFAULT_CODES), metadata={"choices": CODES, "help": "KADID distortion codes to apply."})
    short_side: tuple[int, int] = field(default=(224, 416), metadata={
        "type": int, "nargs": 2, "metavar": ("LOW", "HIGH"), "help": "Range of the references' short side, in pixels."})
    # None: one training reference per photo, from --short_side (filled in by __post_init__)
    train_short_sides: list[tuple[int, int]] | None = field(default=None, metadata={
        "type": _short_side_range, "nargs": "+", "metavar": "LOW:HIGH",
        "help": "Training references: one per photo and range (default: one, from --short_side)."})
    jitter: float = field(default=0.4, metadata={"help": "Training parameters drawn within +- this many levels."})
    gmsd_exponent: float = field(default=1.0, metadata={
        "help": "Pseudo-MOS = 5 - 4 * min(GMSD / 0.3, 1) ** this (common/full_reference.py): 1 is linear; below 1 slight "
        "distortions score clearly below a clean picture's 5. Rankings, and so the rank-quintile caption levels, do not change."})
    vary_implementation: bool = field(default=False, metadata={
        "help": "Training images draw each distortion's implementation (common/synthetic_distortions.py IMPLEMENTATIONS)."})
    max_photos: int | None = field(default=None, metadata={"help": "At most this many photos per source (smoke runs)."})
    workers: int = field(default_factory=_default_workers, metadata={"help": "Processes distorting images."})
    seed: int = 0

    def __post_init__(self) -> None:
        self.short_side = tuple(self.short_side)  # a list when given on the command line
        low, high = self.short_side
        if not 64 <= low <= high:
            raise ValueError(f"--short_side needs 64 <= LOW <= HIGH, got {low} {high}")
        self.train_short_sides = self.train_short_sides or [self.short_side]
        if not 0 <= self.jitter < 1:
            raise ValueError("--jitter must be in [0, 1)")
        if not 0 < self.gmsd_exponent <= 4:
            raise ValueError(f"--gmsd_exponent must be in (0, 4], got {self.gmsd_exponent}")
        if set(self.heldout_sources) >= set(SOURCE_NAMES):
            raise ValueError("--heldout_sources leaves no source to train on")


def parse_args(argv=None) -> QualityCorpusArguments:
    return ArgumentParser(QualityCorpusArguments, description=__doc__).parse(argv)


def make_reference(image: Image.Image, short_side: int) -> Image.Image:
    scale = short_side / min(image.size)
    if scale >= 1:
        return image.copy()
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.LANCZOS, reducing_gap=3.0)


def distort_reference(job) -> list[str]:
    """One reference -> its distorted images on disk; returns the dmos.csv rows."""
    folder, ref_name, reference_path, codes, jitter, vary_implementation, gmsd_exponent, seed = job
    reference = Image.open(reference_path).convert("RGB")
    pixels = np.asarray(reference)
    stem = os.path.splitext(ref_name)[0]
    rows = []
    for code in codes:
        for level in range(1, LEVELS + 1):
            rng = np.random.default_rng([seed, int(stem[1:]), int(code), level])
            image = distort(reference, code, level, rng, jitter, vary_implementation)
            name = f"{stem}_{code}_{level:02d}.png"
            image.save(os.path.join(folder, "images", name), compress_level=0)
            rows.append(kadid_row(name, ref_name, pixels, np.asarray(image), gmsd_exponent))
    return rows


def write_split(folder: str, photos: list, args: QualityCorpusArguments, short_sides: list, seed: int, jitter: float,
                vary_implementation: bool, first_index: int, desc: str) -> list[tuple]:
    """One reference per photo and short-side range, numbered from `first_index`, then their distortions."""
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    rng = np.random.default_rng([args.seed, seed])
    jobs, listing = [], []
    for photo in photos:
        for scale, (low, high) in enumerate(short_sides):
            if scale and min(photo.image.size) < low:
                continue  # never upscaled: a photo smaller than a further range would repeat its first reference
            ref_name = f"I{first_index + len(listing):03d}.png"
            reference = make_reference(photo.image, int(rng.integers(low, high + 1)))
            path = os.path.join(folder, "images", ref_name)
            reference.save(path, compress_level=0)
            jobs.append((folder, ref_name, path, tuple(args.codes), jitter, vary_implementation, args.gmsd_exponent, args.seed))
            listing.append((ref_name, photo, reference.size))
    rows = ["dist_img,ref_img,dmos,var"]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for result in tqdm(pool.map(distort_reference, jobs), total=len(jobs), desc=desc, unit="reference"):
            rows.extend(result)
    with open(os.path.join(folder, "dmos.csv"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(rows) + "\n")
    return listing


def write_sources(path: str, listings: dict) -> None:
    lines = [
        "# UniQA-Tiny reference photographs",
        "",
        "Each reference is a photo from a Debian package or scikit-image, downscaled; licence and copyright",
        "holder as the package's `copyright` file (DEP-5) states them for that path.",
        "",
        "| split | file | size | source | version | path in the package | licence | copyright |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, listing in listings.items():
        for ref_name, photo, size in listing:
            holder = photo.copyright.replace("|", "/")[:160] or "(see the package's copyright file)"
            where = f"{photo.notes['bundle']}:{photo.path}" if "bundle" in photo.notes else photo.path
            lines.append(f"| {split} | {ref_name} | {size[0]}x{size[1]} | {photo.source} | {photo.version} | `{where}` | {photo.licence or 'unknown'} | {holder} |")
    licences = sorted({photo.licence for listing in listings.values() for _, photo, _ in listing})
    lines += ["", f"Licences: {', '.join(licences)}."]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def main(args: QualityCorpusArguments) -> int:
    os.makedirs(args.output_dir, exist_ok=True)
    train, heldout = [], []
    for source in SOURCES:
        photos = load_source(source, args.cache_dir)[: args.max_photos]
        (heldout if source.name in args.heldout_sources else train).extend(photos)
        print(f"{source.name}: {len(photos)} photos -> {'held out' if source.name in args.heldout_sources else 'train'}")
    train_listing = write_split(os.path.join(args.output_dir, "train"), train, args, args.train_short_sides, 1, args.jitter,
                                args.vary_implementation, 1, "train corpus")
    listings = {
        "train": train_listing,
        "heldout": write_split(os.path.join(args.output_dir, "heldout"), heldout, args, [args.short_side], 2, 0.0, False,
                               len(train_listing) + 1, "held-out corpus"),
    }
    write_sources(os.path.join(args.output_dir, "SOURCES.md"), listings)
    per_ref = len(args.codes) * LEVELS
    print(f"quality corpus: {len(train_listing)} train references ({len(train)} photos) and {len(heldout)} held-out "
          f"references x {per_ref} distorted images -> {args.output_dir}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(parse_args()))
    except PhotoSourceError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
