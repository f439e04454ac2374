"""Step checkpoints and the output folder of the training scripts.

Each checkpoint is an `accelerator.save_state` folder `checkpoint-<step>` in the run's checkpoint
folder, `<output_dir>.checkpoints` (`checkpoint_folder`): beside the output folder, never inside
the folder that is the model (a model folder holds the model only; checkpoints of runs started
before this layout, inside `<output_dir>`, are still found and resumed from). It is
written under a temporary name, marked complete (`COMPLETE_FILE`) and renamed once finished, so
a run killed while saving never leaves a checkpoint that `--resume_from_checkpoint latest` would
pick up; a `checkpoint-<step>` folder without the mark (copied in part, say) is skipped with a
warning. `RunLayout` records what the saved state depends on and refuses a resume that changed it.
A fresh start into an output folder that already holds checkpoints or a saved model is refused
(`resolve_checkpoint`): runs are resumed or kept apart, never mixed. `write_model_folder` writes
the final model so that a crash midway never leaves a folder that loads.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable

import torch
from accelerate import Accelerator
from safetensors import SafetensorError

from modeling_uniqa.core.atomic_files import honour_umask
from modeling_uniqa.errors import OutputError, UniQAError

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_FILE = "checkpoint_complete.json"
LAYOUT_FILE = "run_layout.json"
# A model folder loads through its config.json: written last by `write_model_folder`.
MODEL_CONFIG_FILE = "config.json"
_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
_PARTIAL_SUFFIX = ".partial"
_MODEL_STAGING = ".model.partial"
CHECKPOINTS_SUFFIX = ".checkpoints"


class ResumeError(UniQAError, ValueError):
    """A run cannot start or resume in its output folder as asked (the message says why and what to do)."""


def checkpoint_step(path: str) -> int:
    """The global step a checkpoint folder was written at (from its name)."""
    match = _CHECKPOINT_NAME.match(os.path.basename(os.path.normpath(path)))
    if match is None:
        raise ValueError(f"{path}: not a checkpoint folder (expected a name like {CHECKPOINT_PREFIX}<step>).")
    return int(match.group(1))


def is_complete_checkpoint(path: str) -> bool:
    """Whether `save_checkpoint` finished writing the checkpoint folder `path`."""
    return os.path.isfile(os.path.join(path, COMPLETE_FILE))


def checkpoint_folder(output_dir: str) -> str:
    """Where a run into `output_dir` keeps its checkpoints: `<output_dir>.checkpoints`, beside it."""
    return os.path.normpath(output_dir) + CHECKPOINTS_SUFFIX


def _checkpoint_folders(output_dir: str) -> list[str]:
    """Every `checkpoint-<step>` folder of the run into `output_dir` (in `checkpoint_folder`, or
    inside `output_dir` where runs started before that layout left them), complete or not, oldest
    step first."""
    paths = []
    for folder in (checkpoint_folder(output_dir), output_dir):
        if os.path.isdir(folder):
            names = [name for name in os.listdir(folder) if _CHECKPOINT_NAME.match(name)]
            paths += [os.path.join(folder, name) for name in names if os.path.isdir(os.path.join(folder, name))]
    return sorted(paths, key=checkpoint_step)


def remove_checkpoints(output_dir: str) -> None:
    """Delete the run's checkpoints (a finished run that will not be resumed). Main process only."""
    for path in _checkpoint_folders(output_dir):
        shutil.rmtree(path)
    shutil.rmtree(checkpoint_folder(output_dir), ignore_errors=True)  # with any unfinished save


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoint folders of the run into `output_dir`, oldest step first."""
    return [path for path in _checkpoint_folders(output_dir) if is_complete_checkpoint(path)]


def resolve_checkpoint(output_dir: str, resume_from: str | None) -> str | None:
    """The checkpoint folder to resume from, or None to start afresh.

    `resume_from` is None (start afresh), `"latest"` (the newest complete checkpoint in
    `output_dir`, or None when there is none yet, so the same command starts and resumes a run),
    or a checkpoint folder's path. Raises `ResumeError` where starting afresh would mix this run
    with an earlier one in `output_dir` (its checkpoints, or its saved model), and for an
    explicitly named checkpoint that is incomplete.
    """
    checkpoint = None
    if resume_from == "latest":
        folders = _checkpoint_folders(output_dir)
        complete = [path for path in folders if is_complete_checkpoint(path)]
        for path in folders:
            if not is_complete_checkpoint(path) and (not complete or checkpoint_step(path) > checkpoint_step(complete[-1])):
                logger.warning("%s is incomplete (no %s: a save that did not finish): skipped.", path, COMPLETE_FILE)
        checkpoint = complete[-1] if complete else None
    elif resume_from:
        if not os.path.isdir(resume_from):
            raise FileNotFoundError(f"--resume_from_checkpoint {resume_from}: no such checkpoint folder.")
        checkpoint_step(resume_from)
        if not is_complete_checkpoint(resume_from):
            raise ResumeError(
                f"--resume_from_checkpoint {resume_from}: incomplete checkpoint (no {COMPLETE_FILE}: its save did not finish)."
            )
        checkpoint = resume_from
    if checkpoint is None:
        _check_fresh_output_dir(output_dir, resume_from == "latest")
    return checkpoint


def _check_fresh_output_dir(output_dir: str, resuming: bool) -> None:
    """Refuse to start a new run where an earlier one left checkpoints or a model."""
    earlier = list(_checkpoint_folders(output_dir))
    if os.path.isfile(os.path.join(output_dir, MODEL_CONFIG_FILE)):
        earlier.append(f"a saved model ({MODEL_CONFIG_FILE})")
    if not earlier:
        if resuming:
            logger.info("No checkpoint in %s yet: starting a new run.", output_dir)
        return
    how = (
        "resume it with --resume_from_checkpoint latest"
        if list_checkpoints(output_dir) and not resuming
        else "it has no complete checkpoint to resume from: delete it"
    )
    raise ResumeError(
        f"--output_dir {output_dir} holds an earlier run ({', '.join(earlier)}): {how}, or choose an empty output folder "
        "(a new run there would mix its checkpoints and model with the earlier run's)."
    )


def run_bytes(model, checkpoints_kept: int | None) -> int:
    """About how many bytes a run writes: the model (staged once) and, per checkpoint kept (one
    more while the next is saved), its trainable weights with Adam's two moments."""
    parameters = list(model.parameters())
    total = sum(p.numel() * p.element_size() for p in parameters)
    trainable = sum(p.numel() * p.element_size() for p in parameters if p.requires_grad)
    return total + 3 * trainable * ((checkpoints_kept or 2) + 1)


def check_output_space(output_dir: str, needed_bytes: int) -> None:
    """Before training: refuse (`OutputError`, one line) an output folder, or its checkpoint folder
    beside it, that cannot be written, or a disk with less than `needed_bytes` free (an estimate of
    the checkpoints and model the run will write), rather than fail at the first checkpoint."""
    for folder in (output_dir, checkpoint_folder(output_dir)):
        try:
            os.makedirs(folder, exist_ok=True)
            probe = os.path.join(folder, f".write-test-{os.getpid()}")
            with open(probe, "wb") as handle:
                handle.write(b"0")
            os.remove(probe)
        except OSError as error:
            raise OutputError(f"{folder}: cannot write there ({error.strerror or error}): choose a writable --output_dir.") from error
    free = shutil.disk_usage(output_dir).free
    if free < needed_bytes:
        raise OutputError(
            f"{output_dir}: {free / 2**20:.0f} MiB free on its disk, the run needs about {needed_bytes / 2**20:.0f} MiB "
            "for its checkpoints and model: free some space or choose another --output_dir."
        )


def save_checkpoint(accelerator: Accelerator, output_dir: str, step: int, total_limit: int | None = None) -> str:
    """Save the full training state at `step`, keeping at most `total_limit` checkpoints.

    Call on every process (accelerate gathers the state); the main process writes the files,
    marks the folder complete, renames it into place and removes the oldest checkpoints beyond
    the limit (never the one just written). A write that fails on any process (a full disk, a
    file-size limit, a read-only or unwritable folder) raises `OutputError` on every process,
    naming the checkpoint and what the OS said, with the unfinished folder removed and the
    earlier checkpoints kept for `--resume_from_checkpoint latest`.
    """
    final = os.path.join(checkpoint_folder(output_dir), f"{CHECKPOINT_PREFIX}{step}")
    partial = final + _PARTIAL_SUFFIX

    def prepare() -> None:
        os.makedirs(os.path.dirname(final), exist_ok=True)
        if os.path.isdir(partial):
            shutil.rmtree(partial)  # left by a run killed while saving

    def finish() -> None:
        with open(os.path.join(partial, COMPLETE_FILE), "w", encoding="utf-8") as handle:
            json.dump({"step": step}, handle)
        for same_step in [path for path in _checkpoint_folders(output_dir) if checkpoint_step(path) == step]:
            shutil.rmtree(same_step)
        os.replace(partial, final)
        if total_limit is not None and total_limit > 0:
            others = [path for path in _checkpoint_folders(output_dir) if path != final]
            for old in others[: max(len(others) - (total_limit - 1), 0)]:
                logger.info("Removing %s (--checkpoints_total_limit %d).", old, total_limit)
                shutil.rmtree(old)

    try:
        _on_every_process(accelerator, prepare, main_only=True)
        _on_every_process(accelerator, lambda: accelerator.save_state(partial))
        _on_every_process(accelerator, finish, main_only=True)
    except _WriteFailed as failed:
        problem = _write_problem(failed.error, partial) if failed.error else "another process could not write its part"
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        kept = list_checkpoints(output_dir)
        resume = f"resumes from {kept[-1]}" if kept else "starts afresh (no complete checkpoint yet)"
        raise OutputError(
            f"{final}: cannot write the checkpoint ({problem}); free space, raise the file-size limit (ulimit -f) or fix "
            f"the folder's permissions: the same command with --resume_from_checkpoint latest then {resume}."
        ) from failed.error
    return final


class _WriteFailed(Exception):
    """A checkpoint write failed on this process (`error`) or on another (`error` None)."""

    def __init__(self, error: BaseException | None):
        super().__init__(error)
        self.error = error


# How `torch.save`'s zip writer reports a failed write (a `RuntimeError`, errno dropped): its own
# checks ("[enforce fail at inline_container.cc:672] . unexpected pos 41536 vs 41424",
# "PytorchStreamWriter failed writing file ...") or the C++ stream's ("basic_ios::clear: iostream error").
_TORCH_WRITE_ERRORS = ("inline_container", "PytorchStreamWriter", "iostream error")


def _is_write_error(error: BaseException) -> bool:
    """Whether `error` is a failed write: an `OSError`, safetensors' I/O error, or torch's."""
    return isinstance(error, (OSError, SafetensorError)) or (
        isinstance(error, RuntimeError) and any(marker in str(error) for marker in _TORCH_WRITE_ERRORS)
    )


def _on_every_process(accelerator: Accelerator, action: Callable[[], object], main_only: bool = False) -> None:
    """Run `action` (on the main process only with `main_only`), then wait for every process and
    raise `_WriteFailed` on all of them if a write failed on any: a plain barrier would leave the
    others waiting for ever for a process that stopped."""
    error = None
    if accelerator.is_main_process or not main_only:
        try:
            action()
        except Exception as caught:  # noqa: BLE001 - only write errors are kept; anything else is re-raised
            if not _is_write_error(caught):
                raise
            error = caught
    failed = accelerator.gather(torch.tensor([error is not None], dtype=torch.int32, device=accelerator.device))
    if error is not None or bool(failed.any()):
        raise _WriteFailed(error)


def _write_problem(error: BaseException, folder: str) -> str:
    """What the OS said about a failed write into `folder`, as one phrase (with the file, when
    known). torch's zip writer drops the errno ("unexpected pos 41536 vs 41424"): then a full disk
    and an exceeded file-size limit are looked for."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    code = re.search(r"os error (\d+)", str(error))  # safetensors: "I/O error: File too large (os error 27)"
    if code:
        return os.strerror(int(code.group(1)))
    with contextlib.suppress(OSError):
        if shutil.disk_usage(folder).free < 2**20:
            return os.strerror(errno.ENOSPC)
    limit = _file_size_limit()
    sizes = [os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names]
    if limit is not None and any(size >= limit for size in sizes):
        return os.strerror(errno.EFBIG)
    return " ".join(str(error).split())


def _file_size_limit() -> int | None:
    """This process's file-size limit (`ulimit -f`) in bytes, or None when there is none."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


# Files of a checkpoint read as pickles by accelerate (with torch's weights-only unpickler).
_PICKLED_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")


def check_checkpoint_files(directory: str) -> None:
    """Raise `ResumeError` naming the first file of the checkpoint `directory` that is not what
    its name says: a `.safetensors` file that is not valid safetensors, or a pickled file (.bin,
    .pkl, .pt) that holds anything but tensors and plain data (a planted pickle). Nothing in it
    runs: pickles are read with torch's weights-only unpickler, memory-mapped. Called before every
    `load_state`, so a tampered checkpoint ends in one line rather than torch's traceback."""
    from accelerate.utils import load as accelerate_load
    from safetensors import SafetensorError, safe_open

    for root, _, names in os.walk(directory):
        for name in sorted(names):
            path = os.path.join(root, name)
            try:
                if name.endswith(".safetensors"):
                    with safe_open(path, framework="pt") as handle:
                        list(handle.keys())
                elif name.endswith(_PICKLED_SUFFIXES):
                    accelerate_load(path, map_location="cpu", mmap=True)
            except (SafetensorError, OSError, ValueError, RuntimeError, EOFError, KeyError, AttributeError, TypeError, ImportError) as error:
                kind = "safetensors" if name.endswith(".safetensors") else "checkpoint"
                raise ResumeError(
                    f"{path}: not a valid {kind} file ({type(error).__name__.split('.')[-1]}: it holds something other than "
                    "tensors and plain data, or is truncated); it was not loaded. Resume from another checkpoint or start afresh."
                ) from None
            except Exception as error:  # pickle.UnpicklingError and other unpickler refusals
                raise ResumeError(
                    f"{path}: not a valid checkpoint file ({type(error).__name__}: it holds something other than tensors and "
                    "plain data); it was not loaded. Resume from another checkpoint or start afresh."
                ) from None


def fingerprint(values: Iterable) -> str:
    """A short digest of a sequence of values (image names, labels, raw `bytes` of weights) to
    record in a `RunLayout`."""
    digest = hashlib.sha1()
    for value in values:
        digest.update(value if isinstance(value, bytes) else repr(value).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def tensors_fingerprint(tensors: Iterable) -> str:
    """`fingerprint` of tensors' values (e.g. a model's projection weights, to tell models apart)."""
    return fingerprint(tensor.detach().float().cpu().numpy().tobytes() for tensor in tensors)


class RunLayout:
    """What a run's checkpointed state depends on (data, batch size, seed, optimiser settings),
    saved as `run_layout.json` in every checkpoint and compared on resume: a changed value would
    silently break the resumed run (another data order, optimiser state for other parameters),
    so the resume is refused with the differences named. Values must be JSON types."""

    def __init__(self, **layout):
        self.layout = json.loads(json.dumps(layout))  # tuples -> lists, as read back

    def save(self, directory: str) -> None:
        with open(os.path.join(directory, LAYOUT_FILE), "w", encoding="utf-8") as handle:
            json.dump(self.layout, handle, indent=1, sort_keys=True)

    def check(self, directory: str) -> None:
        """Raise `ResumeError` unless the checkpoint `directory` was written with this layout."""
        path = os.path.join(directory, LAYOUT_FILE)
        if not os.path.isfile(path):
            raise ResumeError(f"{path}: missing; {directory} was not written by this script.")
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
        changed = sorted(key for key in saved.keys() | self.layout.keys() if saved.get(key) != self.layout.get(key))
        if changed:
            details = "; ".join(f"{key}: {saved.get(key)!r} then, {self.layout.get(key)!r} now" for key in changed)
            raise ResumeError(
                f"Cannot resume from {directory}: the run changed ({details}). Resume with the settings it was "
                "started with, or start a new run in another output folder."
            )

    def attach(self, accelerator: Accelerator) -> None:
        """Save with every `accelerator.save_state` and check before every `load_state`."""
        accelerator.register_save_state_pre_hook(lambda models, weights, directory: accelerator.is_main_process and self.save(directory))
        accelerator.register_load_state_pre_hook(lambda models, directory: (check_checkpoint_files(directory), self.check(directory)))


class JsonState:
    """An object's `state_dict()` (an LR scheduler's, say) saved as JSON in every checkpoint and
    loaded back with it: accelerate's `register_for_checkpointing` pickles such objects and
    unpickles them with `weights_only=False`, which would run code from a checkpoint file."""

    def __init__(self, obj, filename: str):
        self.obj, self.filename = obj, filename

    def attach(self, accelerator: Accelerator) -> None:
        """Save with every `accelerator.save_state` and load with every `load_state`."""

        def save(models, weights, directory):
            if accelerator.is_main_process:
                with open(os.path.join(directory, self.filename), "w", encoding="utf-8") as handle:
                    json.dump(self.obj.state_dict(), handle)

        def load(models, directory):
            path = os.path.join(directory, self.filename)
            if not os.path.isfile(path):
                raise ResumeError(f"{path}: missing; {directory} was not written by this script.")
            with open(path, encoding="utf-8") as handle:
                self.obj.load_state_dict(json.load(handle))

        accelerator.register_save_state_pre_hook(save)
        accelerator.register_load_state_pre_hook(load)


def write_model_folder(output_dir: str, write: Callable[[str], None]) -> None:
    """Have `write(folder)` write a model folder, then move its files into `output_dir`.

    The files are written to a staging folder first and moved in with `config.json` last (an
    earlier `config.json` is removed first), so a crash midway leaves a folder that does not
    load rather than one mixing new files with old ones or holding a truncated weight file.
    Main process only.
    """
    staging = os.path.join(output_dir, _MODEL_STAGING)
    try:
        _write_and_move_in(output_dir, staging, write)
    except Exception as error:  # a full disk, a file-size limit, a read-only folder: one line
        if not _is_write_error(error):
            raise
        problem = _write_problem(error, staging)
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(
            f"{output_dir}: cannot write the model ({problem}); "
            "free space or fix the folder's permissions; its checkpoints are kept (--resume_from_checkpoint latest)."
        ) from error


def _write_and_move_in(output_dir: str, staging: str, write: Callable[[str], None]) -> None:
    if os.path.isdir(staging):
        shutil.rmtree(staging)
    os.makedirs(staging)
    write(staging)
    honour_umask(staging)  # safetensors writes model.safetensors 0600: a shared model folder must be readable
    if not os.path.isfile(os.path.join(staging, MODEL_CONFIG_FILE)):
        raise RuntimeError(f"The model writer left no {MODEL_CONFIG_FILE} in {staging}.")
    target_config = os.path.join(output_dir, MODEL_CONFIG_FILE)
    if os.path.exists(target_config):
        os.remove(target_config)
    for name in sorted(os.listdir(staging)):
        if name == MODEL_CONFIG_FILE:
            continue
        target = os.path.join(output_dir, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        os.replace(os.path.join(staging, name), target)
    os.replace(os.path.join(staging, MODEL_CONFIG_FILE), target_config)
    os.rmdir(staging)
