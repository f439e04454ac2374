"""Build the demo data: a small IQA set in the KADID-10k layout and a small AVA-format IAA set.

    python train_scripts/make_demo_data.py --output_dir demo-output/data [--seed 0] [--size 96]

Reference photographs are scikit-image's bundled sample images whose licence is public domain
or CC0 (each file's source and licence is written to `SOURCES.md`). Everything else is made
here, deterministically for a seed:

* `kadid/`: every reference distorted by 8 real distortions (Gaussian blur, Gaussian noise,
  JPEG, contrast loss, under-exposure, desaturation, pixelation, motion blur) at 5 levels, in
  KADID-10k's layout (`images/I01.png`, `images/I01_01_01.png`..., `dmos.csv` with
  `dist_img,ref_img,dmos,var`), so the real `kadid10k` builder reads it. The pseudo-MOS is a
  full-reference score from GMSD (`common/full_reference.py`, as UniQA-Tiny's corpus), on
  KADID's 1-5 scale, higher is better; `var` holds a vote standard deviation as KADID's does.
* `ava/`: aesthetic variants of the references (well or badly framed crops, exposure and colour
  grading) as `images/<id>.jpg`, `AVA.txt` vote counts around a pseudo aesthetic score,
  `aesthetics_image_lists/generic_test.jpgl` (about 20% of the ids), and an AVA-Captions JSON
  (`CLEAN_AVA_FULL_COMMENTS.json`) whose comments mix relevant remarks on the variant with
  irrelevant chatter, so that AIR purification has something to remove.

With `--clip_output DIR` it also writes the demo's starting point: a small randomly initialised
CLIP (64x64 images, 4-layer towers) with OpenAI's real BPE tokenizer and a CLIP image
processor, laid out like a Hub CLIP folder, so `train_pretrain.py --init DIR` treats it as it
would `openai/clip-vit-base-patch16`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageEnhance

from modeling_uniqa.errors import USER_ERRORS
from train_scripts.common.demo_images import DISTORTIONS, LEVELS, REFERENCES, distort, load_references
from train_scripts.common.flags import ArgumentParser
from train_scripts.common.full_reference import kadid_row
from train_scripts.common.script import run_script
from train_scripts.common.small_clip import write_small_clip

logger = logging.getLogger(__name__)

@dataclass(kw_only=True)
class DemoDataArguments:
    """The command line of `make_demo_data.py`."""

    output_dir: str = field(metadata={"help": "Folder to write `kadid/`, `ava/` and SOURCES.md into."})
    seed: int = field(default=0, metadata={"help": "Seed of every random choice (noise, crops, votes, comments)."})
    size: int = field(default=96, metadata={"help": "Short side of the reference images, in pixels."})
    references: int = field(default=len(REFERENCES), metadata={"help": "How many reference photographs to use."})
    clip_output: str | None = field(default=None, metadata={"help": "Also write a small random CLIP folder (weights, tokenizer, image processor) here."})
    clip_image_size: int = field(default=64, metadata={"help": "Input size of that CLIP's vision tower."})

    def __post_init__(self) -> None:
        if not 2 <= self.references <= len(REFERENCES):
            raise ValueError(f"--references must be between 2 and {len(REFERENCES)}.")
        if self.size < 16:
            raise ValueError("--size must be at least 16 pixels.")


def parse_args(argv=None) -> DemoDataArguments:
    return ArgumentParser(DemoDataArguments, description=__doc__).parse(argv)


def write_kadid(references, folder: str, rng: np.random.Generator) -> int:
    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    rows = ["dist_img,ref_img,dmos,var"]
    for ref_index, (_, reference) in enumerate(references, start=1):
        ref_name = f"I{ref_index:02d}.png"
        reference.save(os.path.join(images, ref_name))
        reference_pixels = np.asarray(reference)
        for type_index, kind in enumerate(DISTORTIONS, start=1):
            for level in range(1, LEVELS + 1):
                distorted = distort(reference, kind, level, rng)
                name = f"I{ref_index:02d}_{type_index:02d}_{level:02d}.png"
                distorted.save(os.path.join(images, name))
                rows.append(kadid_row(name, ref_name, reference_pixels, np.asarray(distorted)))
    with open(os.path.join(folder, "dmos.csv"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(rows) + "\n")
    return len(rows) - 1


# (variant, pseudo aesthetic score on 1-10, relevant comments)
AESTHETIC_VARIANTS = (
    ("thirds", 7.2, ("Lovely composition, the subject sits right on the thirds.", "Beautiful light and colours, well done.")),
    ("vivid", 6.6, ("The vivid colours really pop here.", "Great colour grading and nice contrast.")),
    ("original", 5.8, ("A solid, well exposed shot.", "Nice detail, the framing is fine.")),
    ("washed", 4.3, ("The colours look washed out and flat.", "Needs more contrast, it feels dull.")),
    ("dark", 3.6, ("Far too dark, the subject is lost in shadow.", "Underexposed, I cannot see the details.")),
    ("off_centre", 3.2, ("The crop cuts the subject awkwardly.", "Composition feels off balance and tilted.")),
)
CHATTER = ("Thanks for voting!", "First!", "Good luck in the challenge.", "See my entry too.", "ok", "Nice.")


def aesthetic_variant(image: Image.Image, variant: str) -> Image.Image:
    width, height = image.size
    if variant == "thirds":
        return image.crop((width // 6, 0, width, height)).resize(image.size, Image.LANCZOS)
    if variant == "vivid":
        return ImageEnhance.Contrast(ImageEnhance.Color(image).enhance(1.5)).enhance(1.2)
    if variant == "washed":
        return ImageEnhance.Contrast(ImageEnhance.Color(image).enhance(0.4)).enhance(0.6)
    if variant == "dark":
        return ImageEnhance.Brightness(image).enhance(0.35)
    if variant == "off_centre":
        tilted = image.rotate(9, resample=Image.BICUBIC, fillcolor=(0, 0, 0))
        return tilted.crop((width // 2, height // 3, width, height)).resize(image.size, Image.LANCZOS)
    return image


def vote_counts(score: float, rng: np.random.Generator) -> list[int]:
    """Votes on 1..10 from raters whose opinions spread around `score`."""
    votes = np.clip(np.rint(rng.normal(score, 1.3, size=int(rng.integers(60, 160)))), 1, 10).astype(int)
    return np.bincount(votes, minlength=11)[1:].tolist()


def write_ava(references, folder: str, rng: np.random.Generator) -> int:
    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    os.makedirs(os.path.join(folder, "aesthetics_image_lists"), exist_ok=True)
    lines, test_ids, captions = [], [], []
    image_id = 100000
    for _, reference in references:
        for variant, score, remarks in AESTHETIC_VARIANTS:
            image_id += 1
            aesthetic_variant(reference, variant).save(os.path.join(images, f"{image_id}.jpg"), quality=92)
            counts = vote_counts(score + rng.normal(0, 0.3), rng)
            lines.append(" ".join(str(v) for v in [len(lines) + 1, image_id, *counts, 0, 0, 1]))
            if rng.random() < 0.2:
                test_ids.append(image_id)
            chatter = rng.choice(len(CHATTER), size=3, replace=False)
            comments = [*remarks, *(CHATTER[i] for i in chatter)]
            order = rng.permutation(len(comments))
            captions.append(
                {
                    "filename": f"{image_id}.jpg",
                    "imgid": image_id,
                    "split": "train",
                    "sentences": [{"raw": comments[i]} for i in order],
                }
            )
    with open(os.path.join(folder, "AVA.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    with open(os.path.join(folder, "aesthetics_image_lists", "generic_test.jpgl"), "w", encoding="utf-8") as handle:
        handle.write("".join(f"{i}\n" for i in test_ids))
    with open(os.path.join(folder, "CLEAN_AVA_FULL_COMMENTS.json"), "w", encoding="utf-8") as handle:
        json.dump({"dataset": "AVA", "images": captions}, handle, indent=1)
    return len(lines)


def write_sources(references, output_dir: str) -> None:
    lines = ["# Demo reference photographs", "", "From scikit-image's bundled sample data (`skimage.data`).", ""]
    lines += ["| file | skimage name | author / source | licence |", "|---|---|---|---|"]
    for index, (name, _) in enumerate(references, start=1):
        _, author, licence = next(entry for entry in REFERENCES if entry[0] == name)
        lines.append(f"| I{index:02d}.png | {name} | {author} | {licence} |")
    with open(os.path.join(output_dir, "SOURCES.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def main(args: DemoDataArguments) -> None:
    os.makedirs(args.output_dir, exist_ok=True)
    references = load_references(args.size, args.references)
    rng = np.random.default_rng(args.seed)
    distorted = write_kadid(references, os.path.join(args.output_dir, "kadid"), rng)
    rated = write_ava(references, os.path.join(args.output_dir, "ava"), rng)
    write_sources(references, args.output_dir)
    if args.clip_output:
        write_small_clip(args.clip_output, args.clip_image_size, args.seed)
    print(f"demo data: {distorted} distorted images of {len(references)} references, {rated} AVA-format images -> {args.output_dir}")


if __name__ == "__main__":
    run_script(main, parse_args, USER_ERRORS)
