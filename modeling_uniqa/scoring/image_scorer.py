"""`ImageScorer`: `uniqa score`'s scoring core for images that are not files in a folder.

The `datasets`, WebDataset-shard and Ray Data paths hold images as encoded bytes, PIL images or
arrays. They all score through this class, which is made of `score_images`'s parts (the checked
model and processor of `load_scorer`, `decode_views`, `Normalizer`, `score_batch`, the columns of
`output_columns` and `scoring_fingerprint`), so every path cuts the same seeded views, runs the
same forward and writes the same columns as `uniqa score` (named heads and an adapter
included): scores agree with it within 1e-6 on the same images (float32 sums of other batch
sizes run in another order).
"""

from __future__ import annotations

import logging

import torch

from ..configuration_uniqa import view_count
from ..core.runtime import DTYPES
from ..errors import UsageError
from .options import ScoreOptions
from .score_images import (
    Normalizer,
    collate_views,
    decode_views,
    load_scorer,
    output_columns,
    score_batch,
    scoring_fingerprint,
    select_heads,
    set_jpeg_draft,
)

logger = logging.getLogger(__name__)


def resolve_device(device: str = "auto", rank: int | None = None) -> torch.device:
    """`"auto"`: the GPU `rank % GPU count` (GPU 0 without a rank) if there is one, else the CPU;
    `"cpu"`, `"cuda"`, `"cuda:N"` as given."""
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", (rank or 0) % torch.cuda.device_count())
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {device!r}: no CUDA device is available here.")
    return torch.device(device)


class ImageScorer:
    """A UniQA model ready to score decoded or encoded images into result rows.

    Args:
        model_dir: a UniQA model folder (checked; a fault raises `ModelFolderError`).
        key_column: the name of the first column, which identifies a row (`path`, `key`...).
        outputs: the score columns to make, among `score`, `mos`, `groups` (default: score,
            plus mos when the model knows its MOS range), as `uniqa score --outputs`.
        heads: the named heads to score (`uniqa score --heads`; default: all the model's), each
            giving its own columns (`X`, `X_mos`, `X_group_<g>`; the default head's are `score`...);
            an unknown name raises `UsageError`.
        adapter: an adapter folder (`adapter_io.save_adapter`) put on the model before scoring,
            as `uniqa score --adapter`; one of another backbone raises `UsageError`.
        view_policy, view_seed: default the model's.
        dtype: `float32`, `bfloat16` or `float16`.
        device: see `resolve_device`; `rank` picks the GPU of a worker process.
        prompts, tokenizer_dir: replace the model's prompt groups, as `uniqa score --prompts`.
        batch_size: views per forward (a batch holds at least one image), as `uniqa score`.
        compile, quantize: `uniqa score --compile` / `--quantize int8` (see `inference_speed`).
        jpeg_draft: draft-decode JPEGs where the views downsize anyway, as `uniqa score --jpeg-draft`
            (`None`: the saved image processor's setting).

    Attributes: `columns` (key, scores, `error`), `score_columns` (the scores only), `heads`
    (those scored, in the model's order) and
    `fingerprint` (the dict `uniqa score` records in its sidecar: model, dtype, prompts, views,
    columns, so the heads; the default head's weights, so the adapter), written into every Parquet
    output so mixed results can be refused.
    """

    def __init__(self, model_dir: str, key_column: str = "path", outputs: list | None = None, view_policy: str | None = None,
                 view_seed: int | None = None, dtype: str = "float32", device: str = "auto", rank: int | None = None,
                 prompts: str | None = None, tokenizer_dir: str | None = None, batch_size: int = 32,
                 compile: bool = False, quantize: str | None = None, jpeg_draft: bool | None = None,
                 heads: list | None = None, adapter: str | None = None):
        if dtype not in DTYPES:
            raise UsageError(f"dtype {dtype!r}: choose from {', '.join(sorted(DTYPES))}.")
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}.")
        self.device = resolve_device(device, rank)
        self.model, self.processor = load_scorer(model_dir, DTYPES[dtype], self.device, prompts, tokenizer_dir, adapter,
                                                 compile=compile, quantize=quantize)
        self.view_policy = view_policy or self.model.config.view_policy
        set_jpeg_draft(self.processor, jpeg_draft, self.view_policy)
        self.view_seed = self.model.config.view_seed if view_seed is None else view_seed
        self.heads = select_heads(self.model, heads)
        self.columns = output_columns(self.model, outputs, self.heads, key_column)
        self.score_columns = self.columns[1:-1]
        self.fingerprint = scoring_fingerprint(model_dir, self.model, self.processor, dtype, self.view_policy, self.view_seed, self.columns,
                                               quantize)
        self.images_per_forward = max(1, batch_size // view_count(self.view_policy))
        self.normalize = Normalizer(self.processor, self.device)

    @classmethod
    def from_options(cls, options: ScoreOptions, key_column: str = "path", rank: int | None = None) -> ImageScorer:
        """The scorer of `options` (a `ScoreOptions`)."""
        return cls(options.model, key_column=key_column, rank=rank, **options.scorer_kwargs())

    def decode(self, source, name: str):
        """An image (path, encoded bytes, PIL image or array) -> `(uint8 views, None)` or
        `(None, one-line error message)`. Safe to run in worker processes (no model involved)."""
        views, error, frames = decode_views(source, self.processor, self.view_policy, self.view_seed, name)
        if frames > 1:
            logger.info("Scored on its first frame of %d: %s", frames, name)
        return views, error

    def score_decoded(self, keys: list, decoded: list) -> list:
        """`decode` results of the images `keys` -> one row per key, in order: the scores, or
        empty scores and the error. Forwards run `images_per_forward` images at a time."""
        rows = []
        for start in range(0, len(keys), self.images_per_forward):
            chunk = decoded[start : start + self.images_per_forward]
            batch = collate_views([(index, views, error, 1) for index, (views, error) in enumerate(chunk)])
            rows += self.score_collated(keys[start : start + len(chunk)], batch)
        return rows

    def score_collated(self, keys: list, batch) -> list:
        """A `collate_views` batch of the images `keys` (its indices index `keys`) -> one row per
        key, in order, in one forward: for loaders that stack (and pin) batches themselves."""
        with torch.inference_mode():
            return score_batch(self.model, self.normalize, batch, keys, self.columns, self.heads)

    def score(self, keys: list, sources: list) -> list:
        """Decode `sources` (named by `keys` in errors) here and score them: one row per key."""
        return self.score_decoded(keys, [self.decode(source, str(key)) for key, source in zip(keys, sources)])
