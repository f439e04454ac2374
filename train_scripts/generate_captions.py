#!/usr/bin/env python
"""Step 1 of UniQA: MOS-guided captioning of a rating dataset (method.md section 1).

    python train_scripts/generate_captions.py --dataset flive --data_dir /data/FLIVE --split full \\
        --task quality --captioner llava-hf/llava-1.5-7b-hf --output captions/flive_llava.jsonl
    python train_scripts/generate_captions.py --dataset ava --data_dir /data/AVA --task aesthetics \\
        --captioner template --output captions/ava_template.jsonl
    accelerate launch --num_processes 8 train_scripts/generate_captions.py ... --resume

What it does:

- Reads split ``--split`` of any rating dataset of ``data_builders`` (``full`` = every labelled
  image). Each image's MOS becomes a level ``bad .. perfect`` with
  :func:`data_builders.assign_levels` over the images of that split: rank quintiles
  (``--levels quintile``, default) or five equal-width bins over the dataset's MOS range
  (``--levels equal_width``); DMOS datasets are flipped first.
- Prompts are those of Fig. 2 (:data:`train_scripts.common.captioning.PROMPT_TEMPLATES`), or
  ``--prompt_file``.
- ``--captioner``: ``template`` (offline sentences, no MLLM; every record says
  ``template: true``) or any image-text-to-text model id or folder (``AutoProcessor`` +
  ``AutoModelForImageTextToText``, its chat template, left padding, bf16/fp16 on a GPU). Each
  caption has its own seed (a hash of ``--seed``, the image and the caption index) and is
  sampled from its own generator, so it does not depend on batch size, process count or resume.
- Output: JSONL, one caption a line, with ``image`` (path), ``image_name``, ``caption_index``,
  ``caption``, ``level``, ``mos``, ``task``, ``captioner``, ``template``, ``prompt``,
  ``generation`` (the settings), ``seed``, ``dataset``, ``split`` and ``meaning`` (what a template caption states, e.g.
  ``quality|bad|strong JPEG compression``; null for an MLLM's): readable by the
  ``caption_jsonl`` builder. Files of several captioners in one folder load as one corpus
  (the captioner ensembles of Table X).
- Written through :mod:`modeling_uniqa.scoring.sharded_output`: every process streams its captions to
  its own part file, flushed per batch; ``--resume`` after a kill keeps every caption written
  and produces only the missing ones; the end merges them into ``--output`` in dataset order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

import data_builders
from data_builders.distortions import distortion_phrase
from data_builders.errors import DatasetFormatError, MissingImageError, MissingLabelFileError
from modeling_uniqa.core.output_lock import output_lock
from modeling_uniqa.processing_uniqa import UniQAImageError, load_image
from modeling_uniqa.scoring.sharded_output import OutputError, ShardedOutput, check_writable
from train_scripts.common.captioning import (
    DEFAULT_CAPTIONS_PER_IMAGE,
    PROMPT_TEMPLATES,
    TASKS,
    TemplateCaptioner,
    caption_seed,
    format_prompt,
    load_prompt_templates,
)
from train_scripts.common.dataset_options import DATASET_OPTION, DatasetCacheArguments
from train_scripts.common.flags import ArgumentParser, check_positive
from train_scripts.common.inference_options import DecodingArguments, DtypeArguments, JsonlOutputArguments
from train_scripts.common.script import LOG_FORMAT, run_script

logger = logging.getLogger(__name__)

COLUMNS = [
    "image", "image_name", "caption_index", "caption", "level", "mos", "task", "captioner", "template",
    "prompt", "generation", "seed", "dataset", "split", "meaning",
]
KEY_COLUMNS = ["image_name", "caption_index"]
LEVEL_METHODS = {"quintile": "rank", "equal_width": "width"}
USER_ERRORS = (ValueError, OutputError, DatasetFormatError, MissingLabelFileError, MissingImageError, FileNotFoundError)


@dataclass(kw_only=True)
class CaptionArguments(JsonlOutputArguments, DecodingArguments, DtypeArguments, DatasetCacheArguments):
    """The command line of `generate_captions.py`: the dataset and split, the captioner and its
    generation settings, then the shared groups (dtype, decoding workers, output)."""

    dataset: str = field(metadata={"help": f"A rating dataset of data_builders: {', '.join(data_builders.available())}."})
    data_dir: str = field(metadata={"help": "The dataset folder as downloaded and unpacked."})
    split: str = field(default="train", metadata={"help": "Which split to caption (default train); 'full' = every labelled image."})
    image_dir: str | None = field(default=None, metadata={"help": "Where the images are, if not in the dataset's usual folder."})
    dataset_option: list[tuple] = field(default_factory=list, metadata=DATASET_OPTION)
    task: str = field(metadata={"choices": TASKS, "help": "quality (IQA prompt) or aesthetics (IAA prompt)."})
    captioner: str = field(default="template", metadata={
        "help": "'template' (offline sentences) or an image-text-to-text model id or folder, e.g. llava-hf/llava-1.5-7b-hf."})
    captions_per_image: int | None = field(default=None, metadata={"help": "Default: 3 for quality, 1 for aesthetics (as in the paper)."})
    levels: str = field(default="quintile", metadata={
        "choices": sorted(LEVEL_METHODS), "help": "MOS -> level: rank quintiles (default) or equal-width bins over the MOS range."})
    prompt_file: str | None = field(default=None, metadata={
        "help": 'Replace the Fig. 2 prompt: a text file with the template, or JSON {"quality": ..., "aesthetics": ...}; {level} marks the level.'})
    batch_size: int = field(default=8, metadata={"help": "Captions per generate call (default 8)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest caption in tokens (default 128)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (default 0.7); 0 = greedy."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling threshold (default 0.9; 1 = off)."})
    top_k: int = field(default=0, metadata={"help": "Top-k filter (default 0 = off)."})
    seed: int = field(default=0, metadata={"help": "Run seed; each caption's seed is derived from it, the image and the caption index."})
    max_images: int | None = field(default=None, metadata={"help": "Caption only the first N images of the split (a trial run)."})

    def __post_init__(self) -> None:
        check_positive(self, "batch_size", "max_new_tokens", "captions_per_image", "max_images")
        super().__post_init__()
        if self.captions_per_image is None:
            self.captions_per_image = DEFAULT_CAPTIONS_PER_IMAGE[self.task]
        if self.captioner != "template" and self.temperature == 0 and self.captions_per_image > 1:
            raise ValueError(f"--temperature 0 (greedy) would write {self.captions_per_image} identical captions per image: "
                             "sample (temperature > 0) or use --captions_per_image 1")


def parse_args(argv=None) -> CaptionArguments:
    return ArgumentParser(CaptionArguments, description="MOS-guided captioning of a rating dataset (UniQA step 1).").parse(argv)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def load_images_with_levels(
    dataset: str, data_dir: str, split: str, levels: str = "quintile", image_dir: str | None = None,
    cache_dir: str | None = None, max_images: int | None = None, dataset_options: dict | None = None,
) -> list:
    """``[{"image", "image_name", "mos", "level"}]`` of one split of a rating dataset, in dataset order.

    Levels are computed over the images of the split (before ``max_images`` cuts it), with the
    dataset's score direction and, for ``equal_width``, its nominal MOS range.
    """
    builder = data_builders.get_builder(dataset)
    if not hasattr(builder, "HIGHER_IS_BETTER"):
        raise ValueError(f"--dataset {dataset}: a caption corpus, not a rating dataset (it has no MOS to turn into levels)")
    options = dict(dataset_options or {})  # --dataset_option: builder options (mos_range, label_file...)
    if split == "full":
        options["split_scheme"] = "full"
    if image_dir is not None:
        options["image_dir"] = image_dir
    splits = data_builders.load(dataset, data_dir, cache_dir=cache_dir, **options)
    if split not in splits:
        raise ValueError(f"--split {split}: {dataset} in {data_dir} has the splits {sorted(splits)} (or use 'full')")
    table = splits[split]
    meta = data_builders.get_metadata(table)
    columns = table.select_columns(["image_path", "image_name", "mos"]).to_dict()
    mos_range = meta.get("mos_range") if levels == "equal_width" else None
    names = data_builders.assign_levels(
        columns["mos"], higher_is_better=meta.get("higher_is_better", True), method=LEVEL_METHODS[levels], mos_range=mos_range
    )
    items = [
        {"image": path, "image_name": name, "mos": float(mos), "level": level}
        for path, name, mos, level in zip(columns["image_path"], columns["image_name"], columns["mos"], names)
    ]
    if dataset == "kadid10k":  # its file names say which distortion, at which of 5 levels
        kinds = table.select_columns(["distortion", "level"]).to_dict()
        for item, code, strength in zip(items, kinds["distortion"], kinds["level"]):
            item["distortion"] = distortion_phrase(code, strength)
    return items[:max_images] if max_images else items


class DecodedImages(Dataset):
    """Item ``i`` -> ``(i, RGB PIL image or None, error message or None)``; runs in DataLoader workers."""

    def __init__(self, paths: list):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return index, load_image(self.paths[index]), None
        except UniQAImageError as error:
            return index, None, str(error)


def _as_list(batch):
    return batch


# --------------------------------------------------------------------------------------------
# Captioners
# --------------------------------------------------------------------------------------------
def build_captioner(
    name: str, device: torch.device, dtype: str = "auto", temperature: float = 0.7, top_p: float = 0.9, top_k: int = 0,
    max_new_tokens: int = 128,
):
    """``template`` -> :class:`TemplateCaptioner`; a model id or folder -> an
    :class:`~train_scripts.common.hf_captioner.HFCaptioner` with these generation settings."""
    if name == "template":
        return TemplateCaptioner()
    from train_scripts.common.hf_captioner import HFCaptioner

    return HFCaptioner(name, device, dtype=dtype, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens)


@dataclass
class CaptionJob:
    """What every caption of a run shares: its prompt template, seeds and record fields."""

    task: str
    template: str
    seed: int
    dataset: str
    split: str
    captioner: str
    is_template: bool
    settings: dict

    def prompt(self, item: dict) -> str:
        return format_prompt(self.template, item["level"])

    def caption_seed(self, item: dict, caption_index: int) -> int:
        return caption_seed(self.seed, item["image_name"], caption_index)

    def record(self, item: dict, caption_index: int, caption: str, meaning: str | None = None) -> dict:
        """One output line (see the module docstring); ``meaning``: what a template caption states."""
        return {
            "image": item["image"], "image_name": item["image_name"], "caption_index": caption_index, "caption": caption,
            "level": item["level"], "mos": item["mos"], "task": self.task, "captioner": self.captioner,
            "template": self.is_template, "prompt": self.prompt(item), "generation": self.settings,
            "seed": self.caption_seed(item, caption_index), "dataset": self.dataset, "split": self.split, "meaning": meaning,
        }


def caption_template(captioner: TemplateCaptioner, job: CaptionJob, work: list, items: list, batch_size: int, writer, bar) -> int:
    """Template captions for ``work`` (``(item index, caption index)`` pairs), ``batch_size`` per
    write. Returns 0 (no image is read)."""
    for start in range(0, len(work), batch_size):
        records = []
        for index, k in work[start : start + batch_size]:
            item = items[index]
            caption = captioner.caption(item["level"], job.task, job.caption_seed(item, k), item.get("distortion"))
            records.append(job.record(item, k, caption, captioner.meaning(item["level"], job.task, item.get("distortion"))))
        writer.write(records)
        bar.update(len(records))
    return 0


def caption_with_model(captioner, job: CaptionJob, work: list, items: list, batch_size: int, num_workers: int, writer, bar) -> int:
    """MLLM captions for ``work``: each image decoded once in DataLoader workers, captions
    generated ``batch_size`` at a time and written per batch. Returns the number of unreadable images."""
    pending: dict = {}
    for index, k in work:
        pending.setdefault(index, []).append(k)
    image_indices = list(pending)
    captions_per_image = max((len(ks) for ks in pending.values()), default=1)
    loader = DataLoader(
        DecodedImages([items[i]["image"] for i in image_indices]),
        batch_size=max(1, batch_size // captions_per_image), num_workers=num_workers, collate_fn=_as_list,
    )
    failed, queue = 0, []

    def flush(rows):
        texts = captioner.caption(
            [image for _, _, image in rows],
            [job.prompt(items[i]) for i, _, _ in rows],
            [job.caption_seed(items[i], k) for i, k, _ in rows],
        )
        writer.write([job.record(items[i], k, text) for (i, k, _), text in zip(rows, texts)])
        bar.update(len(rows))

    for batch in loader:
        for position, image, error in batch:
            index = image_indices[position]
            if error is not None:
                failed += 1
                logger.warning("Not captioned: %s", error)
                bar.update(len(pending[index]))
                continue
            queue += [(index, k, image) for k in pending[index]]
        while len(queue) >= batch_size:
            flush(queue[:batch_size])
            queue = queue[batch_size:]
    if queue:
        flush(queue)
    return failed


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def main(args: CaptionArguments) -> int:
    """Caption the split; returns 0 when some captions were written, 1 when none (like ``uniqa score``)."""
    with output_lock(args.output, "--output"):  # one run at a time into an output
        return _caption(args)


def _caption(args: CaptionArguments) -> int:
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
    accelerator = Accelerator()
    check_writable(args.output)  # before any costly work
    template = load_prompt_templates(args.prompt_file, args.task) if args.prompt_file else PROMPT_TEMPLATES[args.task]
    with accelerator.main_process_first():  # one process builds the datasets cache, the others read it
        items = load_images_with_levels(args.dataset, args.data_dir, args.split, args.levels, args.image_dir, args.cache_dir, args.max_images,
                                        dict(args.dataset_option))
    captioner = build_captioner(
        args.captioner, accelerator.device, args.dtype, args.temperature, args.top_p, args.top_k, args.max_new_tokens
    )
    job = CaptionJob(
        args.task, template, args.seed, args.dataset, args.split, captioner.name,
        isinstance(captioner, TemplateCaptioner), captioner.settings(),
    )
    output = ShardedOutput(
        args.output, COLUMNS, KEY_COLUMNS, added_columns={"meaning": None},  # captions written before meanings were recorded
        fingerprint={
            "dataset": args.dataset, "split": args.split, "task": args.task, "levels": args.levels,
            "prompt_template": template, "captions_per_image": args.captions_per_image, "seed": args.seed,
            "captioner": captioner.name, "generation": captioner.settings(),
        },
    )
    output.check(resume=args.resume, overwrite=args.overwrite)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        output.start(resume=args.resume)
    accelerator.wait_for_everyone()

    keys = [(item["image_name"], k) for item in items for k in range(args.captions_per_image)]
    done = output.done_keys()
    # No process writes before every process has read what is done: a part file growing while
    # another process reads it would make the processes disagree on the work left (lost captions).
    accelerator.wait_for_everyone()
    todo_images = [i for i, item in enumerate(items) if any((item["image_name"], k) not in done for k in range(args.captions_per_image))]
    shard = todo_images[accelerator.process_index :: accelerator.num_processes]  # whole images: each decoded once
    work = [(i, k) for i in shard for k in range(args.captions_per_image) if (items[i]["image_name"], k) not in done]
    if accelerator.is_main_process:
        logger.info(
            "%d images, %d captions to write (%d already in %s), %s, %d process(es).",
            len(items), len(keys) - len(done & set(keys)), len(done & set(keys)), args.output, captioner.name, accelerator.num_processes,
        )
    start = time.perf_counter()
    with output.part_writer(accelerator.process_index) as writer, tqdm(
        total=len(work), unit="caption", desc="Captioning", disable=not accelerator.is_main_process
    ) as bar:
        if isinstance(captioner, TemplateCaptioner):
            failed = caption_template(captioner, job, work, items, args.batch_size, writer, bar)
        else:
            failed = caption_with_model(captioner, job, work, items, args.batch_size, args.num_workers, writer, bar)
    seconds = time.perf_counter() - start
    failed = int(accelerator.gather(torch.tensor([failed], device=accelerator.device)).sum())
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return 0
    result = output.finish(keys)
    missing = len(keys) - len(result.rows)
    logger.info(
        "Wrote %s: %d of %d captions (%d images unreadable). This process: %d captions in %.1f s (%.2f captions/s).",
        args.output, len(result.rows), len(keys), failed, len(work), seconds, len(work) / seconds if seconds > 0 else 0.0,
    )
    if missing:
        logger.warning("%d captions are missing: their images could not be read (see the warnings above); a --resume retries them.", missing)
    return 0 if result.rows else 1


if __name__ == "__main__":
    run_script(main, parse_args, USER_ERRORS)
