"""Step checkpoints for the training scripts.

Each checkpoint is an `accelerator.save_state` folder `<output_dir>/checkpoint-<step>`. It is
written under a temporary name and renamed once complete, so a run killed while saving never
leaves a half-written checkpoint that `--resume_from_checkpoint latest` would pick up.
"""

from __future__ import annotations

import logging
import os
import re
import shutil

from accelerate import Accelerator

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
_PARTIAL_SUFFIX = ".partial"


def checkpoint_step(path: str) -> int:
    """The global step a checkpoint folder was written at (from its name)."""
    match = _CHECKPOINT_NAME.match(os.path.basename(os.path.normpath(path)))
    if match is None:
        raise ValueError(f"{path}: not a checkpoint folder (expected a name like {CHECKPOINT_PREFIX}<step>).")
    return int(match.group(1))


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoint folders under `output_dir`, oldest step first."""
    if not os.path.isdir(output_dir):
        return []
    names = [name for name in os.listdir(output_dir) if _CHECKPOINT_NAME.match(name)]
    paths = [os.path.join(output_dir, name) for name in names if os.path.isdir(os.path.join(output_dir, name))]
    return sorted(paths, key=checkpoint_step)


def resolve_checkpoint(output_dir: str, resume_from: str | None) -> str | None:
    """The checkpoint folder to resume from, or None to start afresh.

    `resume_from` is None (start afresh), `"latest"` (the newest complete checkpoint in
    `output_dir`, or None when there is none yet, so the same command starts and resumes a run),
    or a checkpoint folder's path.
    """
    if not resume_from:
        return None
    if resume_from == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            logger.info("No checkpoint in %s yet: starting a new run.", output_dir)
            return None
        return checkpoints[-1]
    if not os.path.isdir(resume_from):
        raise FileNotFoundError(f"--resume_from_checkpoint {resume_from}: no such checkpoint folder.")
    checkpoint_step(resume_from)
    return resume_from


def save_checkpoint(accelerator: Accelerator, output_dir: str, step: int, total_limit: int | None = None) -> str:
    """Save the full training state at `step`, keeping at most `total_limit` checkpoints.

    Call on every process (accelerate gathers the state); the main process writes the files,
    renames the finished folder into place and removes the oldest checkpoints beyond the limit.
    """
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    partial = final + _PARTIAL_SUFFIX
    if accelerator.is_main_process and os.path.isdir(partial):
        shutil.rmtree(partial)  # left by a run killed while saving
    accelerator.wait_for_everyone()
    accelerator.save_state(partial)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(partial, final)
        if total_limit is not None and total_limit > 0:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                logger.info("Removing %s (--checkpoints_total_limit %d).", old, total_limit)
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final
