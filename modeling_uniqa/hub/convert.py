"""`uniqa convert`: the authors' checkpoint, their adapter weights, or an HF CLIP -> a UniQA folder.

    uniqa convert --checkpoint UniQA_weight.pt --output uniqa-base            # zero-shot model
    uniqa convert --checkpoint UniQA_weight.pt --adapter net_best.pth \\
        --mos-range 0 100 --training-dataset koniq10k --output uniqa-koniq    # fine-tuned scorer
    uniqa convert --checkpoint path/to/clip-vit-base-patch16 --output uniqa-from-clip

The output folder is complete and loads offline: weights (safetensors), config, remote code,
image processor and CLIP tokenizer; the command also writes its model card (README.md, see
`model_cards`), which `convert()` itself leaves to its caller.
"""

import json
import logging
import os
import shutil

import torch

from ..clip_tokenizer import resolve_prompt_tokenizer
from ..configuration_uniqa import UniQAConfig
from ..core.atomic_files import honour_umask
from ..modeling_uniqa import UniQAModel
from .convert_openai_clip import load_state_dict_file, openai_to_hf_clip

logger = logging.getLogger(__name__)

# Keys of the authors' adapter checkpoints -> ours (`MultiCueAdapter.fc` keeps their layout).
ADAPTER_KEY_MAP = {
    "adapter.fc.0.weight": "adapter.fc.0.weight",
    "adapter.fc.0.bias": "adapter.fc.0.bias",
    "adapter.fc.2.weight": "adapter.fc.2.weight",
    "adapter.fc.2.bias": "adapter.fc.2.bias",
    "score_level": "level_scores",
}


def load_adapter_checkpoint(path) -> dict:
    """Read the authors' adapter weights (`weights_only=True`) and map them to UniQA names.

    Accepts a bare state_dict or one wrapped under a usual key, with or without `module.` /
    `net.` prefixes. Any key that is not part of the adapter head is an error naming it.
    """
    state_dict = load_state_dict_file(path)
    mapped, unknown = {}, []
    for key, tensor in state_dict.items():
        bare = key[len("net.") :] if key.startswith("net.") else key
        if bare in ADAPTER_KEY_MAP:
            mapped[ADAPTER_KEY_MAP[bare]] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{path}: keys that are not UniQA adapter weights: {', '.join(sorted(unknown)[:10])}"
            f"{' ...' if len(unknown) > 10 else ''}. Expected {', '.join(k for k in ADAPTER_KEY_MAP if 'bias' not in k)}."
        )
    missing = [key for key in ("adapter.fc.0.weight", "adapter.fc.2.weight") if key not in mapped]
    if missing:
        raise ValueError(f"{path}: adapter weights lack {', '.join(missing)} (found: {', '.join(sorted(state_dict))}).")
    return mapped


def adapter_config_from_weights(adapter_state: dict, embed_dim: int) -> dict:
    """Adapter settings implied by the weight shapes (reduction, biases)."""
    down = adapter_state["adapter.fc.0.weight"]  # (hidden, dim)
    up = adapter_state["adapter.fc.2.weight"]  # (dim, hidden)
    if down.shape[1] != embed_dim or up.shape != (embed_dim, down.shape[0]):
        raise ValueError(
            f"adapter shapes {tuple(down.shape)} / {tuple(up.shape)} do not fit the backbone's {embed_dim}-d embeddings."
        )
    if embed_dim % down.shape[0]:
        raise ValueError(f"adapter hidden width {down.shape[0]} does not divide the embedding width {embed_dim}.")
    return {"adapter_reduction": embed_dim // down.shape[0], "adapter_bias": "adapter.fc.0.bias" in adapter_state}


def _is_hf_clip_dir(path) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


def card_source(checkpoint, adapter=None) -> dict:
    """Where a model converted from `checkpoint` (and the authors' `adapter` weights) comes
    from, as `model_cards.write_model_card(source=...)` records it. An OpenAI-format file is
    taken to be the authors' release, so its card gets the stricter (non-commercial) licence;
    an HF CLIP folder is `hf-clip`."""
    kind = "hf-clip" if _is_hf_clip_dir(checkpoint) else "authors-release"
    source = {"kind": kind, "checkpoint": os.path.basename(os.path.normpath(checkpoint))}
    if adapter:
        source["adapter"] = os.path.basename(adapter)
    return source


def load_hf_clip(folder):
    """The `CLIPModel` of an HF CLIP folder in float32, every tensor from the checkpoint.

    `CLIPModel.from_pretrained` alone initialises missing or wrongly shaped tensors at random
    with only a logged report, and reads other model types' folders as CLIP: here those are a
    `ValueError` naming the folder and the tensors."""
    from transformers import CLIPModel

    config_path = os.path.join(folder, "config.json")
    try:
        with open(config_path, encoding="utf-8") as handle:
            model_type = json.load(handle).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"{config_path}: not a readable JSON config ({error}).") from error
    if model_type != "clip":
        raise ValueError(
            f"{config_path}: model_type is {model_type!r}, not 'clip': only a full HF CLIP (both towers) converts"
            + (" (this is a UniQA model folder already)" if model_type == UniQAConfig.model_type else "")
            + "."
        )
    try:
        clip, info = CLIPModel.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    except (OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{folder}: cannot load the HF CLIP ({type(error).__name__}: {' '.join(str(error).split())[:300]}).") from error
    problems = []
    if info.get("missing_keys"):
        problems.append(f"lacks {len(info['missing_keys'])} tensors ({', '.join(sorted(info['missing_keys'])[:3])}, ...)")
    if info.get("mismatched_keys"):
        problems.append(f"has {len(info['mismatched_keys'])} tensors of other shapes than its config.json ({', '.join(str(key) for key in sorted(info['mismatched_keys'])[:3])}, ...)")
    if problems:
        raise ValueError(f"{folder}: the CLIP checkpoint " + " and ".join(problems) + "; they would be random weights.")
    return clip


def check_output_folder(output_dir, overwrite: bool, inputs=()) -> None:
    """Refuse to write into an existing non-empty folder (stale files such as another model's
    image processor, weight shards or card would be mixed into the new one) unless `overwrite`,
    which replaces a UniQA model folder (one with config.json) and nothing else, and never one
    holding the conversion's `inputs` (checkpoint, adapter, tokenizer paths)."""
    output = os.path.realpath(output_dir)
    for source in inputs:
        source = os.path.realpath(source)
        if source == output or source.startswith(output + os.sep):
            raise ValueError(f"{output_dir}: holds the input {source}; write the converted model to another folder.")
    if not os.path.exists(output_dir):
        return
    if not os.path.isdir(output_dir):
        raise ValueError(f"{output_dir}: exists and is not a folder.")
    entries = sorted(os.listdir(output_dir))
    if not entries:
        return
    if not overwrite:
        raise ValueError(
            f"{output_dir}: exists and is not empty ({', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''}); "
            "pick a new folder, or pass --overwrite to replace a model folder whole."
        )
    if "config.json" not in entries:
        raise ValueError(f"{output_dir}: --overwrite replaces model folders only, and this one has no config.json; remove it yourself.")


def convert(
    checkpoint, output_dir=None, adapter=None, tokenizer=None, dtype=torch.float32, head_dim=64, overwrite=False, **config_kwargs
) -> UniQAModel:
    """Build a UniQA model from a checkpoint and optionally save the complete folder.

    Args:
        checkpoint: an OpenAI-format CLIP file (`UniQA_weight.pt`, any ViT size) or an HF CLIP
            folder (such as a local copy of `openai/clip-vit-base-patch16`).
        output_dir: where to save the model, image processor and tokenizer (`None`: don't). An
            existing non-empty folder is refused (`ValueError`) unless `overwrite`.
        adapter: the authors' adapter weights (`adapter.fc.*`, `score_level`); without them the
            model is zero-shot (`use_adapter=False`) unless `use_adapter=True` is passed.
        tokenizer: a tokenizer (object or folder) matching the CLIP vocabulary; default: the one
            in the HF CLIP folder if it fits, else the OpenAI CLIP BPE shipped here when the
            vocabulary is OpenAI's (see `resolve_prompt_tokenizer`).
        dtype: dtype of the saved weights.
        head_dim: attention head width of an OpenAI-format checkpoint (64 in every OpenAI CLIP).
        overwrite: replace an existing model folder (one with config.json) at `output_dir`
            whole, after the conversion succeeded; nothing of the old folder is kept.
        **config_kwargs: `UniQAConfig` fields (prompt_groups, task, mos_range, view_policy, ...).

    No model card is written: `uniqa convert` writes it afterwards
    (`model_cards.write_model_card(output_dir, source=card_source(checkpoint, adapter))`).
    """
    if output_dir is not None:
        inputs = [path for path in (checkpoint, adapter, tokenizer) if isinstance(path, (str, os.PathLike))]
        check_output_folder(output_dir, overwrite, inputs)
    adapter_state = load_adapter_checkpoint(adapter) if adapter is not None else None
    if _is_hf_clip_dir(checkpoint):
        clip = load_hf_clip(checkpoint)
        tokenizer_source = checkpoint  # the folder: its own tokenizer when it fits
    elif os.path.isfile(checkpoint):
        clip = tokenizer_source = openai_to_hf_clip(checkpoint, dtype=torch.float32, head_dim=head_dim)
    else:
        raise FileNotFoundError(f"{checkpoint}: neither a checkpoint file nor an HF CLIP folder (with config.json).")
    try:
        tokenizer = resolve_prompt_tokenizer(tokenizer_source, tokenizer)
    except ValueError as error:
        raise ValueError(f"{checkpoint}: {error}") from error

    embed_dim = clip.config.projection_dim
    if adapter_state is not None:
        config_kwargs = {**adapter_config_from_weights(adapter_state, embed_dim), **config_kwargs}
        config_kwargs.setdefault("use_adapter", True)
    else:
        config_kwargs.setdefault("use_adapter", False)
    config_kwargs.setdefault("view_policy", "random10")

    model = UniQAModel(UniQAConfig(clip_config=clip.config.to_dict(), **config_kwargs))
    model.clip.load_state_dict(clip.state_dict(), strict=True)
    if adapter_state is not None:
        level_scores = adapter_state.pop("level_scores", None)
        if level_scores is not None:
            with torch.no_grad():
                model.level_scores.copy_(level_scores.reshape(-1).float())
        model.adapter.load_state_dict({k[len("adapter.") :]: v.float() for k, v in adapter_state.items()}, strict=True)
    model.set_prompts(None, tokenizer)
    model = model.to(dtype).eval()

    if output_dir is not None:
        if os.path.isdir(output_dir) and os.listdir(output_dir):  # checked above: a model folder, overwrite asked
            shutil.rmtree(output_dir)
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        honour_umask(output_dir)  # safetensors writes model.safetensors 0600
        logger.info("Saved the UniQA model to %s", output_dir)
    return model
