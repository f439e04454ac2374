"""UniQA heads as small artefacts on a shared base: `save_adapter` / `load_adapter`.

A 150M-parameter CLIP copied per dataset is the wrong unit of sharing: what a fine-tuning run
changes is the Multi-Cue adapter, the five level scores and the prompts (about 1 MB for
ViT-B/16). An adapter directory holds

- `uniqa_adapter.safetensors`: `adapter.fc.*`, `level_scores`, `prompt_embeds`;
- `uniqa_adapter.json`: the adapter and prompt settings, the score metadata (task, MOS range and
  direction, training dataset) and the identity of the base: its name and `backbone_sha256`, a
  digest of the CLIP weights. Loading onto another backbone is refused by comparing the digest,
  never the name (two copies of a model can share a name and differ in weights).

File names differ from peft's (`adapter_model.safetensors`, `adapter_config.json`) so a LoRA
saved by peft (`PeftModel.save_pretrained`) can live in the same directory; `load_adapter`
applies it after the same backbone check.
"""

import json
import logging
import os
import warnings

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..configuration_uniqa import DEFAULT_HEAD, HEAD_FIELDS, check_head_settings, parse_view_policy
from ..errors import AdapterMismatchError, UnsafeFileError  # noqa: F401  (raised here; importable from here too)
from ..modeling_uniqa import UniQAModel
from .atomic_files import honour_umask
from .fingerprints import state_digest
from .json_files import read_json

logger = logging.getLogger(__name__)

ADAPTER_CONFIG_NAME = "uniqa_adapter.json"
ADAPTER_WEIGHTS_NAME = "uniqa_adapter.safetensors"
PEFT_CONFIG_NAME = "adapter_config.json"  # written by peft's `save_pretrained`
ADAPTER_FORMAT_VERSION = 1

# UniQAConfig fields an adapter carries: its shape, its prompts and what its score means.
ADAPTER_CONFIG_FIELDS = tuple(field for field in HEAD_FIELDS if field not in ("use_adapter", "initial_level_scores")) + (
    "view_policy",
    "view_seed",
)


def backbone_digest(clip) -> str:
    """SHA-256 of a CLIP model's weights (a `CLIPModel` or its state dict), as a hex string.

    Tensors are hashed in sorted key order, each with its name and shape. Floating-point tensors
    are hashed at bfloat16 precision, so one base loaded in float32 or bfloat16 (`uniqa score
    --dtype bfloat16`) has one digest, while any real change of the weights still shows. (A
    float16 copy can differ: fp32 -> fp16 -> bf16 rounds twice.) A backbone with peft LoRA layers
    injected hashes as its base: LoRA tensors are skipped and the wrapped `base_layer` weights
    count under their original names.
    """
    state_dict = clip if isinstance(clip, dict) else clip.state_dict()
    state_dict = {key.replace(".base_layer.", "."): value for key, value in state_dict.items() if "lora_" not in key}
    return state_digest(state_dict, precision=torch.bfloat16)


def check_backbone(model: UniQAModel, expected_digest: str, source: str, base_name: str | None = None) -> None:
    """Raise `AdapterMismatchError` unless `model`'s CLIP weights hash to `expected_digest`
    (`backbone_digest`); `source` (the adapter or model folder) and `base_name` go in the message."""
    actual = backbone_digest(model.clip)
    if actual != expected_digest:
        raise AdapterMismatchError(
            f"{source}: this head was trained on base {base_name!r} with backbone "
            f"sha256 {expected_digest}, but {model.name_or_path or 'the given model'!r} has backbone sha256 {actual}. "
            "Load it onto the base it was trained on (in float32 or bfloat16: a float16 copy can hash differently)."
        )


def save_adapter(
    model: UniQAModel, save_directory, base_name: str | None = None, write_card: bool | None = None, head: str | None = None
) -> str:
    """Write `model`'s UniQA head (adapter, level scores, prompts, score metadata) and the
    identity of its backbone to `save_directory`; returns the directory.

    No model card is written: call `model_cards.write_model_card(save_directory)` afterwards
    for one (`uniqa push` refuses a directory without it).

    Args:
        model: a `UniQAModel` whose head has an adapter (`use_adapter=True`).
        save_directory: created if needed; files of the same names are replaced, others kept
            (e.g. a peft LoRA saved there).
        base_name: the base model's Hub id or path, recorded for people and cards (loading checks
            the digest, not the name). Default: `model.name_or_path`.
        write_card: deprecated, goes away in the next release. `False` changes nothing (a
            `FutureWarning`); `True` raises `TypeError` (write the card with `model_cards`).
        head: which named head to save (`None`: the default head).
    """
    if write_card:
        raise TypeError(
            "save_adapter no longer writes a model card: call model_cards.write_model_card(save_directory) "
            "after it (and drop write_card=True)."
        )
    if write_card is not None:
        warnings.warn(
            "save_adapter(write_card=False): save_adapter never writes a model card now; drop the argument, "
            "it goes away in the next release.", FutureWarning, stacklevel=2,
        )
    if not model.config.head_config(head).use_adapter:
        raise ValueError(
            f"The {head or 'default'!r} head of this UniQA model has no adapter (use_adapter=False): "
            "there is nothing to save as an adapter."
        )
    if model.config.head_config(head).prompt_input_ids is None and torch.isnan(model._head(head)[0].prompt_embeds).any():
        raise ValueError("The model's prompts are not embedded: call `model.set_prompts(prompt_groups, tokenizer)` first.")
    settings, tensors = model.head_state(head)
    os.makedirs(save_directory, exist_ok=True)
    tensors = {key: value.cpu().contiguous() for key, value in tensors.items()}
    base_name = base_name or model.name_or_path or None
    # A named head's view policy is the model's: one image pass feeds every head.
    settings.update(view_policy=model.config.view_policy, view_seed=model.config.view_seed)
    metadata = {
        "format": "uniqa-adapter",
        "format_version": ADAPTER_FORMAT_VERSION,
        "base_model": {"name": base_name, "backbone_sha256": backbone_digest(model.clip)},
        "config": {field: settings[field] for field in ADAPTER_CONFIG_FIELDS},
    }
    save_file(tensors, os.path.join(save_directory, ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
    honour_umask(os.path.join(save_directory, ADAPTER_WEIGHTS_NAME))  # safetensors writes 0600
    with open(os.path.join(save_directory, ADAPTER_CONFIG_NAME), "w", encoding="utf-8") as handle:
        json.dump(metadata, handle, indent=2)
        handle.write("\n")
    logger.info("Saved the UniQA adapter (base %s, backbone %s) to %s", base_name, metadata["base_model"]["backbone_sha256"][:12], save_directory)
    return str(save_directory)


def load_safetensors(path) -> dict:
    """The tensors of a safetensors file; `UnsafeFileError` naming the file when it is not one
    (a pickle renamed `.safetensors`, a truncated download): nothing else is ever tried on it."""
    path = os.fspath(path)
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        raise UnsafeFileError(f"{path}: not a valid safetensors file ({size} bytes: truncated, corrupt or another format); not loaded.") from error


def read_adapter_config(adapter_directory) -> dict:
    """The `uniqa_adapter.json` of an adapter directory, checked; errors name the file."""
    path = os.path.join(adapter_directory, ADAPTER_CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{adapter_directory}: not a UniQA adapter directory (no {ADAPTER_CONFIG_NAME}).")
    metadata = read_json(path)
    if not isinstance(metadata, dict) or metadata.get("format") != "uniqa-adapter":
        raise ValueError(f"{path}: not a UniQA adapter description (missing \"format\": \"uniqa-adapter\").")
    for key, kind in (("format_version", int), ("base_model", dict), ("config", dict)):
        if key in metadata and not isinstance(metadata[key], kind):
            raise ValueError(f"{path}: {key!r} must be a JSON {'integer' if kind is int else 'object'}, got {metadata[key]!r}.")
    if metadata.get("format_version", 0) > ADAPTER_FORMAT_VERSION:
        raise ValueError(
            f"{path}: adapter format version {metadata['format_version']} is newer than this package reads "
            f"({ADAPTER_FORMAT_VERSION}); upgrade uniqa-hf."
        )
    base = metadata.get("base_model") or {}
    config = metadata.get("config") or {}
    if not base.get("backbone_sha256"):
        raise ValueError(f"{path}: no base_model.backbone_sha256, so the backbone it belongs to cannot be checked.")
    missing = [field for field in ("adapter_reduction", "prompt_groups", "prompt_input_ids") if config.get(field) is None]
    if missing:
        raise ValueError(f"{path}: config lacks {', '.join(missing)}.")
    # Settings are checked here, so a bad value is named in this file, not after loading a base
    # (a wrong view policy was only found while scoring).
    check_head_settings({field: config[field] for field in HEAD_FIELDS if field in config}, where=path)
    try:
        parse_view_policy(config.get("view_policy", "random10"))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    if not isinstance(config.get("view_seed", 0), int) or isinstance(config.get("view_seed"), bool):
        raise ValueError(f"{path}: `view_seed` must be an integer, got {config['view_seed']!r}.")
    return metadata


def _resolve_adapter_directory(adapter) -> str:
    """A local directory as is; otherwise a Hub repo id, downloaded (cached) with huggingface_hub."""
    if os.path.isdir(adapter):
        return str(adapter)
    if os.path.exists(adapter):
        raise ValueError(f"{adapter}: an adapter is a directory, not a file.")
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id=str(adapter))


def read_adapter_head(directory, model: UniQAModel) -> tuple:
    """`(head settings, tensors)` of an adapter directory, checked against `model`'s backbone
    (`AdapterMismatchError` on another backbone) and against its own description; what
    `UniQAModel.set_head` takes."""
    metadata = read_adapter_config(directory)
    weights_path = os.path.join(directory, ADAPTER_WEIGHTS_NAME)
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(f"{directory}: {ADAPTER_WEIGHTS_NAME} is missing.")
    check_backbone(model, metadata["base_model"]["backbone_sha256"], directory, metadata["base_model"].get("name"))
    config = metadata["config"]
    settings = {field: config[field] for field in HEAD_FIELDS if field in config}
    settings["use_adapter"] = True
    tensors = load_safetensors(weights_path)
    expected_keys = {"level_scores", "prompt_embeds"}
    if not expected_keys <= set(tensors) or not any(key.startswith("adapter.") for key in tensors):
        raise ValueError(f"{weights_path}: expected adapter.fc.*, level_scores and prompt_embeds, found {', '.join(sorted(tensors))}.")
    return settings, tensors


def load_adapter(model_or_base, adapter, head: str | None = None, **from_pretrained_kwargs) -> UniQAModel:
    """Put a saved UniQA head onto a base model; returns the model, ready to score.

    Args:
        model_or_base: a `UniQAModel` (changed in place) or the path / Hub id of one (loaded
            with `UniQAModel.from_pretrained(model_or_base, **from_pretrained_kwargs)`). Any UniQA
            model with the right backbone works, zero-shot (no adapter) or not.
        adapter: an adapter directory written by `save_adapter`, or its Hub repo id.
        head: `None` replaces the default head (and takes the adapter's view policy); a name adds
            (or replaces) that named head, keeping the other heads.

    Raises `AdapterMismatchError` when the base's backbone digest differs from the one the adapter
    was trained on (both digests and names in the message). A peft LoRA saved in the same
    directory (`adapter_config.json`) is applied and merged after that check (default head only:
    a LoRA changes the shared backbone).
    """
    directory = _resolve_adapter_directory(adapter)
    model = model_or_base
    if not isinstance(model, UniQAModel):
        read_adapter_config(directory)  # a bad directory fails before a large base is loaded
        model = UniQAModel.from_pretrained(model_or_base, **from_pretrained_kwargs)
    settings, tensors = read_adapter_head(directory, model)
    has_lora = os.path.isfile(os.path.join(directory, PEFT_CONFIG_NAME))
    if has_lora and head not in (None, DEFAULT_HEAD):
        raise ValueError(
            f"{directory} holds a peft LoRA, which changes the backbone every head shares: load it as the default head."
        )
    try:
        model.set_head(head, settings, tensors)
    except ValueError as error:
        raise ValueError(f"{os.path.join(directory, ADAPTER_WEIGHTS_NAME)}: {error}") from error
    if head in (None, DEFAULT_HEAD):
        config = read_adapter_config(directory)["config"]
        for field in ("view_policy", "view_seed"):
            if field in config:
                setattr(model.config, field, config[field])
    if has_lora:
        model = _merge_lora(model, directory)
    return model.eval()


def _merge_lora(model: UniQAModel, directory: str) -> UniQAModel:
    """Apply and merge a peft LoRA saved (by `PeftModel.save_pretrained` on the `UniQAModel`) in
    `directory`. The prompt embeddings stored with the adapter already reflect a LoRA on the text
    tower, so they are kept."""
    try:
        from peft import PeftModel
    except ImportError as error:
        raise ImportError(f"{directory} holds a peft LoRA ({PEFT_CONFIG_NAME}): install peft (`pip install peft`).") from error
    safe_weights = os.path.join(directory, "adapter_model.safetensors")
    if not os.path.isfile(safe_weights):
        pickled = [name for name in ("adapter_model.bin", "adapter_model.pt") if os.path.isfile(os.path.join(directory, name))]
        where = os.path.join(directory, pickled[0]) if pickled else safe_weights
        raise UnsafeFileError(f"{where}: not a valid LoRA weights file: only peft's adapter_model.safetensors is read "
                              "(a .bin file is a pickle, which is never loaded here); re-save the LoRA with safetensors.")
    load_safetensors(safe_weights)  # a readable safetensors file, before peft opens it
    prompt_embeds = model.prompt_embeds.clone()
    merged = PeftModel.from_pretrained(model, directory).merge_and_unload()
    merged.prompt_embeds.copy_(prompt_embeds)
    return merged


__all__ = [
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "AdapterMismatchError",
    "backbone_digest",
    "check_backbone",
    "read_adapter_head",
    "load_adapter",
    "read_adapter_config",
    "save_adapter",
]
