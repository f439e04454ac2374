"""Checking and loading a UniQA model folder, with one clear line per fault.

`from_pretrained` answers a broken folder with a raw traceback or misleading text (a missing
folder reads as "Repo id must be in the form ...", a checkpoint with wrong shapes is partly
re-initialised at random). `check_model_folder` reads the folder's config and the headers of
its safetensors files, compares every tensor name and shape with the model the config
describes, and raises `ModelFolderError` naming the file and the problem. `load_model_folder`
checks, then loads. `model_fingerprint` identifies the weights and config for output sidecars.

Everything that loads a model folder (`uniqa score`, the training and evaluation scripts) goes
through here. Not remote code: it is not copied into saved model folders.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from typing import NamedTuple

import torch
from safetensors import SafetensorError, safe_open

from ..configuration_uniqa import UniQAConfig
from ..errors import ModelFolderError, UsageError
from ..modeling_uniqa import UniQAModel
from .json_files import read_json

logger = logging.getLogger(__name__)
WEIGHTS_NAME, WEIGHTS_INDEX_NAME = "model.safetensors", "model.safetensors.index.json"
MAX_LISTED = 3  # names listed in one error line


def _listed(names) -> str:
    names = sorted(names)
    more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more


def _load_config(folder: str) -> UniQAConfig:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise ModelFolderError(f"{path}: missing; a UniQA model folder holds config.json and {WEIGHTS_NAME} (see `uniqa convert`).")
    data = read_json(path, ModelFolderError)
    if not isinstance(data, dict) or data.get("model_type") != UniQAConfig.model_type:
        found = data.get("model_type") if isinstance(data, dict) else type(data).__name__
        raise ModelFolderError(f"{path}: model_type is {found!r}, not {UniQAConfig.model_type!r}: not a UniQA model (see `uniqa convert`).")
    try:
        return UniQAConfig.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ModelFolderError(f"{path}: invalid UniQA config ({' '.join(str(error).split())}).") from error


def view_tokens(folder: str) -> int | None:
    """Token rows per view of the model in `folder` (its vision tower's patches and class token,
    from config.json), or `None` where the folder holds no readable UniQA config (loading the
    model then says why)."""
    try:
        vision = _load_config(os.fspath(folder)).clip_config.vision_config
    except ModelFolderError:
        return None
    return (vision.image_size // vision.patch_size) ** 2 + 1


def weight_files(folder: str) -> list:
    """The safetensors files of a model folder (one file, or the shards of an index)."""
    single, index = os.path.join(folder, WEIGHTS_NAME), os.path.join(folder, WEIGHTS_INDEX_NAME)
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as handle:
                shards = sorted(set(json.load(handle)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ModelFolderError(f"{index}: not a readable safetensors index ({error}).") from error
        missing = [name for name in shards if not os.path.isfile(os.path.join(folder, name))]
        if missing:
            raise ModelFolderError(f"{index}: lists shard files that are missing: {_listed(missing)}.")
        return [os.path.join(folder, name) for name in shards]
    others = [name for name in ("pytorch_model.bin", "model.pt") if os.path.isfile(os.path.join(folder, name))]
    hint = f" ({others[0]} is there: only safetensors weights are read; convert it with `uniqa convert`)" if others else ""
    raise ModelFolderError(f"{single}: missing; no weights in {folder}{hint}.")


def _stored_shapes(files: list) -> dict:
    shapes = {}
    for path in files:
        try:
            with safe_open(path, framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                    shapes[name] = tuple(handle.get_slice(name).get_shape())
        except (SafetensorError, OSError, ValueError) as error:
            size = os.path.getsize(path)
            raise ModelFolderError(f"{path}: not a readable safetensors file, truncated or corrupt ({size} bytes; {error}).") from error
    return shapes


def check_model_folder(folder: str) -> UniQAConfig:
    """Raise `ModelFolderError` unless `folder` holds a loadable UniQA model: a valid config and
    safetensors weights with exactly the tensors (names and shapes) that config describes.
    Reads only headers: cheap even for large models. Returns the config."""
    folder = os.fspath(folder)
    if not os.path.exists(folder):
        parent, base = os.path.split(os.path.abspath(folder))
        # `uniqa heads` swaps a rewritten folder in by two renames; a kill between them leaves the
        # original under `.NAME.old-*` (see `heads.rewrite_model_folder`).
        left = sorted(glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(base)}.old-*")))
        if left:
            raise ModelFolderError(f"{folder}: no such folder, but an interrupted `uniqa heads` left it as {left[-1]}: "
                                   "rename that folder back to use it.")
        raise ModelFolderError(f"{folder}: no such folder (a UniQA model is a local folder written by `uniqa convert`).")
    if not os.path.isdir(folder):
        raise ModelFolderError(f"{folder}: not a folder (a UniQA model is a folder holding config.json and {WEIGHTS_NAME}).")
    config = _load_config(folder)
    files = weight_files(folder)
    stored = _stored_shapes(files)
    with torch.device("meta"):  # the tensors the config describes, without allocating them
        expected = {name: tuple(tensor.shape) for name, tensor in UniQAModel(config).state_dict().items()}
    where = files[0] if len(files) == 1 else os.path.join(folder, WEIGHTS_INDEX_NAME)
    wrong = [f"{name} is {list(stored[name])}, expected {list(shape)}" for name, shape in sorted(expected.items()) if name in stored and stored[name] != shape]
    if wrong:
        raise ModelFolderError(f"{where}: tensor shapes do not match config.json: {_listed(wrong)}.")
    missing, unexpected = set(expected) - set(stored), set(stored) - set(expected)
    if missing:
        raise ModelFolderError(f"{where}: lacks tensors that config.json needs: {_listed(missing)}.")
    if unexpected:
        raise ModelFolderError(f"{where}: holds tensors that config.json does not describe: {_listed(unexpected)}.")
    return config


class LoadedModel(NamedTuple):
    """What `load_model` returns: the model (eval mode), its image processor, and the prompt
    tokenizer when one was asked for (else `None`)."""

    model: UniQAModel
    processor: object
    tokenizer: object = None


def load_model(
    folder: str, *, dtype: torch.dtype = torch.float32, device=None, use_adapter: bool | None = None,
    adapter: str | None = None, prompts: str | None = None, tokenizer_dir: str | None = None, need_tokenizer: bool = False,
) -> LoadedModel:
    """The one loader of a UniQA model folder: `uniqa score`, `retrieve`, `explain`, the training
    and evaluation scripts all load through it.

    The folder is checked first (`check_model_folder`: one line naming the file and the fault),
    then loaded in `dtype` (`use_adapter`: `True` adds a fresh adapter to a zero-shot model,
    `False` drops the adapter, `None` keeps the folder's choice). `adapter`: an adapter folder or
    Hub id put on the model (`adapter_io.load_adapter`). `prompts`: replace the prompt groups
    (read with `tokenizer_dir`, else the folder's tokenizer if it fits the text tower, else
    OpenAI's BPE). `need_tokenizer`: also return that tokenizer. `device`: move the model there.

    Raises `ModelFolderError` for the folder and its tokenizer, `UsageError` for `adapter` and
    `prompts` (both are `UniQAError`s).
    """
    from ..clip_tokenizer import resolve_prompt_tokenizer

    model = _checked_model(folder, dtype, use_adapter)
    if adapter:
        from .adapter_io import load_adapter

        try:
            model = load_adapter(model, adapter)
        except (OSError, ValueError) as error:
            raise UsageError(f"--adapter {adapter}: {error}") from error
    tokenizer = None
    if prompts or need_tokenizer:
        try:  # the folder's tokenizer if it fits the text tower, else OpenAI's BPE for OpenAI's vocabulary
            tokenizer = resolve_prompt_tokenizer(model, tokenizer_dir)
        except (OSError, ValueError) as error:
            if prompts:
                raise UsageError(f"--prompts: {error} Pass --tokenizer DIR.") from error
            raise ModelFolderError(f"{tokenizer_dir or folder}: no CLIP tokenizer to read the text with ({error})") from error
    if prompts:
        try:
            model.set_prompts(prompts, tokenizer)
        except ValueError as error:
            raise UsageError(f"--prompts {prompts}: {error}") from error
    if device is not None:
        model = model.to(device)
    return LoadedModel(model.eval(), load_image_processor(folder, model), tokenizer if need_tokenizer else None)


def _checked_model(folder: str, dtype: torch.dtype, use_adapter: bool | None = None) -> UniQAModel:
    config = check_model_folder(folder)
    overrides = {} if use_adapter is None else {"use_adapter": use_adapter}
    new_adapter = bool(use_adapter) and not config.use_adapter
    # A zero-shot folder given a fresh adapter (training one): transformers would print a LOAD
    # REPORT listing the adapter's tensors as MISSING; the folder was checked above, so those are
    # the only ones, and one line says what happens instead.
    report_logger = logging.getLogger("transformers.modeling_utils")
    level = report_logger.level
    if new_adapter:
        report_logger.setLevel(logging.ERROR)
        logger.info("%s: a zero-shot model (no adapter): a new adapter is initialised, to be trained.", folder)
    try:
        return UniQAModel.from_pretrained(folder, dtype=dtype, **overrides).eval()
    except Exception as error:  # anything the checks above did not foresee: still one line naming the folder
        raise ModelFolderError(f"{folder}: cannot load the model ({type(error).__name__}: {' '.join(str(error).split())}).") from error
    finally:
        if new_adapter:
            report_logger.setLevel(level)


def load_model_folder(folder: str, dtype: torch.dtype = torch.float32) -> UniQAModel:
    """`check_model_folder`, then the model in eval mode (`ModelFolderError` on any failure): the
    model of `load_model`, without its image processor."""
    return _checked_model(folder, dtype)


def load_image_processor(folder: str, model: UniQAModel):
    """The folder's image processor (`preprocessor_config.json`), else the model's default one."""
    from ..processing_uniqa import UniQAImageProcessor

    path = os.path.join(folder, "preprocessor_config.json")
    if not os.path.isfile(path):
        return model.default_image_processor()
    try:
        return UniQAImageProcessor.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as error:
        raise ModelFolderError(f"{path}: invalid image processor config ({' '.join(str(error).split())}).") from error


def model_fingerprint(folder: str) -> str:
    """SHA-256 of the folder's weight files (content, not names or dates): equal for copies of
    the same weights, different for any other weights."""
    digest = hashlib.sha256()
    for path in weight_files(folder):
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


__all__ = ["LoadedModel", "ModelFolderError", "check_model_folder", "load_image_processor", "load_model", "load_model_folder", "model_fingerprint", "weight_files"]
