#!/usr/bin/env python
"""Step 3 of UniQA: unified contrastive pre-training of CLIP on quality/aesthetics captions.

    accelerate launch train_scripts/train_pretrain.py \
        --init clip-vit-base-patch16/ \
        --corpus caption_jsonl=/data/captions/flive --corpus caption_jsonl=/data/captions/ava \
        --corpus ava_captions=/data/AVA-Captions --exclude ava=/data/AVA \
        --output_dir uniqa-pretrained

Corpora are merged by image (captions pooled, one caption drawn per image per epoch, so a
batch never holds an image twice), AVA's test images can be kept out, and the symmetric CLIP
loss sees the negatives of the whole global batch across processes. Defaults follow the paper
and the authors' release: Adam (0.9, 0.98, eps 1e-6), lr 5e-6, weight decay 0.2, 5 epochs,
global batch 960, CLIP's resize + centre-crop transform. The output folder is a zero-shot UniQA
model (no adapter) that `AutoModel` and `pipeline("image-quality")` load. Trained on generated
aesthetic captions only, the same script gives the CLIP_aes model of caption purification.

`--resume_from_checkpoint latest` resumes exactly: the same data order and loss curve as a run
that was never stopped (batches and captions depend only on seed, epoch and position). A resume
with other data or settings, and a new run over an earlier run's output, are refused
(`common/checkpointing.py`); a NaN or infinite loss stops the run, naming the step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import (
    ProjectConfiguration,
    broadcast_object_list,
    gather_object,
    is_tensorboard_available,
    parse_flag_from_env,
    set_seed,
)
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, CLIPModel, SchedulerType, get_scheduler

from modeling_uniqa import NAMED_PROMPT_GROUPS, UniQAImageProcessor, UniQAModel
from modeling_uniqa.clip_tokenizer import resolve_prompt_tokenizer
from modeling_uniqa.core import model_folder
from modeling_uniqa.core.output_lock import output_lock
from modeling_uniqa.errors import ModelFolderError
from train_scripts.common.checkpointing import (
    JsonState,
    RunLayout,
    check_output_space,
    checkpoint_step,
    fingerprint,
    resolve_checkpoint,
    run_bytes,
    save_checkpoint,
    tensors_fingerprint,
    write_model_folder,
)
from train_scripts.common.clip_loss import ClipLoss
from train_scripts.common.errors import DataError, SettingsError
from train_scripts.common.flags import ArgumentParser
from train_scripts.common.image_check import (
    DEFAULT_MAX_BAD_FRACTION,
    SkippedImages,
    check_max_bad_fraction,
    drop_unreadable,
)
from train_scripts.common.metrics import MIN_ITEMS, plcc, srcc
from train_scripts.common.numerics import check_finite_loss, check_finite_parameters
from train_scripts.common.pretrain_data import (
    GlobalBatchSampler,
    PretrainCollator,
    PretrainDataset,
    decode_image_cell,
    load_pretrain_corpus,
    parse_named_dirs,
    positive_groups,
)
from train_scripts.common.script import LOG_FORMAT, TRAINING_ERRORS, run_script
from train_scripts.common.transforms import PRETRAIN_MODES, PretrainTransform
from train_scripts.common.weight_average import WeightAverage

logger = logging.getLogger(__name__)

PAPER_GLOBAL_BATCH = 960
LOG_FILE = "train_log.jsonl"


def default_num_workers(cap: int = 4) -> int:
    """DataLoader workers for the cores this process may use: one fewer than the cores (the main
    process needs one), at most `cap`; 0 on a single core. (Four workers on two cores trip
    PyTorch's excessive-workers warning and slow the run down.)"""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(cap, cores - 1))


@dataclass(kw_only=True)
class PretrainDataArguments:
    _argument_group_name = "model and data"

    init: str = field(metadata={"help": "HF CLIP folder or id (with tokenizer), or a UniQA folder."})
    corpus: list[str] = field(metadata={
        "action": "append", "metavar": "NAME=DIR",
        "help": "A data_builders caption corpus (caption_jsonl, ava_captions, uniqa_corpus, llava_conversations) and its folder; repeatable."})
    exclude: list[str] = field(default_factory=list, metadata={
        "action": "append", "metavar": "NAME=DIR",
        "help": "Images to keep out: a rating dataset's test split (e.g. ava=/data/AVA), a corpus, or file=names.txt; repeatable."})
    match_key: Literal["stem", "name", "path"] = field(default="stem", metadata={"help": "How images are matched across corpora."})
    cache_dir: str | None = field(default=None, metadata={"help": "Arrow cache of the dataset builders."})
    output_dir: str = field(metadata={"help": "The UniQA model folder to write (its checkpoints and logs too)."})
    image_transform: str = field(default="release", metadata={
        "choices": PRETRAIN_MODES,
        "help": "release: resize + centre crop (the authors'); random_resized_crop: area 0.9-1.0; native_crop: a random window at native resolution."})
    hflip: float = field(default=0.0, metadata={"help": "Horizontal flip probability."})
    rot90: bool = field(default=False, metadata={
        "help": "Turn each crop by a random multiple of 90 degrees: blur, noise and compression look alike any way up, "
        "the content does not (more kinds of content from the same photos)."})
    detail_prob: float = field(default=0.0, metadata={
        "help": "With --image_transform native_crop: the share of crops that are the most detailed of "
        "--detail_candidates random windows (blur and compression show where a picture has detail; the "
        "test-time detail<N> views choose half their crops so)."})
    detail_candidates: int = field(default=4, metadata={"help": "Random windows a detailed crop is chosen from."})
    crops_per_image: int = field(default=1, metadata={
        "help": "Random views cut from each decoded image (with --image_transform native_crop: decoding costs more "
        "than a small tower's step on a crop). Batch sizes count views; the views of one image are each other's "
        "positives in the loss."})
    meaning_positives: bool = field(default=False, metadata={
        "help": "Count images whose captions state the same thing (the 'meaning' that template captions record, e.g. "
        "quality|bad|strong JPEG compression) as each other's positives in the loss, not as negatives: a synthetic "
        "corpus's batch holds many images whose captions differ only in wording."})
    max_caption_length: int | None = field(default=None, metadata={"help": "Default: the text tower's context length."})
    max_bad_fraction: float = field(default=DEFAULT_MAX_BAD_FRACTION, metadata={
        "help": "Unreadable corpus images (empty, not images, cut PNGs, decompression bombs, slivers) are found from their "
        "headers before training and skipped; one that fails to decode during training is stood in for by the next "
        "row. Both are counted (the log's skipped_images); beyond this share of the corpus the run stops."})
    prompts: str | None = field(default=None, metadata={"help": "Prompt groups of the saved model (default: the init's, or 'default')."})
    dataloader_num_workers: int = field(default_factory=default_num_workers, metadata={
        "help": "DataLoader workers decoding images (default: the CPU cores this process may use, at most 4, minus one for the main process)."})


@dataclass
class PretrainTrainingArguments:
    _argument_group_name = "optimisation"

    num_train_epochs: int = 5
    max_steps: int | None = field(default=None, metadata={"help": "Overrides --num_train_epochs."})
    per_device_train_batch_size: int | None = field(default=None, metadata={"help": "Default: --train_batch_size / number of processes."})
    train_batch_size: int = field(default=PAPER_GLOBAL_BATCH, metadata={"help": "Global batch, used when --per_device_train_batch_size is not given."})
    learning_rate: float = 5e-6
    weight_decay: float = 0.2
    optimizer: Literal["adam", "adamw"] = field(default="adam", metadata={
        "help": "adam: L2 weight decay on every parameter, as released; adamw: decoupled."})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-6
    max_grad_norm: float | None = None
    lr_scheduler: str = field(default="constant", metadata={"choices": [scheduler.value for scheduler in SchedulerType]})
    warmup_steps: int = 0
    freeze_logit_scale: bool = field(default=False, metadata={"help": "Keep CLIP's temperature fixed."})
    ema_decay: float | None = field(default=None, metadata={
        "help": "Keep an exponential moving average of the weights (this decay per step, e.g. 0.998); the zero-shot checks "
        "score it and it is the model saved. Default: the last step's weights."})
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    seed: int = 123


@dataclass
class PretrainRunArguments:
    _argument_group_name = "checkpoints and logging"

    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = field(default=None, metadata={"help": "Keep this many checkpoints (default: all)."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint folder."})
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard, wandb, all or none (a JSONL log is always written)."})
    logging_dir: str = field(default="logs", metadata={"help": "Tracker folder, relative to --output_dir."})
    eval_dataset: str | None = field(default=None, metadata={"metavar": "NAME=DIR", "help": "A rating dataset for the zero-shot SRCC check."})
    eval_split: str = "test"
    eval_steps: int | None = field(default=None, metadata={"help": "Zero-shot check every N steps; with --eval_dataset, always at the end."})
    eval_max_samples: int = 500
    eval_prompts: str = "natural"
    eval_view_policy: str = "center"
    eval_batch_size: int = 32


@dataclass(kw_only=True)
class PretrainArguments(PretrainRunArguments, PretrainTrainingArguments, PretrainDataArguments):
    """The command line of `train_pretrain.py`: model and data, optimisation, checkpoints and logging."""

    def __post_init__(self):
        for name in ("num_train_epochs", "train_batch_size", "checkpointing_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1.")
        for name in ("max_steps", "per_device_train_batch_size", "eval_steps", "checkpoints_total_limit", "crops_per_image", "detail_candidates"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1.")
        batch_flag = "per_device_train_batch_size" if self.per_device_train_batch_size else "train_batch_size"
        if getattr(self, batch_flag) % self.crops_per_image:
            raise ValueError(f"--{batch_flag} {getattr(self, batch_flag)} is not divisible by --crops_per_image {self.crops_per_image}.")
        if not 0.0 <= self.detail_prob <= 1.0:
            raise ValueError(f"--detail_prob must be a probability, got {self.detail_prob}.")
        if self.detail_prob and self.image_transform != "native_crop":
            raise ValueError("--detail_prob needs --image_transform native_crop.")
        if self.eval_steps and not self.eval_dataset:
            raise ValueError("--eval_steps needs --eval_dataset NAME=DIR.")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema_decay must be in [0, 1), got {self.ema_decay}.")
        try:
            check_max_bad_fraction(self.max_bad_fraction)
        except ValueError as error:
            raise ValueError(f"--{error}") from None


def parse_args(argv=None) -> PretrainArguments:
    return ArgumentParser(PretrainArguments, description=__doc__.split("\n\n")[0]).parse(argv)


# --------------------------------------------------------------------------------- model
class ContrastiveCLIP(nn.Module):
    """The module DDP wraps: both towers and the temperature in one forward.

    Returns L2-normalised fp32 image and text embeddings (B, dim) and the exponentiated
    ``logit_scale``, clamped at 100 as in CLIP's training.
    """

    def __init__(self, clip: CLIPModel):
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values, input_ids, attention_mask):
        image = self.clip.get_image_features(pixel_values=pixel_values).pooler_output
        text = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return (
            F.normalize(image.float(), dim=-1),
            F.normalize(text.float(), dim=-1),
            self.clip.logit_scale.exp().clamp(max=100),
        )


def load_tokenizer(init: str):
    """The tokenizer of the init folder, checked against its text tower (`resolve_prompt_tokenizer`:
    the folder's own if it fits, else OpenAI's BPE shipped with this package for OpenAI's
    vocabulary, else an error naming the problem)."""
    try:
        return resolve_prompt_tokenizer(init)
    except (OSError, ValueError) as error:
        raise ModelFolderError(f"--init {init}: {error}") from error


def load_init(init: str):
    """``(UniQAModel without adapter, fp32, tokenizer)`` from a CLIP or UniQA checkpoint."""
    try:
        config = AutoConfig.from_pretrained(init)
    except (OSError, ValueError) as error:  # a data folder, a missing path, a malformed config.json
        raise ModelFolderError(
            f"--init {init}: not a CLIP or UniQA model folder or Hub id ({' '.join(str(error).split())[:300]})."
        ) from error
    if config.model_type == "uniqa":
        tokenizer = load_tokenizer(init)
        model = model_folder.load_model_folder(init) if os.path.isdir(init) else UniQAModel.from_pretrained(init, dtype=torch.float32)
        if model.adapter is not None:
            logger.warning(
                f"--init {init} has an adapter: dropped (pre-training changes the features it was fitted to)."
            )
            model.adapter = None
            model.config.use_adapter = False
    elif config.model_type == "clip":
        tokenizer = load_tokenizer(init)
        clip = CLIPModel.from_pretrained(init, dtype=torch.float32)
        model = UniQAModel.from_clip(clip, tokenizer=tokenizer, use_adapter=False)
    else:
        raise ModelFolderError(f"--init {init}: model_type {config.model_type!r}: not a CLIP or UniQA model.")
    return model.float(), tokenizer


# --------------------------------------------------------------------------------- zero-shot check
def load_eval_set(spec: str, split: str, max_samples: int, seed: int, cache_dir: str | None, processor=None,
                  skipped: SkippedImages | None = None, max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION):
    """``(images, scores)`` of a rating dataset's split: at most ``max_samples``, seeded choice.
    With ``processor``, its unreadable images are left out (added to ``skipped``), up to
    ``max_bad_fraction`` of them (`image_check.drop_unreadable`)."""
    import datasets

    import data_builders

    ((name, path),) = parse_named_dirs([spec], "--eval_dataset")
    loaded = data_builders.load(name, path, cache_dir=cache_dir)
    if split not in loaded:
        raise DataError(f"--eval_dataset {spec}: no split {split!r} (splits: {list(loaded)}).")
    data = loaded[split]
    if len(data) > max_samples:
        data = data.shuffle(seed=seed).select(range(max_samples))
    if len(data) < MIN_ITEMS:
        raise DataError(f"--eval_dataset {spec}: split {split!r} holds {len(data)} images, its SRCC needs at least {MIN_ITEMS}.")
    if processor is not None:
        data = drop_unreadable(data, "zero-shot check", processor, skipped if skipped is not None else SkippedImages(), max_bad_fraction)
        if len(data) < MIN_ITEMS:
            raise DataError(f"--eval_dataset {spec}: split {split!r} holds {len(data)} readable images, its SRCC needs at least {MIN_ITEMS}.")
    cells = data.cast_column("image", datasets.Image(decode=False))["image"]
    images = [decode_image_cell(cell, cell.get("path") or f"{name} row {i}") for i, cell in enumerate(cells)]
    return images, np.asarray(data["score"], dtype=np.float64)


@torch.no_grad()
def zero_shot_scores(model: UniQAModel, images, processor: UniQAImageProcessor, batch_size: int) -> np.ndarray:
    """Zero-shot scores of ``images`` with the model's current weights and prompts."""
    was_training = model.clip.training
    model.eval()
    model.refresh_prompt_embeds()  # the text tower has changed since the cache was filled
    device = model.clip.logit_scale.device
    scores = []
    for start in range(0, len(images), batch_size):
        pixels = processor(images[start : start + batch_size], return_tensors="pt")["pixel_values"].to(device)
        scores.append(model(pixel_values=pixels).scores.float().cpu())
    model.clip.train(was_training)
    return torch.cat(scores).numpy()


# --------------------------------------------------------------------------------- run log
class JsonlLog:
    """Append-only JSONL log on the main process; on resume, entries after the resumed step
    (written by the interrupted run) are dropped so the log reads as one uninterrupted run."""

    def __init__(self, path: str, enabled: bool, resume_step: int | None):
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None and os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                kept = [line for line in handle if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            with open(path, "w", encoding="utf-8") as handle:
                handle.writelines(kept)
        elif enabled and resume_step is None and os.path.isfile(path):
            os.remove(path)  # a fresh run

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


def batch_digest(indices: torch.Tensor) -> str:
    """A short fingerprint of the corpus rows of a global batch (to compare data order)."""
    return hashlib.sha1(indices.cpu().numpy().astype(np.int64).tobytes()).hexdigest()[:16]


def _tracker_config(args: PretrainArguments) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in asdict(args).items()}


def report_skipped(skipped: SkippedImages, failed_in_training: dict, accelerator, log, step: int) -> None:
    """Count the images left out (before training, and stood in for in training on any process)
    in the log (a ``skipped_images`` record, as `SkippedImages.as_results`) and one line."""
    failed = {}
    for part in gather_object([failed_in_training]) if accelerator.num_processes > 1 else [failed_in_training]:
        failed.update(part)
    if failed:
        skipped.by_split.setdefault("training", []).extend({"image": name, "error": failed[name]} for name in sorted(failed))
    results = skipped.as_results()
    if accelerator.is_main_process and results["count"]:
        log.write({"step": step, "skipped_images": results})
        logger.warning(
            f"{results['count']} unreadable images skipped ({', '.join(f'{part}: {len(items)}' for part, items in skipped.by_split.items())}); "
            f"see skipped_images in {LOG_FILE}."
        )


# --------------------------------------------------------------------------------- main
def main(args: PretrainArguments) -> str:
    """Pre-train and save the UniQA folder; returns ``args.output_dir``."""
    with output_lock(args.output_dir, "--output_dir"):  # one run at a time into a folder
        return pretrain(args)


def pretrain(args: PretrainArguments) -> str:
    report_to = None if args.report_to in (None, "", "none") else args.report_to
    if report_to == "tensorboard" and not is_tensorboard_available():
        logging.getLogger(__name__).warning("tensorboard is not installed: logging to the JSONL file only.")
        report_to = None
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
        # Accelerator does not read ACCELERATE_USE_CPU (multi-process CPU runs).
        cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available(),
    )
    logging.basicConfig(
        format=LOG_FORMAT,
        level=logging.INFO if accelerator.is_main_process else logging.WARNING,
    )
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    # Before any costly work: refuses a fresh start over an earlier run's checkpoints or model.
    checkpoint = resolve_checkpoint(args.output_dir, args.resume_from_checkpoint)
    set_seed(args.seed)

    model, tokenizer = load_init(args.init)
    # The saved model keeps the init's prompt groups unless --prompts says otherwise.
    init_prompts = [
        name if NAMED_PROMPT_GROUPS.get(name) == group else group
        for name, group in zip(model.config.prompt_group_names, model.config.prompt_groups)
    ]
    clip = model.clip
    clip.train()
    # CLIP trains its temperature with the towers (loading a UniQA model freezes it: unfreeze).
    clip.logit_scale.requires_grad_(not args.freeze_logit_scale)
    if args.gradient_checkpointing:
        clip.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.level_scores.requires_grad_(False)  # not part of pre-training
    check_output_space(args.output_dir, run_bytes(clip, args.checkpoints_total_limit))

    # Data: built on the main process first so the builders' caches are written once.
    with accelerator.main_process_first():
        corpus = load_pretrain_corpus(
            parse_named_dirs(args.corpus, "--corpus"),
            parse_named_dirs(args.exclude, "--exclude"),
            match_key=args.match_key,
            cache_dir=args.cache_dir,
        )
    if args.meaning_positives and not any(m for row in corpus["caption_meanings"] for m in row):
        raise SettingsError(
            "--meaning_positives: no caption of the corpus records its meaning (template captions of generate_captions.py "
            "do; captions written before it recorded them need writing again)."
        )
    size = clip.config.vision_config.image_size
    # Unreadable images (found from their headers: cheap for a large corpus) are skipped and
    # counted, up to --max_bad_fraction; found by the main process, the same for every process.
    skipped = SkippedImages()

    def on_the_main_process(search):
        return broadcast_object_list([search() if accelerator.is_main_process else None])[0]

    corpus = drop_unreadable(corpus, "corpus", UniQAImageProcessor(crop_size=size), skipped, args.max_bad_fraction,
                             args.dataloader_num_workers, decode=False, once=on_the_main_process)
    world = accelerator.num_processes
    per_device = args.per_device_train_batch_size
    if per_device is None:
        if args.train_batch_size % world:
            raise SettingsError(f"--train_batch_size {args.train_batch_size} is not divisible by {world} processes.")
        per_device = args.train_batch_size // world
    crops = args.crops_per_image
    if per_device % crops:
        raise SettingsError(f"A batch of {per_device} views per process is not divisible by --crops_per_image {crops}.")
    transform = PretrainTransform(
        size=size, mode=args.image_transform, hflip=args.hflip, detail_prob=args.detail_prob, detail_candidates=args.detail_candidates,
        rot90=args.rot90,
    )
    dataset = PretrainDataset(corpus, transform, seed=args.seed, crops_per_image=crops)
    sampler = GlobalBatchSampler(len(dataset), per_device // crops, world, accelerator.process_index, seed=args.seed)
    steps_per_epoch = len(sampler)
    if steps_per_epoch == 0:
        raise SettingsError(
            f"{len(dataset)} images are fewer than one global batch of {sampler.global_batch_size}: lower the batch size "
            "(--train_batch_size or --per_device_train_batch_size)."
        )
    max_length = args.max_caption_length or clip.config.text_config.max_position_embeddings
    dataloader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=PretrainCollator(tokenizer, max_length),
        num_workers=args.dataloader_num_workers,
        pin_memory=torch.cuda.is_available(),
    )
    max_steps = args.max_steps or args.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(max_steps / steps_per_epoch)

    parameters = [p for p in clip.parameters() if p.requires_grad]
    optimizer_class = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(
        parameters,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.weight_decay,
    )
    # Stepped by hand once per optimizer step (a prepared scheduler steps once per process).
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=max_steps
    )
    trainer, optimizer = accelerator.prepare(ContrastiveCLIP(clip), optimizer)
    JsonState(lr_scheduler, "lr_scheduler.json").attach(accelerator)
    # What the checkpointed state depends on: a resume that changed it is refused (RunLayout).
    RunLayout(
        num_images=len(dataset),
        images=fingerprint(corpus["image_key"]),
        global_batch_size=sampler.global_batch_size,
        seed=args.seed,
        transform=args.image_transform,
        hflip=args.hflip,
        crops_per_image=crops,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        lr_scheduler=args.lr_scheduler,
        warmup_steps=args.warmup_steps,
        # The schedule's length shapes every non-constant schedule.
        max_steps=None if args.lr_scheduler == "constant" else max_steps,
        # Recorded only when used, so checkpoints written before these options existed still resume.
        **({"detail_prob": args.detail_prob, "detail_candidates": args.detail_candidates} if args.detail_prob else {}),
        **({"ema_decay": args.ema_decay} if args.ema_decay is not None else {}),
        **({"rot90": True} if args.rot90 else {}),
        **({"meaning_positives": True} if args.meaning_positives else {}),
        freeze_logit_scale=args.freeze_logit_scale,
        # The starting model and how captions are tokenised (another --init would change both).
        model=tensors_fingerprint((clip.visual_projection.weight, clip.text_projection.weight)),
        tokenizer_size=len(tokenizer),
        max_caption_length=max_length,
    ).attach(accelerator)
    # Every process keeps the average (DDP keeps the weights equal); registered last, so checkpoints
    # of runs without it keep their layout.
    average = WeightAverage(clip, args.ema_decay) if args.ema_decay is not None else None
    if average is not None:
        accelerator.register_for_checkpointing(average.average)
    forward = torch.compile(trainer) if args.torch_compile else trainer
    loss_fn = ClipLoss()

    global_step = 0
    if checkpoint is not None:
        accelerator.load_state(checkpoint)
        global_step = checkpoint_step(checkpoint)
        logger.info(f"Resumed from {checkpoint} at step {global_step}.")
    log = JsonlLog(
        os.path.join(args.output_dir, LOG_FILE), accelerator.is_main_process, global_step if checkpoint else None
    )
    if report_to:
        accelerator.init_trackers("uniqa_pretrain", config=_tracker_config(args))

    eval_set = None
    if args.eval_dataset and accelerator.is_main_process:
        eval_processor = UniQAImageProcessor(crop_size=size, view_policy=args.eval_view_policy)
        eval_set = load_eval_set(args.eval_dataset, args.eval_split, args.eval_max_samples, args.seed, args.cache_dir,
                                 eval_processor, skipped, args.max_bad_fraction)
        model.set_prompts(args.eval_prompts, tokenizer)

    def zero_shot_check(step: int) -> None:
        if eval_set is not None:
            with average.swapped_into(clip) if average is not None else contextlib.nullcontext():
                scores = zero_shot_scores(model, eval_set[0], eval_processor, args.eval_batch_size)
            record = {
                "eval/zero_shot_srcc": srcc(scores, eval_set[1]),
                "eval/zero_shot_plcc": plcc(scores, eval_set[1]),
            }
            log.write({"step": step, **record})
            accelerator.log(record, step=step)
            logger.info(f"step {step}: zero-shot SRCC {record['eval/zero_shot_srcc']:.4f}")
        accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        logger.info(
            f"{len(dataset)} images, {steps_per_epoch} steps an epoch, global batch {sampler.global_batch_size} "
            f"images x {crops} crops ({per_device} views x {world} processes), {max_steps} steps"
        )
    progress = tqdm(
        total=max_steps, initial=global_step, desc="pre-training", disable=not accelerator.is_local_main_process
    )
    # Images that passed the header check and failed to decode in training: {name: error}, this process.
    failed_in_training: dict = {}
    first_epoch = global_step // steps_per_epoch
    for epoch in range(first_epoch, num_epochs):
        if global_step >= max_steps:
            break
        sampler.set_epoch(epoch)
        seen = global_step - epoch * steps_per_epoch
        batches = accelerator.skip_first_batches(dataloader, seen) if seen else dataloader
        for batch in batches:
            for entry in batch["skipped"]:
                if entry["image"] not in failed_in_training:
                    failed_in_training[entry["image"]] = entry["error"]
                    logger.warning(f"Skipped (unreadable, the next corpus image stood in) at step {global_step + 1}: {entry['error']}")
                    before = len(skipped.by_split.get("corpus", ()))  # found from the headers
                    unusable = len(failed_in_training) + before
                    if unusable > args.max_bad_fraction * (len(dataset) + before):
                        raise DataError(
                            f"{unusable} corpus images cannot be read ({len(failed_in_training)} found in training, the latest "
                            f"{entry['error']}): more than --max_bad_fraction {args.max_bad_fraction:g} of them; fix or remove "
                            "them, or raise --max_bad_fraction."
                        )
            image_embeds, text_embeds, logit_scale = forward(
                batch["pixel_values"].to(accelerator.device, non_blocking=True),
                batch["input_ids"].to(accelerator.device),
                batch["attention_mask"].to(accelerator.device),
            )
            # Several crops of one image, or captions of one meaning: each other's positives (else the plain CLIP loss).
            groups = positive_groups(batch["indices"], batch["meanings"], args.meaning_positives) if crops > 1 or args.meaning_positives else None
            loss = loss_fn(image_embeds, text_embeds, logit_scale, groups=groups)
            check_finite_loss(accelerator, loss, global_step + 1)
            accelerator.backward(loss)
            if args.max_grad_norm is not None:
                accelerator.clip_grad_norm_(parameters, args.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if average is not None:
                average.update(clip)
            global_step += 1

            digest = batch_digest(accelerator.gather(batch["indices"].to(accelerator.device)))
            record = {
                "train/loss": loss.item(),
                "train/lr": lr_scheduler.get_last_lr()[0],
                "train/logit_scale": logit_scale.item(),
            }
            log.write({"step": global_step, "epoch": epoch, "batch": digest, **record})
            accelerator.log(record, step=global_step)
            progress.update(1)
            progress.set_postfix(loss=f"{record['train/loss']:.4f}")

            if global_step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit)
            if args.eval_steps and global_step % args.eval_steps == 0:
                zero_shot_check(global_step)
            if global_step >= max_steps:
                break
    progress.close()
    if args.eval_dataset and not (args.eval_steps and global_step % args.eval_steps == 0):
        zero_shot_check(global_step)  # the final check (unless the last step just had one)

    accelerator.wait_for_everyone()
    report_skipped(skipped, failed_in_training, accelerator, log, global_step)
    if accelerator.is_main_process:
        if args.gradient_checkpointing:
            clip.activation_checkpointing_disable()
        model.eval()
        if average is not None:
            average.copy_into(clip)
        check_finite_parameters(model, f"after step {global_step}")
        model.set_prompts(args.prompts or init_prompts, tokenizer)

        def write(folder: str) -> None:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)

        write_model_folder(args.output_dir, write)
        logger.info(f"Saved the pre-trained UniQA model to {args.output_dir}.")
    # Every process waits for the save, then drops DDP (its reducer holds process-group work)
    # while the group is still whole: a group torn down under a live DDP can hang the launch.
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    accelerator.end_training()
    return args.output_dir


if __name__ == "__main__":
    run_script(main, parse_args, TRAINING_ERRORS)
