#!/usr/bin/env python
"""A small CLIP with random weights, to pre-train from scratch (UniQA-Tiny's starting point).

    python train_scripts/make_small_clip.py --output_dir uniqa-tiny/clip-init --image_size 64 --patch_size 8 \\
        --vision_width 192 --vision_layers 6 --text_width 64 --text_layers 3

Writes a Hub-style CLIP folder (atomically; a rerun with the same settings keeps it, so the
recipe can be rerun after a kill) (weights, OpenAI's BPE tokenizer, image processor) that
`train_pretrain.py --init` reads like `openai/clip-vit-base-patch16`. The image size is also
the crop of the test-time views (`UniQAImageProcessor.crop_size`): with `--image_transform
native_crop` in pre-training the model sees native-resolution windows of that size.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field

from train_scripts.common.flags import ArgumentParser
from train_scripts.common.small_clip import TowerSizes, write_small_clip


@dataclass
class SmallClipArguments:
    output_dir: str = field(metadata={"help": "Folder to write (must not hold a model yet)."})
    image_size: int = field(default=64, metadata={"help": "Input side of the vision tower = the view crop."})
    patch_size: int = field(default=8, metadata={"help": "ViT patch side, in pixels."})
    vision_width: int = field(default=192, metadata={"help": "Vision tower width."})
    vision_layers: int = field(default=6, metadata={"help": "Vision tower depth."})
    vision_heads: int = field(default=6, metadata={"help": "Vision attention heads."})
    text_width: int = field(default=64, metadata={"help": "Text tower width (its token table is 49,408 x width)."})
    text_layers: int = field(default=3, metadata={"help": "Text tower depth."})
    text_heads: int = field(default=2, metadata={"help": "Text attention heads."})
    projection_dim: int = field(default=128, metadata={"help": "Joint embedding size."})
    seed: int = field(default=0, metadata={"help": "Seed of the random initialisation."})


def _same_model(folder_a: str, folder_b: str) -> bool:
    def read(folder):
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            config = json.load(handle)
        config.pop("transformers_version", None)
        return config

    return read(folder_a) == read(folder_b)


def main(args: SmallClipArguments) -> int:
    for name in ("vision", "text"):
        width, heads = getattr(args, f"{name}_width"), getattr(args, f"{name}_heads")
        if width % heads:
            print(f"error: --{name}_width {width} is not divisible by --{name}_heads {heads}", file=sys.stderr)
            return 2
    staging = args.output_dir.rstrip("/") + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write_small_clip(
            staging,
            args.image_size,
            args.seed,
            patch_size=args.patch_size,
            vision=TowerSizes(args.vision_width, args.vision_layers, args.vision_heads),
            text=TowerSizes(args.text_width, args.text_layers, args.text_heads),
            projection_dim=args.projection_dim,
        )
    except ValueError as error:
        shutil.rmtree(staging, ignore_errors=True)
        print(f"error: {error}", file=sys.stderr)
        return 2
    if os.path.exists(os.path.join(args.output_dir, "config.json")):
        same = _same_model(staging, args.output_dir)
        shutil.rmtree(staging)
        if not same:
            print(f"error: {args.output_dir} holds another model; choose another --output_dir", file=sys.stderr)
            return 2
        print(f"{args.output_dir} already holds this small CLIP: kept (a rerun of the recipe resumes)")
        return 0
    os.replace(staging, args.output_dir)
    print(f"small CLIP ({args.image_size}px, patch {args.patch_size}, vision {args.vision_width}x{args.vision_layers}) -> {args.output_dir}")
    return 0


def parse_args(argv=None) -> SmallClipArguments:
    return ArgumentParser(SmallClipArguments, description=__doc__.split("\n\n")[0]).parse(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
