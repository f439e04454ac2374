"""`ScoreOptions`: how to score, one frozen value checked when made, shared by every front end
(image files, tar shards, `datasets`, Ray) and by `uniqa score`, which builds it from its flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..configuration_uniqa import parse_view_policy
from ..core.default_model import DEFAULT_MODEL
from ..core.device_defaults import decoding_workers, scoring_batch_size
from ..core.inference_speed import QUANTIZE_CHOICES
from ..core.model_folder import view_tokens
from ..core.runtime import DTYPES
from ..errors import UsageError

OUTPUT_KINDS = ("score", "mos", "groups")
DEVICES = ("auto", "cpu", "cuda")


def _names(value, what: str) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    names = tuple(dict.fromkeys(str(name).strip() for name in value if str(name).strip()))
    if not names:
        raise UsageError(f"{what}: give at least one name.")
    return names


@dataclass(frozen=True)
class ScoreOptions:
    """Everything that decides how images are scored (and so what a result's fingerprint holds),
    as `uniqa score`'s flags of the same names. Checked in `__post_init__` (`UsageError`, one line).

    `None` means the default: the model's view policy / seed, every head, `score` (+ `mos` when
    the model knows its MOS range), the device's batch size and decoding workers (see
    `resolved`), the saved processor's `jpeg_draft`; `compile=None`: compile when it pays off
    (image files on the CPU), else not.
    """

    model: str = DEFAULT_MODEL
    outputs: tuple | None = None
    heads: tuple | None = None
    view_policy: str | None = None
    view_seed: int | None = None
    dtype: str = "float32"
    device: str = "auto"
    prompts: str | None = None
    tokenizer: str | None = None
    adapter: str | None = None
    batch_size: int | None = None
    workers: int | None = None
    compile: bool | None = None
    quantize: str | None = None
    jpeg_draft: bool | None = None

    def __post_init__(self):
        set_field = object.__setattr__.__get__(self)  # frozen: normalise once, here
        set_field("model", str(self.model))
        set_field("outputs", _names(self.outputs, "outputs"))
        set_field("heads", _names(self.heads, "heads"))
        unknown = sorted(set(self.outputs or ()) - set(OUTPUT_KINDS))
        if unknown:
            raise UsageError(f"outputs {', '.join(unknown)}: choose from {', '.join(OUTPUT_KINDS)}.")
        if self.view_policy is not None:
            try:
                parse_view_policy(self.view_policy)
            except ValueError as error:
                raise UsageError(f"view_policy: {error}") from error
        if self.dtype not in DTYPES:
            raise UsageError(f"dtype {self.dtype!r}: choose from {', '.join(sorted(DTYPES))}.")
        set_field("device", str(self.device))
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError) as error:
                raise UsageError(f"device {self.device!r}: choose from {', '.join(DEVICES)}, cuda:N or another torch device.") from error
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.workers is not None and self.workers < 0:
            raise UsageError(f"workers must be >= 0, got {self.workers}.")
        if self.quantize is not None and self.quantize not in QUANTIZE_CHOICES:
            raise UsageError(f"quantize {self.quantize!r}: choose from {', '.join(QUANTIZE_CHOICES)}.")

    def resolved(self, device, local_processes: int = 1) -> ScoreOptions:
        """These options with the batch size (of `device` and the model's view size) and decoding
        workers of `device` filled in where not given."""
        batch_size = scoring_batch_size(self.batch_size, device, view_tokens(self.model) if self.batch_size is None else None)
        return dataclasses.replace(self, workers=decoding_workers(self.workers, device, local_processes), batch_size=batch_size)

    def scorer_kwargs(self) -> dict:
        """The keywords of `ImageScorer` (and `DatasetScorer`, `score_dataset`, `UniQAScorer`) after its
        `model_dir` (`self.model`): the one place the options become a scorer's arguments."""
        return dict(
            outputs=list(self.outputs) if self.outputs else None, view_policy=self.view_policy,
            view_seed=self.view_seed, dtype=self.dtype, device=self.device, prompts=self.prompts, tokenizer_dir=self.tokenizer,
            batch_size=32 if self.batch_size is None else self.batch_size, compile=bool(self.compile), quantize=self.quantize,
            jpeg_draft=self.jpeg_draft, heads=list(self.heads) if self.heads else None, adapter=self.adapter,
        )


__all__ = ["OUTPUT_KINDS", "ScoreOptions"]
