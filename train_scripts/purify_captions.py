#!/usr/bin/env python
"""Step 2 of UniQA: AIR purification of AVA-Captions (method.md section 1; paper eq. 3-5).

    python train_scripts/purify_captions.py --data_dir /data/AVA-Captions --image_dir /data/AVA/images \\
        --clip_aes runs/clip_aes --output captions/ava_air.jsonl
    accelerate launch --num_processes 8 train_scripts/purify_captions.py ... --resume

For every image of AVA-Captions (the JSON as distributed, read by the ``ava_captions`` builder)
with n comments: s_A = cosine similarity of the image and each comment under CLIP_aes (a
UniQA or HF CLIP folder pre-trained on generated aesthetic captions), s_I = informativeness
(``--informativeness length`` words, or ``entropy``), AR = rank(s_A), IR = rank(s_I),
AIR = rank(alpha * AR + beta * IR), and the ``--top_k`` comments of highest AIR are kept.
Ranks and the tie rule: :mod:`train_scripts.common.air`.

- Before ranking, comments of one image that are identical (after collapsing whitespace) are
  kept once; images left with fewer than ``--min_captions`` comments are dropped (3 by
  default: every image of the paper's purified set has at least 3 comments).
- Each image is decoded (in DataLoader workers) and encoded once, with CLIP's evaluation view:
  short side resized to the tower's input size, centre crop. Comments are embedded in batches
  sorted by token count with dynamic padding (:mod:`train_scripts.common.text_embedding`).
- Output: JSONL, **one record per kept comment**, best first within an image: ``image`` (path),
  ``image_name``, ``caption_index`` (0 = highest AIR), ``caption``, ``task`` (aesthetics),
  ``captioner`` (``human``), ``level`` (null), ``source``, ``comment_index`` (position among
  the image's distinct comments), ``num_comments``, ``ar``, ``ir``, ``air``, ``relevance``
  (s_A), ``informativeness`` (s_I). The ``caption_jsonl`` builder reads it as one row per image.
- ``<output>.summary.json``: images and comments in and out, a captions-per-image histogram,
  and what was dropped and why.
- Written through :mod:`modeling_uniqa.scoring.sharded_output` (per-process part files, ``--resume``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer, CLIPModel

import data_builders
from data_builders.errors import DatasetFormatError, MissingImageError, MissingLabelFileError
from modeling_uniqa import UniQAModel  # also registers the uniqa model type
from modeling_uniqa.core.output_lock import output_lock
from modeling_uniqa.processing_uniqa import UniQAImageProcessor
from modeling_uniqa.scoring.score_images import ImageViews, Normalizer, collate_views
from modeling_uniqa.scoring.sharded_output import OutputError, ShardedOutput, check_writable, write_atomic
from train_scripts.common.air import INFORMATIVENESS_MEASURES, informativeness, select_top_k
from train_scripts.common.dataset_options import DatasetCacheArguments
from train_scripts.common.dtypes import resolve_dtype
from train_scripts.common.flags import ArgumentParser, check_positive
from train_scripts.common.inference_options import DecodingArguments, DtypeArguments, JsonlOutputArguments
from train_scripts.common.script import LOG_FORMAT, run_script
from train_scripts.common.text_embedding import embed_texts

logger = logging.getLogger(__name__)

COLUMNS = [
    "image", "image_name", "caption_index", "caption", "task", "captioner", "level", "source", "comment_index",
    "num_comments", "ar", "ir", "air", "relevance", "informativeness",
]
KEY_COLUMNS = ["image_name", "caption_index"]
USER_ERRORS = (ValueError, OSError, OutputError, DatasetFormatError, MissingLabelFileError, MissingImageError)


@dataclass(kw_only=True)
class PurifyArguments(JsonlOutputArguments, DecodingArguments, DtypeArguments, DatasetCacheArguments):
    """The command line of `purify_captions.py`: the corpus, CLIP_aes and the AIR settings, then the
    shared groups (dtype, decoding workers, output)."""

    data_dir: str = field(metadata={"help": "AVA-Captions as distributed: the folder or the CLEAN_AVA_FULL_*.json / AVA_Comments_Full.txt file."})
    image_dir: str | None = field(default=None, metadata={"help": "Where the AVA images are (default: an images/ folder next to the captions)."})
    clip_aes: str = field(metadata={"help": "CLIP_aes: a UniQA or HF CLIP folder pre-trained on generated aesthetic captions."})
    tokenizer: str | None = field(default=None, metadata={"help": "Its tokenizer folder (default: --clip_aes)."})
    top_k: int = field(default=4, metadata={"help": "Comments kept per image (default 4)."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the aesthetics-relevance rank AR (default 1)."})
    beta: float = field(default=1.0, metadata={"help": "Weight of the informativeness rank IR (default 1)."})
    informativeness: str = field(default="length", metadata={
        "choices": sorted(INFORMATIVENESS_MEASURES), "help": "s_I: number of words (default) or word entropy."})
    min_captions: int = field(default=3, metadata={"help": "Drop images with fewer distinct comments (default 3)."})
    image_batch_size: int = field(default=64, metadata={"help": "Images per forward (default 64); their comments are embedded together."})
    text_batch_size: int = field(default=256, metadata={"help": "Comments per text forward (default 256)."})
    max_images: int | None = field(default=None, metadata={"help": "Only the first N images of the corpus (a trial run)."})

    def __post_init__(self) -> None:
        check_positive(self, "top_k", "min_captions", "image_batch_size", "text_batch_size", "max_images")
        if self.alpha < 0 or self.beta < 0 or self.alpha == self.beta == 0:
            raise ValueError(f"--alpha and --beta must be >= 0 and not both 0, got {self.alpha}, {self.beta}")
        super().__post_init__()


def parse_args(argv=None) -> PurifyArguments:
    return ArgumentParser(PurifyArguments, description="AIR purification of AVA-Captions with CLIP_aes (UniQA step 2).").parse(argv)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def distinct_comments(comments: list) -> tuple:
    """``(comments, duplicates)``: each comment once (whitespace collapsed), in first-seen order."""
    seen, kept = set(), []
    for comment in comments:
        text = " ".join(comment.split())
        if text and text not in seen:
            seen.add(text)
            kept.append(text)
    return kept, len(comments) - len(kept)


def load_comments(data_dir: str, image_dir: str | None, cache_dir: str | None, max_images: int | None) -> tuple:
    """``(images, stats)``: ``[{"image", "image_name", "comments"}]`` of AVA-Captions (distinct
    comments) and the input counts."""
    options = {"image_dir": image_dir} if image_dir else {}
    corpus = data_builders.load("ava_captions", data_dir, cache_dir=cache_dir, **options)["train"]
    meta = data_builders.get_metadata(corpus)
    columns = corpus.select_columns(["image_path", "image_name", "captions"]).to_dict()
    images, duplicates, comments_in = [], 0, 0
    for path, name, captions in zip(columns["image_path"], columns["image_name"], columns["captions"]):
        if max_images and len(images) >= max_images:
            break
        comments, repeated = distinct_comments(captions)
        comments_in += len(captions)
        duplicates += repeated
        images.append({"image": path, "image_name": name, "comments": comments})
    stats = {
        "images_in": len(images),
        "comments_in": comments_in,
        "duplicate_comments": duplicates,
        "images_missing_on_disk": int((meta.get("skipped_images") or {}).get("missing", 0)),
    }
    return images, stats


# --------------------------------------------------------------------------------------------
# CLIP_aes
# --------------------------------------------------------------------------------------------
def load_clip_aes(path: str, tokenizer_path: str | None, device: torch.device, dtype: torch.dtype):
    """``(CLIPModel, tokenizer, image processor)`` of a UniQA or HF CLIP folder, in eval mode."""
    try:
        config = AutoConfig.from_pretrained(path)
        if config.model_type == "uniqa":
            clip = UniQAModel.from_pretrained(path, dtype=dtype).clip
        elif config.model_type == "clip":
            clip = CLIPModel.from_pretrained(path, dtype=dtype)
        else:
            raise ValueError(f"model type {config.model_type!r}, expected uniqa or clip")
    except (OSError, ValueError) as error:
        raise ValueError(f"--clip_aes {path}: cannot load a UniQA or CLIP model ({error})") from error
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or path)
    except (OSError, ValueError) as error:
        raise ValueError(f"--clip_aes {path}: no tokenizer found in {tokenizer_path or path} ({error}); pass --tokenizer DIR") from error
    if len(tokenizer) > clip.config.text_config.vocab_size:
        raise ValueError(
            f"the tokenizer of {tokenizer_path or path} has {len(tokenizer)} tokens but the text tower of {path} only "
            f"{clip.config.text_config.vocab_size}: pass the tokenizer it was trained with (--tokenizer)"
        )
    size = clip.config.vision_config.image_size
    processor = UniQAImageProcessor(crop_size=size, shortest_edge=size, view_policy="center")
    return clip.to(device).eval(), tokenizer, processor


def fingerprint_of(path: str) -> dict:
    """What identifies the CLIP_aes weights for a resume: the weight files' names, sizes and times."""
    files = sorted(name for name in os.listdir(path) if name.endswith((".safetensors", ".bin")))
    return {name: [os.path.getsize(os.path.join(path, name)), int(os.path.getmtime(os.path.join(path, name)))] for name in files}


# --------------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------------
def purify_batch(
    clip, tokenizer, normalize: Normalizer, batch, images: list, device, top_k: int = 4, alpha: float = 1.0,
    beta: float = 1.0, measure: str = "length", text_batch_size: int = 256,
) -> list:
    """The kept-comment records of a decoded image batch (unreadable images give none).

    ``batch`` is a :func:`~modeling_uniqa.scoring.score_images.collate_views` batch of centre views whose
    indices point into ``images``; the AIR arguments are those of :func:`select_top_k`."""
    if batch.views is None:
        return []
    with torch.inference_mode():
        pixels = normalize(batch.views)[:, 0].to(clip.visual_projection.weight.dtype)  # one centre view each
        image_embeds = F.normalize(clip.get_image_features(pixel_values=pixels).pooler_output.float(), dim=-1).cpu()
    comments = [comment for index in batch.indices for comment in images[index]["comments"]]
    text_embeds = embed_texts(clip, tokenizer, comments, batch_size=text_batch_size, device=device)
    records, offset = [], 0
    for row, index in enumerate(batch.indices):
        item = images[index]
        n = len(item["comments"])
        relevance = (text_embeds[offset : offset + n] @ image_embeds[row]).double().numpy()
        offset += n
        info = informativeness(item["comments"], measure)
        selection = select_top_k(relevance, info, top_k, alpha, beta)
        for position, j in enumerate(selection.indices):
            records.append({
                "image": item["image"], "image_name": item["image_name"], "caption_index": position,
                "caption": item["comments"][j], "task": "aesthetics", "captioner": "human", "level": None,
                "source": "ava_captions", "comment_index": j, "num_comments": n, "ar": int(selection.ar[j]),
                "ir": int(selection.ir[j]), "air": int(selection.air[j]), "relevance": float(relevance[j]),
                "informativeness": float(info[j]),
            })
    return records


def summarize(stats: dict, eligible: list, rows: list, settings: dict) -> dict:
    """The summary written next to the output (counts in and out, histogram, drops and why).

    ``stats``: the input counts of :func:`load_comments`; ``eligible``: the images with enough
    comments; ``rows``: the records of the merged output; ``settings``: recorded as they are."""
    per_image = Counter(row["image_name"] for row in rows)
    eligible_comments = sum(len(item["comments"]) for item in eligible)
    unreadable = [item for item in eligible if item["image_name"] not in per_image]
    too_few = stats["images_in"] - len(eligible)
    return {
        "images_in": stats["images_in"],
        "comments_in": stats["comments_in"],
        "images_out": len(per_image),
        "comments_out": len(rows),
        "captions_per_image": {str(k): v for k, v in sorted(Counter(per_image.values()).items())},
        "dropped_images": {
            "fewer_than_min_captions": too_few,
            "unreadable_image": len(unreadable),
            "missing_on_disk": stats["images_missing_on_disk"],  # skipped by the corpus builder, not in images_in
        },
        "dropped_comments": {
            "duplicates": stats["duplicate_comments"],
            "of_images_with_fewer_than_min_captions": stats["comments_in"] - stats["duplicate_comments"] - eligible_comments,
            "of_unreadable_images": sum(len(item["comments"]) for item in unreadable),
            "below_top_k": eligible_comments - sum(len(item["comments"]) for item in unreadable) - len(rows),
        },
        "settings": settings,
    }


def summary_path(output: str) -> str:
    return output + ".summary.json"


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def main(args: PurifyArguments) -> int:
    """Purify the corpus; returns 0 when some comments were kept, 1 when none (like ``uniqa score``)."""
    with output_lock(args.output, "--output"):  # one run at a time into an output
        return _purify(args)


def _purify(args: PurifyArguments) -> int:
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
    accelerator = Accelerator()
    check_writable(args.output)
    with accelerator.main_process_first():  # one process builds the datasets cache, the others read it
        images, stats = load_comments(args.data_dir, args.image_dir, args.cache_dir, args.max_images)
    eligible_indices = [i for i, item in enumerate(images) if len(item["comments"]) >= args.min_captions]
    dtype = resolve_dtype(args.dtype, accelerator.device)
    clip, tokenizer, processor = load_clip_aes(args.clip_aes, args.tokenizer, accelerator.device, dtype)
    settings = {
        "top_k": args.top_k, "alpha": args.alpha, "beta": args.beta, "informativeness": args.informativeness,
        "min_captions": args.min_captions, "clip_aes": os.path.abspath(args.clip_aes),
    }
    tokenizer_dir = os.path.abspath(args.tokenizer or args.clip_aes)
    fingerprint = settings | {"clip_aes_weights": fingerprint_of(args.clip_aes), "dtype": str(dtype)}
    if tokenizer_dir != settings["clip_aes"]:  # only then: outputs of runs before this field stay resumable
        fingerprint["tokenizer"] = tokenizer_dir
    output = ShardedOutput(args.output, COLUMNS, KEY_COLUMNS, fingerprint=fingerprint)
    output.check(resume=args.resume, overwrite=args.overwrite)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        output.start(resume=args.resume)
    accelerator.wait_for_everyone()

    image_keys = {i: [(images[i]["image_name"], k) for k in range(min(args.top_k, len(images[i]["comments"])))] for i in eligible_indices}
    keys = [key for i in eligible_indices for key in image_keys[i]]
    done = output.done_keys()
    # No process writes before every process has read what is done: a part file growing while
    # another process reads it would make the processes disagree on the work left (lost captions).
    accelerator.wait_for_everyone()
    # An image is done when all its kept comments are: a kill may have cut its last record.
    todo = [i for i in eligible_indices if not all(key in done for key in image_keys[i])]
    shard = todo[accelerator.process_index :: accelerator.num_processes]
    if accelerator.is_main_process:
        logger.info(
            "%d images in, %d with >= %d distinct comments, %d to rank (%d done), %d process(es).",
            len(images), len(eligible_indices), args.min_captions, len(todo), len(eligible_indices) - len(todo), accelerator.num_processes,
        )
    loader = DataLoader(
        ImageViews([images[i]["image"] for i in shard], processor, "center", 0),
        batch_size=args.image_batch_size, num_workers=args.num_workers, collate_fn=collate_views,
        pin_memory=accelerator.device.type == "cuda",
    )
    shard_images = [images[i] for i in shard]
    normalize, start = Normalizer(processor, accelerator.device), time.perf_counter()
    with output.part_writer(accelerator.process_index) as writer, tqdm(
        total=len(shard), unit="img", desc="Purifying", disable=not accelerator.is_main_process
    ) as bar:
        for batch in loader:
            for _, message in batch.errors:
                logger.warning("Not ranked: %s", message)
            writer.write(purify_batch(
                clip, tokenizer, normalize, batch, shard_images, accelerator.device, args.top_k, args.alpha, args.beta,
                args.informativeness, args.text_batch_size,
            ))
            bar.update(len(batch.indices) + len(batch.errors))
    seconds = time.perf_counter() - start
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return 0
    result = output.finish(keys)
    summary = summarize(stats, [images[i] for i in eligible_indices], result.rows, settings)
    write_atomic(summary_path(output.output), json.dumps(summary, indent=1) + "\n")
    logger.info(
        "Wrote %s: %d images, %d comments (summary: %s). This process: %d images in %.1f s.",
        args.output, summary["images_out"], summary["comments_out"], summary_path(output.output), len(shard), seconds,
    )
    if summary["dropped_images"]["unreadable_image"]:
        logger.warning("%d images could not be read (see the warnings above); a --resume retries them.", summary["dropped_images"]["unreadable_image"])
    return 0 if result.rows else 1


if __name__ == "__main__":
    run_script(main, parse_args, USER_ERRORS)
