"""Fine-tuning UniQA on a rating dataset (the library of `train_scripts/train_adapter.py`, which
also `evaluate.py`'s protocols run): `FinetuneConfig`, the splits, the model to train (adapter,
full or LoRA), the training loop with its checkpoints, and the trained folder with its card.
See `train_adapter.py` for the modes and the recipe defaults."""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import logging
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import data_builders
from model_cards import inherited_license, write_model_card
from modeling_uniqa import UniQAModel
from modeling_uniqa.clip_tokenizer import resolve_prompt_tokenizer
from modeling_uniqa.configuration_uniqa import parse_view_policy, view_count
from modeling_uniqa.core import model_folder
from modeling_uniqa.core.output_lock import output_lock
from train_scripts.common.checkpointing import (
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
from train_scripts.common.errors import DataError, SettingsError
from train_scripts.common.feature_bank import EmbeddingHead, FeatureBank, bank_cache_file, embed_views, image_encoder
from train_scripts.common.image_check import (
    DEFAULT_MAX_BAD_FRACTION,
    SkippedImages,
    check_max_bad_fraction,
    drop_unreadable,
)
from train_scripts.common.image_views import BankViews, EvalViews, ImageViewDataset, TrainCrop, image_sources
from train_scripts.common.metrics import MIN_ITEMS, compute_metrics, srcc
from train_scripts.common.numerics import check_finite_loss, check_finite_parameters
from train_scripts.common.reference_ranking import rank_pairs, reference_rank_loss, reference_rows

logger = logging.getLogger(__name__)

MODES = ("adapter", "full", "lora")
# Epochs of the paper (Section V-C): 50 for the small sets, 10 for the big IAA sets, 20 otherwise.
EPOCH_PRESETS = {"live": 50, "csiq": 50, "clive": 50, "ava": 10, "baid": 10}
DEFAULT_EPOCHS = 20
DEFAULT_BACKBONE_LR = {"full": 2e-6, "lora": 1e-4}  # full: the paper's; lora: ours (no paper row)
# LoRA targets: the attention projections of the vision tower only.
LORA_TARGET_MODULES = r".*clip\.vision_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"
LORA_DIR = "lora"
LORA_HEAD_FILE = "uniqa_level_scores.safetensors"
RESULTS_FILE = "eval_results.json"
# FinetuneConfig fields a resume may change: they do not touch the checkpointed training state.
RESUMABLE_SETTINGS = ("bank_cache_dir", "eval_batch_size", "num_workers", "checkpointing_steps", "checkpoints_total_limit", "resume_from_checkpoint", "tokenizer",
                      "max_bad_fraction")
PREDICTIONS_FILE = "test_predictions.csv"


@dataclass
class FinetuneOptions:
    """The fine-tuning options: the flags of `train_adapter.py` and of `evaluate.py`'s training
    protocols (each field is one flag). `None` means "decided by the mode or the dataset"
    (`finetune_config` and `FinetuneConfig` decide)."""

    _argument_group_name = "fine-tuning"

    mode: str = field(default="adapter", metadata={"choices": MODES, "help": "adapter (backbone frozen), full (backbone too) or lora."})
    num_train_epochs: int | None = field(default=None, metadata={"help": f"Default: the paper's preset for the dataset (EPOCH_PRESETS, else {DEFAULT_EPOCHS})."})
    per_device_train_batch_size: int = 8
    learning_rate: float = field(default=2e-4, metadata={"help": "Adapter and level scores."})
    backbone_learning_rate: float | None = field(default=None, metadata={"help": "full: 2e-6 (paper); lora: 1e-4."})
    lora_rank: int = 8
    lora_alpha: float | None = field(default=None, metadata={"help": "Default: 2 x rank."})
    seed: int = field(default=123, metadata={"help": "Seed of training: initialisation, crops, batch order."})
    feature_bank: bool | None = field(default=None, metadata={
        "help": "Adapter mode: embed a bank of augmented views once and sample from it every epoch (default on in adapter mode).",
        "off_help": "Crop afresh every epoch instead of sampling the bank."})
    bank_crops: int = field(default=5, metadata={"help": "Random crops per image in the bank (each also flipped)."})
    bank_halved_crops: int = field(default=0, metadata={
        "help": "Of --bank_crops, how many are cut from the image halved by a 2x2 average, as the pyramid<N> test-time "
        "views are (images under 2 x the crop size on their short side: none)."})
    # A test score averages several views' scores; one view of an image is a noisy sample of it.
    train_views: int = field(default=1, metadata={
        "help": "Feature bank: distinct views of each image per step whose scores are averaged before the loss, as the "
        "test-time views' scores are (default 1: one view per step, the release's way; at most 2 x --bank_crops)."})
    reference_rank_weight: float = field(default=0.0, metadata={
        "help": "Adapter mode with the feature bank, on data whose references are rows (KADID-10k layouts with "
        "--dataset_option include_references=true): add this weight x a pairwise ranking loss that each distorted image "
        "of a batch scores below its own reference (common/reference_ranking.py); 0: the MSE alone, the paper's loss."})
    bank_cache_dir: str | None = field(default=None, metadata={"help": "Keep feature banks here, keyed by backbone, images and augmentation."})
    validation_fraction: float = field(default=0.0, metadata={"help": "Carve this share of the training split for model selection."})
    select_on_test: bool = field(default=False, metadata={"help": "Pick the best epoch on the test split (the release's habit; optimistic)."})
    # evaluate for selection every N steps (the release's val_freq); None: every epoch
    selection_steps: int | None = field(default=None, metadata={
        "help": "With --select_on_test (or --validation_fraction): evaluate every N steps, not every epoch, and keep the best "
        "(the release's val_freq cadence)."})
    view_policy: str | None = field(default=None, metadata={"help": "Test-time views (default: the model's, random10)."})
    eval_batch_size: int = field(default=64, metadata={"help": "Views per forward when embedding."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers decoding images."})
    prompts: str | None = field(default=None, metadata={"help": "Prompt groups or ensemble to train with (e.g. natural, aigc, default)."})
    tokenizer: str | None = field(default=None, metadata={"help": "CLIP tokenizer folder for --prompts (default: the model folder)."})
    # unreadable images skipped, up to this share of a split
    max_bad_fraction: float = field(default=DEFAULT_MAX_BAD_FRACTION, metadata={
        "help": "Unreadable images (empty, truncated, not images) are skipped and counted (skipped_images in the results) "
        f"up to this share of a split; beyond it the run stops (default {DEFAULT_MAX_BAD_FRACTION})."})


@dataclass
class FinetuneCheckpointing:
    """Checkpoints of a fine-tuning run (the flags of `train_adapter.py`; `evaluate.py`'s runs
    keep the defaults)."""

    _argument_group_name = "checkpoints"

    checkpointing_steps: int | None = field(default=None, metadata={"help": "Also checkpoint every N steps (always at each epoch's end)."})
    checkpoints_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints (default 2)."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": '"latest" or a checkpoint folder.'})


@dataclass
class FinetuneConfig(FinetuneCheckpointing, FinetuneOptions):
    """Everything `finetune` needs besides the model and the data: the options, resolved (the
    epochs, feature bank and backbone learning rate) and checked, and the checkpointing."""

    def __post_init__(self):
        # Every check below is about the user's flags: a SettingsError is a line and exit 2, not a traceback.
        try:
            self._resolve_and_check()
        except SettingsError:
            raise
        except ValueError as error:
            raise SettingsError(str(error)) from None

    def _resolve_and_check(self) -> None:
        if self.num_train_epochs is None:
            self.num_train_epochs = DEFAULT_EPOCHS
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if self.feature_bank is None:
            self.feature_bank = self.mode == "adapter"
        if self.feature_bank and self.mode != "adapter":
            raise ValueError(f"The feature bank needs a frozen backbone: it works in adapter mode only, not {self.mode!r}.")
        if self.train_views > 1 and not self.feature_bank:
            raise ValueError("train_views averages views drawn from the feature bank: it needs the feature bank (adapter mode).")
        if not 0 <= self.bank_halved_crops <= self.bank_crops:
            raise ValueError(f"bank_halved_crops ({self.bank_halved_crops}) must be between 0 and bank_crops ({self.bank_crops}).")
        if self.bank_halved_crops and not self.feature_bank:
            raise ValueError("bank_halved_crops sets the feature bank's views: it needs the feature bank (adapter mode).")
        if self.train_views > 2 * self.bank_crops:
            raise ValueError(f"train_views ({self.train_views}) exceeds the bank's {2 * self.bank_crops} views per image (2 x bank_crops).")
        if not (self.reference_rank_weight >= 0 and math.isfinite(self.reference_rank_weight)):
            raise ValueError(f"reference_rank_weight must be a finite number >= 0, got {self.reference_rank_weight}.")
        if self.reference_rank_weight and not self.feature_bank:
            raise ValueError("reference_rank_weight scores each image's reference from the feature bank: it needs the feature bank (adapter mode).")
        if self.backbone_learning_rate is None:
            self.backbone_learning_rate = DEFAULT_BACKBONE_LR.get(self.mode)
        for name in ("num_train_epochs", "per_device_train_batch_size", "bank_crops", "train_views", "lora_rank", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("checkpointing_steps", "checkpoints_total_limit", "selection_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}.")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}.")
        if self.select_on_test and self.validation_fraction:
            raise ValueError("Choose one of select_on_test and validation_fraction.")
        if self.selection_steps and not (self.select_on_test or self.validation_fraction):
            raise ValueError("selection_steps sets how often a selection evaluates: give select_on_test or validation_fraction with it.")
        if self.view_policy is not None:
            parse_view_policy(self.view_policy)
        check_max_bad_fraction(self.max_bad_fraction)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
@dataclass
class RatingSplits:
    """The parts of a rating dataset a run uses, and its metadata (`data_builders.get_metadata`,
    plus `train_parts`: the dataset splits the training part is made of)."""

    train: object
    test: object
    validation: object | None
    metadata: dict


# The paper's splits (Section V-C): random 80/20 splits of all images for every IQA dataset, the
# official KonIQ-10k and FLIVE sets included (the release's split files do the same); the standard
# (official) splits for the IAA sets.
PAPER_OFFICIAL_SPLITS = ("ava", "aadb", "baid")
# Official validation parts the paper trains on: BAID's (train + validation = 53,937 images).
PAPER_TRAIN_ON_VALIDATION = ("baid",)


def paper_split_scheme(name: str) -> str:
    """The `split_scheme` the paper uses for dataset `name`: `official` for AVA, AADB and BAID,
    `random` (80/20 of all images) for every other dataset."""
    return "official" if name in PAPER_OFFICIAL_SPLITS else "random"


def paper_split_options(name: str, options: dict | None, seed: int) -> dict:
    """Builder options with the paper's split (`paper_split_scheme`) and `seed`, unless `options`
    names a split (`split_scheme` or `split_file`) or a seed."""
    options = dict(options or {})
    options.setdefault("seed", seed)
    if not options.get("split_file"):
        options.setdefault("split_scheme", paper_split_scheme(name))
    return options


def describe_split(split: dict | None, train_parts=("train",)) -> str:
    """One line saying which split a run used (from the metadata's `split` and `train_parts`)."""
    split = split or {}
    scheme = split.get("split_scheme")
    if scheme == "random":
        text = f"random {split.get('train_fraction', 0.8):.0%}/{1 - split.get('train_fraction', 0.8):.0%} split {split.get('split_index', 0)} (seed {split.get('seed')}) of all images"
    elif scheme == "official":
        text = "the official split"
    elif scheme == "file":
        text = f"the split file {split.get('split_file')}"
    else:
        text = f"split scheme {scheme!r}"
    if split.get("few_label") is not None:
        text += f", {split['few_label']} training images (draw {split.get('repetition', 0)})"
    if list(train_parts) != ["train"]:
        text += f", trained on {' + '.join(train_parts)}"
    return text


def load_splits(
    name: str,
    data_dir: str,
    split_index: int = 0,
    few_label: int | None = None,
    repetition: int = 0,
    seed: int = 123,
    cache_dir: str | None = None,
    options: dict | None = None,
    train_on_validation: bool | None = None,
) -> RatingSplits:
    """Build dataset `name` and return its train, test and (official) validation parts.

    The split is the paper's unless `options` names one (`split_scheme` or `split_file`):
    `paper_split_scheme(name)`. `train_on_validation`: train on the official train + validation
    parts (no validation part is left for selection); `None`: the paper's choice (BAID only).
    """
    options = paper_split_options(name, options, seed)
    dataset = data_builders.load(name, data_dir, cache_dir=cache_dir, split_index=split_index, few_label=few_label, repetition=repetition, **options)
    metadata = data_builders.get_metadata(dataset)
    if "train" not in dataset or "test" not in dataset:
        raise DataError(
            f"{name} at {data_dir}: fine-tuning needs train and test splits, the dataset has {list(dataset)} "
            f"(too few images to split, {sum(len(part) for part in dataset.values())}, or a split file that names no test images)."
        )
    if metadata.get("mos_range") is None:
        raise DataError(f"{name} at {data_dir}: the dataset metadata has no MOS range; pass the mos_range option.")
    train, validation = dataset["train"], dataset.get("validation")
    if train_on_validation is None:
        train_on_validation = name in PAPER_TRAIN_ON_VALIDATION
    if train_on_validation and validation is not None:
        train, validation = datasets.concatenate_datasets([train, validation]), None
        metadata["train_parts"] = ["train", "validation"]
    else:
        metadata["train_parts"] = ["train"]
    return RatingSplits(train, dataset["test"], validation, metadata)


def check_part_sizes(metadata: dict, train, test, validation) -> None:
    """Refuse parts too small to train on or to measure correlations on (before training)."""
    if len(train) == 0:
        raise DataError(f"The training split of {metadata.get('dataset') or 'the dataset'} is empty: nothing to fine-tune on.")
    for part, data in (("test", test), ("validation", validation)):
        if data is not None and len(data) < MIN_ITEMS:  # fail now, not after training
            raise DataError(f"The {part} part holds {len(data)} images: its correlations need at least {MIN_ITEMS}.")


def carve_validation(train, fraction: float, seed: int):
    """Split `fraction` of `train` off as a validation part, by reference image when the
    dataset has a `reference` column (so no content is in both), else by image."""
    column = "reference" if "reference" in train.column_names else "image_name"
    units = train[column]
    keep, _ = data_builders.random_split(units, seed=seed, split_index=0, train_fraction=1.0 - fraction)
    train_rows = [row for row, unit in enumerate(units) if unit in keep]
    validation_rows = [row for row, unit in enumerate(units) if unit not in keep]
    if not train_rows or not validation_rows:
        raise SettingsError(f"validation_fraction={fraction} leaves an empty part of the {len(train)} training images.")
    return train.select(train_rows), train.select(validation_rows)


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------
def load_model(model_path: str, prompts: str | None = None, tokenizer_path: str | None = None) -> UniQAModel:
    """The model to fine-tune, in float32, with an adapter (a new one if the checkpoint has none):
    the package's one loader (`modeling_uniqa.core.model_folder.load_model`)."""
    return model_folder.load_model(model_path, use_adapter=True, prompts=prompts, tokenizer_dir=tokenizer_path).model


def freeze_for_mode(model: UniQAModel, mode: str):
    """Set `requires_grad` for a mode; returns the model. "full" trains both CLIP towers; LoRA
    mode freezes the backbone here and `add_lora` adds the trainable low-rank weights."""
    model.set_trainable(adapter=True, backbone=mode == "full")
    return model


def add_lora(model: UniQAModel, rank: int, alpha: float | None):
    """Wrap `model` with peft LoRA on the vision tower's attention; the adapter trains fully."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=0.0, target_modules=LORA_TARGET_MODULES, modules_to_save=["adapter"])
    peft_model = get_peft_model(model, config)
    model.level_scores.requires_grad_(True)  # a bare parameter: peft leaves it frozen
    return peft_model


def save_lora(peft_model, directory: str) -> None:
    """Save the LoRA weights and the adapter with peft, and the level scores beside them."""
    peft_model.save_pretrained(directory)
    save_file({"level_scores": peft_model.get_base_model().level_scores.detach().cpu().contiguous()}, os.path.join(directory, LORA_HEAD_FILE))


def load_lora(base_model, lora_dir: str):
    """`PeftModel.from_pretrained(base_model, lora_dir)` plus the trained level scores.

    `base_model` is the model fine-tuning started from (a `UniQAModel` or its path). The result
    scores like the trained model; `.merge_and_unload()` gives a plain `UniQAModel`.
    """
    from peft import PeftModel

    if isinstance(base_model, str):
        base_model = UniQAModel.from_pretrained(base_model, use_adapter=True, dtype=torch.float32)
    head_file = os.path.join(lora_dir, LORA_HEAD_FILE)
    if not os.path.isfile(head_file):
        raise FileNotFoundError(f"{head_file}: missing; a LoRA folder written by train_adapter.py holds the level scores there.")
    peft_model = PeftModel.from_pretrained(base_model, lora_dir)
    with torch.no_grad():
        base_model.level_scores.copy_(load_file(head_file)["level_scores"])
    return peft_model


def trainable_state(module) -> dict:
    """A CPU copy of the parameters that train (the state model selection keeps)."""
    return {name: param.detach().cpu().clone() for name, param in module.named_parameters() if param.requires_grad}


def load_trainable_state(module, state: dict) -> None:
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
class TrainingProgress:
    """Per-epoch history, model selection and the LR schedule, saved in every checkpoint as
    JSON plus safetensors (no pickles), through accelerate's save/load-state hooks."""

    FILE = "training_progress.json"
    BEST_FILE = "best_trainable.safetensors"

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.epochs: list = []
        self.best_epoch: int | None = None
        self.best_step: int | None = None
        self.best_srcc = -math.inf
        self.best_state: dict = {}

    def save(self, directory: str) -> None:
        state = {"epochs": self.epochs, "best_epoch": self.best_epoch, "best_step": self.best_step, "best_srcc": self.best_srcc if self.best_state else None,
                 "scheduler": self.scheduler.state_dict()}
        with open(os.path.join(directory, self.FILE), "w", encoding="utf-8") as handle:
            json.dump(state, handle)
        if self.best_state:
            save_file({name: value.contiguous() for name, value in self.best_state.items()}, os.path.join(directory, self.BEST_FILE))

    def load(self, directory: str) -> None:
        path = os.path.join(directory, self.FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing; {directory} was not written by train_adapter.py.")
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        self.epochs, self.best_epoch, self.best_step = state["epochs"], state["best_epoch"], state.get("best_step")
        self.best_srcc = -math.inf if state["best_srcc"] is None else state["best_srcc"]
        self.scheduler.load_state_dict(state["scheduler"])
        best = os.path.join(directory, self.BEST_FILE)
        self.best_state = load_file(best) if os.path.isfile(best) else {}

    def attach(self, accelerator: Accelerator) -> None:
        """Save and load with every `accelerator.save_state` / `load_state`."""
        accelerator.register_save_state_pre_hook(lambda models, weights, directory: accelerator.is_main_process and self.save(directory))
        accelerator.register_load_state_pre_hook(lambda models, directory: self.load(directory))


def epoch_batches(num_items: int, batch_size: int, seed: int, epoch: int, process_index: int, num_processes: int) -> list:
    """This process's batches of item indices for an epoch: a seeded permutation, padded by
    wrapping so that every process runs the same number of steps."""
    order = np.random.default_rng([seed, epoch, 3]).permutation(num_items)
    padded = math.ceil(num_items / num_processes) * num_processes
    order = np.resize(order, padded)  # repeats the first items
    mine = order[process_index::num_processes].tolist()
    return [mine[start : start + batch_size] for start in range(0, len(mine), batch_size)]


def score_embeddings(head: EmbeddingHead, embeds: torch.Tensor, device, batch_size: int = 1024) -> np.ndarray:
    """Scores (n,) of view embeddings (n, views, dim) through the head, no gradients."""
    scores = []
    with torch.no_grad():
        for start in range(0, embeds.shape[0], batch_size):
            scores.append(head(embeds[start : start + batch_size].to(device)).float().cpu())
    return torch.cat(scores).numpy()


def finetune(model_path: str, splits: RatingSplits, output_dir: str, config: FinetuneConfig) -> dict:
    """Fine-tune the UniQA model at `model_path` on `splits` and write the trained model folder.

    Returns the results (also written to `<output_dir>/eval_results.json`): `srcc` and `plcc` on
    the test part, the other metrics, per-epoch history, the selection rule, and the test
    `predictions` (normalised scores) with their `mos`.
    """
    with output_lock(output_dir, "--output_dir"):  # one run at a time into a folder
        return _finetune(model_path, splits, output_dir, config)


def _finetune(model_path: str, splits: RatingSplits, output_dir: str, config: FinetuneConfig) -> dict:
    accelerator = Accelerator()
    set_seed(config.seed)
    os.makedirs(output_dir, exist_ok=True)
    # Before any costly work: refuses a fresh start over an earlier run's checkpoints or model.
    checkpoint = resolve_checkpoint(output_dir, config.resume_from_checkpoint)
    metadata = splits.metadata
    train_data, validation_data = splits.train, splits.validation
    if config.validation_fraction:
        train_data, validation_data = carve_validation(train_data, config.validation_fraction, config.seed)
    test_data = splits.test
    check_part_sizes(metadata, train_data, test_data, validation_data)
    if config.select_on_test and config.selection_steps:
        selection = f"best test SRCC over evaluations every {config.selection_steps} steps (optimistic: the release's rule and cadence)"
        selection_data = splits.test
    elif config.select_on_test:
        selection, selection_data = "best epoch on the test split (optimistic: the release's habit)", splits.test
    elif validation_data is not None:
        how = f"{config.validation_fraction:.0%} carved from the training split" if config.validation_fraction else "the official validation split"
        every = f"step of evaluations every {config.selection_steps} steps" if config.selection_steps else "epoch"
        selection, selection_data = f"best {every} on a validation part ({how})", validation_data
    else:
        selection, selection_data = "last epoch", None

    model = freeze_for_mode(load_model(model_path, config.prompts, config.tokenizer), config.mode)
    trainee_model = add_lora(model, config.lora_rank, config.lora_alpha) if config.mode == "lora" else model
    processor = model_folder.load_image_processor(model_path, model)
    check_output_space(output_dir, run_bytes(trainee_model, config.checkpoints_total_limit))
    # Unreadable images (empty, truncated, not images, shapes the processor refuses) are skipped
    # and counted, up to config.max_bad_fraction of a part; found now, not an epoch into training.
    skipped = SkippedImages()
    train_data, test_data = (drop_unreadable(data, part, processor, skipped, config.max_bad_fraction, config.num_workers)
                             for part, data in (("train", train_data), ("test", test_data)))
    if validation_data is not None:
        validation_data = drop_unreadable(validation_data, "validation", processor, skipped, config.max_bad_fraction, config.num_workers)
    check_part_sizes(metadata, train_data, test_data, validation_data)
    if config.select_on_test:
        selection_data = test_data
    elif validation_data is not None:
        selection_data = validation_data
    crop = processor.crop_size
    view_policy = config.view_policy or model.config.view_policy
    test_views = EvalViews(processor, view_policy, model.config.view_seed)
    views_per_test_image = view_count(view_policy)
    device = accelerator.device
    model.to(device)

    train_sources = image_sources(train_data)
    labels = torch.tensor(train_data["score"], dtype=torch.float32)
    references = reference_rows(train_data) if config.reference_rank_weight else None  # before any costly work
    head = EmbeddingHead(model)

    bank = None
    if config.feature_bank:
        settings = {"crop": crop, "crops": config.bank_crops, "seed": config.seed, "mean": processor.image_mean, "std": processor.image_std}
        if config.bank_halved_crops:  # only when set, so caches of earlier banks keep their keys
            settings["halved_crops"] = config.bank_halved_crops
        cache_file = bank_cache_file(config.bank_cache_dir, model, train_sources, settings) if config.bank_cache_dir else None
        bank_data = ImageViewDataset(train_sources, processor, BankViews(crop, config.seed, config.bank_crops, config.bank_halved_crops))
        model.eval()
        bank_start = time.perf_counter()
        bank = FeatureBank.build(image_encoder(model), bank_data, 2 * config.bank_crops, accelerator, config.eval_batch_size, config.num_workers, cache_file)
        bank_seconds = time.perf_counter() - bank_start
        trainee = head
    else:
        bank_seconds = None
        trainee = trainee_model
        train_views = ImageViewDataset(train_sources, processor, TrainCrop(crop, config.seed))

    head_params, backbone_params = [], []
    for name, param in trainee.named_parameters():
        if param.requires_grad:
            is_head = name.endswith("level_scores") or re.search(r"(^|\.)adapter\.", name) is not None
            (head_params if is_head else backbone_params).append(param)
    groups = [{"params": head_params, "lr": config.learning_rate}]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": config.backbone_learning_rate})
    optimizer = torch.optim.Adam(groups)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.num_train_epochs)
    trainee, optimizer = accelerator.prepare(trainee, optimizer)
    # What the checkpointed state depends on: a resume that changed it is refused (RunLayout),
    # checked before anything is loaded.
    RunLayout(
        train_images=fingerprint(zip(train_data["image_name"], train_data["score"])),
        # The starting model (a resume on another backbone would mix features): its projections.
        model=tensors_fingerprint((model.clip.visual_projection.weight, model.clip.text_projection.weight)),
        num_processes=accelerator.num_processes,
        **{key: value for key, value in asdict(config).items() if key not in RESUMABLE_SETTINGS},
    ).attach(accelerator)
    progress = TrainingProgress(scheduler)
    progress.attach(accelerator)

    # Embeddings of evaluation views are constants when the backbone is frozen: compute them once.
    frozen_backbone = config.mode == "adapter"
    eval_cache: dict = {}

    def evaluate_on(data, key: str) -> tuple:
        """(normalised scores, MOS) of `data`'s images with the test-time views."""
        if key not in eval_cache or not frozen_backbone:
            model.eval()
            dataset = ImageViewDataset(image_sources(data), processor, test_views)
            eval_cache[key] = embed_views(image_encoder(model), dataset, views_per_test_image, accelerator, config.eval_batch_size, config.num_workers, desc=f"Embedding {key} views")
        return score_embeddings(head, eval_cache[key], device), np.asarray(data["mos"], dtype=np.float64)

    batches_per_epoch = len(epoch_batches(len(train_sources), config.per_device_train_batch_size, config.seed, 0, accelerator.process_index, accelerator.num_processes))
    total_steps = batches_per_epoch * config.num_train_epochs
    global_step = 0
    if checkpoint is not None:
        accelerator.load_state(checkpoint)
        global_step = checkpoint_step(checkpoint)
        logger.info("Resumed from %s (step %d of %d).", checkpoint, global_step, total_steps)
    first_epoch, skip_batches = divmod(global_step, batches_per_epoch)

    def select(epoch: int, record: dict) -> None:
        """Evaluate on the selection part; keep the trainable state when it is the best so far."""
        predictions, mos = evaluate_on(selection_data, "selection")
        value = abs(srcc(predictions, mos))
        record.setdefault("selection", []).append({"step": global_step, "srcc": value})
        record["selection_srcc"] = value
        if value > progress.best_srcc:
            progress.best_srcc, progress.best_epoch, progress.best_step = value, epoch + 1, global_step
            progress.best_state = trainable_state(accelerator.unwrap_model(trainee))

    bar = tqdm(total=total_steps, initial=global_step, desc=f"Fine-tuning ({config.mode})", disable=not accelerator.is_local_main_process)
    for epoch in range(first_epoch, config.num_train_epochs):
        trainee.train()
        epoch_start = time.perf_counter()
        batches = epoch_batches(len(train_sources), config.per_device_train_batch_size, config.seed, epoch, accelerator.process_index, accelerator.num_processes)
        batches = batches[skip_batches if epoch == first_epoch else 0 :]
        if bank is not None:
            views = bank.draw_views(torch.Generator().manual_seed(config.seed * 100003 + epoch), config.train_views)
            inputs = ((torch.tensor(batch), bank.sample(torch.tensor(batch), views)) for batch in batches)
        else:
            keyed = [[(index, epoch) for index in batch] for batch in batches]
            inputs = DataLoader(train_views, batch_sampler=keyed, num_workers=config.num_workers)
        losses, record = [], {"epoch": epoch + 1}
        for indices, features in inputs:
            features = features.to(device)
            pairs = rank_pairs(indices, references, labels) if references is not None else None
            if pairs is not None:  # the references' views ride in the same forward (one DDP pass a step)
                features = torch.cat([features, bank.sample(pairs[1], views).to(device)])
            if bank is not None:
                scores = trainee(features)
            else:
                scores = trainee(pixel_values=features.flatten(0, 1)).scores
            scores, reference_scores = scores[: len(indices)], scores[len(indices) :]
            loss = F.mse_loss(scores, labels[indices].to(device))
            if pairs is not None:
                loss = loss + config.reference_rank_weight * reference_rank_loss(scores[pairs[0].to(device)], reference_scores)
            check_finite_loss(accelerator, loss, global_step + 1)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            global_step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if selection_data is not None and config.selection_steps and global_step % config.selection_steps == 0:
                select(epoch, record)  # the release's cadence: every val_freq iterations
                trainee.train()
            if config.checkpointing_steps and global_step % config.checkpointing_steps == 0 and global_step % batches_per_epoch:
                save_checkpoint(accelerator, output_dir, global_step, config.checkpoints_total_limit)
        # The epoch's mean loss over all processes (steps of a resumed epoch only).
        mean_loss = accelerator.gather(torch.stack(losses).mean()[None]).mean().item() if losses else float("nan")
        scheduler.step()
        record.update(train_loss=mean_loss, lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - epoch_start)
        if selection_data is not None and not config.selection_steps:
            select(epoch, record)
        progress.epochs.append(record)
        logger.info("Epoch %d: %s", epoch + 1, record)
        save_checkpoint(accelerator, output_dir, global_step, config.checkpoints_total_limit)
    bar.close()

    if progress.best_state:
        load_trainable_state(accelerator.unwrap_model(trainee), progress.best_state)
    elif selection_data is not None:  # NaN never wins a comparison: say so rather than claim a selection
        logger.warning("The selection SRCC was undefined (NaN: constant predictions) at every epoch: the last epoch is kept.")
        selection = "last epoch (the selection SRCC was undefined at every epoch)"
    predictions, mos = evaluate_on(test_data, "test")
    higher = metadata.get("higher_is_better", True)
    predicted_mos = data_builders.score_to_mos(predictions, metadata["mos_range"], higher)
    results = {
        **compute_metrics(predicted_mos, mos),
        "mode": config.mode,
        "dataset": metadata.get("dataset"),
        "split": metadata.get("split"),
        "train_parts": metadata.get("train_parts", ["train"]),
        "split_description": describe_split(metadata.get("split"), metadata.get("train_parts", ["train"])),
        "num_train": len(train_data),
        "num_test": len(test_data),
        "skipped_images": skipped.as_results(),
        "selection": selection,
        "selected_epoch": progress.best_epoch or config.num_train_epochs,
        "selected_step": progress.best_step or global_step,
        "view_policy": view_policy,
        "feature_bank": bool(config.feature_bank),
        "feature_bank_seconds": bank_seconds,
        "epochs": progress.epochs,
        "config": asdict(config),
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        check_finite_parameters(trainee, f"after step {global_step}")

        def write(folder: str) -> None:
            # Weights, card, results and predictions are staged together and moved in as one
            # (config.json last): a finished folder's files all come from this run.
            save_trained_model(model, trainee_model if config.mode == "lora" else None, processor, model_path, folder, metadata, results)
            with open(os.path.join(folder, PREDICTIONS_FILE), "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["image_name", "mos", "predicted_score", "predicted_mos"])
                writer.writerows(zip(test_data["image_name"], mos.tolist(), predictions.tolist(), np.asarray(predicted_mos).tolist()))
            with open(os.path.join(folder, RESULTS_FILE), "w", encoding="utf-8") as handle:
                json.dump(results, handle, indent=2)

        write_model_folder(output_dir, write)
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    return results | {"predictions": predictions.tolist(), "mos": mos.tolist()}


def save_trained_model(model: UniQAModel, peft_model, processor, model_path: str, output_dir: str, metadata: dict, results: dict) -> None:
    """Write the plain UniQA folder (LoRA merged in), the peft LoRA folder, the card."""
    if peft_model is not None:
        save_lora(peft_model, os.path.join(output_dir, LORA_DIR))
        model = copy.deepcopy(peft_model).merge_and_unload()
    model.config.training_dataset = metadata.get("dataset")
    model.config.mos_range = list(metadata["mos_range"])
    model.config.mos_higher_is_better = bool(metadata.get("higher_is_better", True))
    if metadata.get("task") in ("quality", "aesthetics"):
        model.config.task = metadata["task"]
    model.config.view_policy = results["view_policy"]
    model.eval().save_pretrained(output_dir)
    processor.view_policy = results["view_policy"]
    processor.save_pretrained(output_dir)
    with contextlib.suppress(ValueError):  # keep the tokenizer with the model, so its prompts can be changed later
        resolve_prompt_tokenizer(model).save_pretrained(output_dir)
    write_trained_card(output_dir, model_path, metadata, results)


def write_trained_card(output_dir: str, model_path: str, metadata: dict, results: dict) -> None:
    """The trained folder's model card (`model_cards`): the test split's SRCC and PLCC in its
    `model-index`, the recipe, and the starting model's licence (weights trained from the
    authors' non-commercial release stay non-commercial). An undefined correlation (NaN:
    constant predictions) is left out of the card: a model-index holds numbers."""
    metrics = {name: results[name] for name in ("srcc", "plcc") if math.isfinite(results[name])}
    split = results.get("split")
    card_results = [{
        "dataset": metadata.get("dataset") or "unnamed",
        "split": "test",
        "protocol": f"one split ({results.get('split_description') or json.dumps(split, sort_keys=True) if split else 'the dataset test split'}), "
                    f"{results['selection']}, {results['view_policy']} views",
        **({"task": metadata["task"]} if metadata.get("task") in ("quality", "aesthetics") else {}),
        **metrics,
    }] if metrics else None
    config = results["config"]
    training = {
        "fine-tuning": results["mode"], "epochs": config["num_train_epochs"], "learning rate": config["learning_rate"],
        "batch size per device": config["per_device_train_batch_size"], "seed": config["seed"],
        "training images": results["num_train"], "test images": results["num_test"],
        "model selection": results["selection"], "test-time views": results["view_policy"],
    }
    if config.get("backbone_learning_rate") and results["mode"] != "adapter":
        training["backbone learning rate"] = config["backbone_learning_rate"]
    write_model_card(output_dir, results=card_results, training=training, license=inherited_license(model_path),
                     source={"kind": "trained with train_adapter.py",
                             "checkpoint": os.path.abspath(model_path) if os.path.isdir(model_path) else model_path})


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def finetune_config(options: FinetuneOptions, dataset: str, checkpointing: FinetuneCheckpointing | None = None) -> FinetuneConfig:
    """The `FinetuneConfig` of parsed options (any `FinetuneOptions`, e.g. a script's arguments)
    for `dataset` (its epoch preset unless the epochs are given), with `checkpointing`'s settings
    (default: `FinetuneCheckpointing()`'s)."""
    values = {item.name: getattr(options, item.name) for item in fields(FinetuneOptions)}
    checkpointing = checkpointing if checkpointing is not None else FinetuneCheckpointing()
    values |= {item.name: getattr(checkpointing, item.name) for item in fields(FinetuneCheckpointing)}
    values["num_train_epochs"] = options.num_train_epochs or EPOCH_PRESETS.get(dataset, DEFAULT_EPOCHS)
    return FinetuneConfig(**values)
