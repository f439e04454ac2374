"""`uniqa heads`: named heads on one UniQA backbone (one image-tower pass, many assessments).

    uniqa heads list uniqa-koniq
    uniqa heads add uniqa-koniq --from uniqa-ava --name aesthetics          # a trained model folder
    uniqa heads add uniqa-koniq --from ava-adapter --name aesthetics        # or an adapter folder
    uniqa heads add uniqa-koniq --prompts sharpness --name sharpness        # zero-shot, Table II group
    uniqa heads add uniqa-koniq --custom-prompts "very dark photo" "dark photo" "normal photo" \\
        "bright photo" "very bright photo" --name brightness                # your own five, worst to best
    uniqa heads remove uniqa-koniq --name sharpness

A head trained on another backbone is refused: the backbone digest (`adapter_io.backbone_digest`
of the CLIP weights) must match, whatever the names say. The model folder is rewritten
atomically: the new folder is written beside it and swapped in, so a crash leaves the old one.
A folder's model card, when it has one, is updated by the command (`before_swap`), not here.
"""

import logging
import os
import shutil
import tempfile
from collections.abc import Callable

from ..configuration_uniqa import DEFAULT_HEAD, UniQAConfig
from ..core.adapter_io import (
    ADAPTER_CONFIG_NAME,
    backbone_digest,
    check_backbone,
    read_adapter_config,
    read_adapter_head,
)
from ..core.atomic_files import honour_umask
from ..core.model_folder import check_model_folder
from ..modeling_uniqa import UniQAModel

logger = logging.getLogger(__name__)


def list_heads(model_dir) -> list:
    """One dict a head (`name`, `kind` "adapter" / "zero-shot", `task`, `training_dataset`,
    `mos_range`, `mos_higher_is_better`, `prompt_groups` (names)), read from config.json only."""
    config = UniQAConfig.from_pretrained(model_dir)
    rows = []
    for name in config.head_names:
        settings = config.head_config(name)
        rows.append(
            {
                "name": name,
                "kind": "adapter" if settings.use_adapter else "zero-shot",
                "task": settings.task,
                "training_dataset": settings.training_dataset,
                "mos_range": settings.mos_range,
                "mos_higher_is_better": settings.mos_higher_is_better,
                "prompt_groups": list(settings.prompt_group_names),
            }
        )
    return rows


def head_from_source(model: UniQAModel, source, source_head: str | None = None) -> tuple:
    """`(settings, tensors)` of a head trained elsewhere, checked to be on `model`'s backbone.

    `source` is an adapter folder (`save_adapter`) or a UniQA model folder; from a model folder,
    `source_head` picks which of its heads (default: its default head). Raises
    `AdapterMismatchError` when the source's backbone digest differs from `model`'s.
    """
    source = os.fspath(source)
    if os.path.isfile(os.path.join(source, ADAPTER_CONFIG_NAME)):
        if source_head not in (None, DEFAULT_HEAD):
            raise ValueError(f"{source}: an adapter folder holds one head; --head does not apply.")
        _warn_view_policy(model, source, read_adapter_config(source)["config"].get("view_policy"))
        return read_adapter_head(source, model)
    if not os.path.isfile(os.path.join(source, "config.json")):
        raise FileNotFoundError(f"{source}: neither a UniQA model folder (config.json) nor an adapter folder ({ADAPTER_CONFIG_NAME}).")
    check_model_folder(source)
    other = UniQAModel.from_pretrained(source)
    check_backbone(model, backbone_digest(other.clip), source, other.name_or_path)
    _warn_view_policy(model, source, other.config.view_policy)
    return other.head_state(source_head)


def _warn_view_policy(model: UniQAModel, source: str, view_policy) -> None:
    # One image pass feeds every head, so a head scores with the model's views, not its own.
    if view_policy is not None and view_policy != model.config.view_policy:
        logger.warning(
            "%s: its view policy is %s; in this model the head scores with the model's %s (pipeline and "
            "`uniqa score` take --view-policy / view_policy= to change it for all heads).",
            source, view_policy, model.config.view_policy,
        )


def rewrite_model_folder(model: UniQAModel, model_dir, before_swap: Callable[[str, str], None] | None = None) -> None:
    """Save `model` over its folder `model_dir` without ever leaving it half written.

    The folder is copied beside itself (keeping the files `save_pretrained` does not write: card,
    tokenizer, processor), the model is saved into the copy, then the copy is swapped in. Until
    the swap the original is untouched; during it, the original exists under a `.old-*` name.
    A symbolic link to the folder is followed: the folder it points to is rewritten, the link kept.

    `before_swap(staging, model_dir)`, when given, is called on the complete copy before the
    swap (`model_dir` resolved), so what it writes there is swapped in with the model, or not at
    all if it raises. `uniqa heads` updates the model card there (this module writes no card).
    """
    model_dir = os.path.realpath(os.fspath(model_dir))  # swapping the link itself would orphan its target
    parent, base = os.path.split(model_dir)
    staging = tempfile.mkdtemp(prefix=f".{base}.new-", dir=parent)
    try:
        shutil.copytree(model_dir, staging, dirs_exist_ok=True)
        model.save_pretrained(staging)
        honour_umask(staging)  # safetensors writes model.safetensors 0600
        if before_swap is not None:
            before_swap(staging, model_dir)
        old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
        os.rmdir(old)
        os.rename(model_dir, old)
        try:
            os.rename(staging, model_dir)
        except BaseException:
            os.rename(old, model_dir)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def add_head(
    model_dir,
    name: str,
    source=None,
    source_head: str | None = None,
    prompt_groups=None,
    tokenizer=None,
    task: str = "quality",
    replace: bool = False,
    before_swap: Callable[[str, str], None] | None = None,
) -> UniQAModel:
    """Add the head `name` to the UniQA model folder `model_dir` and rewrite the folder; returns the model.

    Give either `source` (a trained model or adapter folder on the same backbone; see
    `head_from_source`) or `prompt_groups` (a zero-shot head: Table II names such as
    `sharpness`, ensembles, or lists of five prompts worst to best; `tokenizer` as in
    `UniQAModel.set_prompts`, `task` what the prompts judge). An existing name is refused unless
    `replace`. `before_swap` as in `rewrite_model_folder`.
    """
    if (source is None) == (prompt_groups is None):
        raise ValueError("Give exactly one of a source folder (--from) or prompt groups (--prompts / --custom-prompts).")
    if name == DEFAULT_HEAD:
        raise ValueError(f"{DEFAULT_HEAD!r} is the model's own head; pick another name.")
    check_model_folder(model_dir)  # a broken folder is one line naming the file, not a traceback
    model = UniQAModel.from_pretrained(model_dir)
    if name in model.head_names and not replace:
        raise ValueError(f"{model_dir}: already has a head {name!r} (heads: {', '.join(model.head_names)}); remove it first.")
    if source is not None:
        settings, tensors = head_from_source(model, source, source_head)
        model.set_head(name, settings, tensors)
    else:
        model.add_prompt_head(name, prompt_groups, tokenizer=tokenizer, task=task)
    rewrite_model_folder(model, model_dir, before_swap)
    logger.info("%s: added head %r; heads now %s", model_dir, name, ", ".join(model.head_names))
    return model


def remove_head(model_dir, name: str, before_swap: Callable[[str, str], None] | None = None) -> UniQAModel:
    """Remove the named head from the model folder (rewritten atomically, `before_swap` as in
    `rewrite_model_folder`); returns the model."""
    check_model_folder(model_dir)
    model = UniQAModel.from_pretrained(model_dir)
    model.remove_head(name)
    rewrite_model_folder(model, model_dir, before_swap)
    logger.info("%s: removed head %r; heads now %s", model_dir, name, ", ".join(model.head_names))
    return model


__all__ = ["add_head", "head_from_source", "list_heads", "remove_head", "rewrite_model_folder"]
