"""Add UniQA score columns to a `datasets.Dataset` with an image column.

    from datasets import load_from_disk
    from modeling_uniqa.scoring.score_datasets import score_dataset
    ds = score_dataset(load_from_disk("photos"), "uniqa-koniq", image_column="image", num_proc=2)
    ds.filter(lambda row: row["score"] > 0.6)

    uniqa score --dataset photos --split train --image-column image --model uniqa-koniq --output scores.parquet

How it runs: `ds.map(DatasetScorer(...), batched=True, with_indices=True, with_rank=True,
num_proc=N)`. Each map process loads the model once, on the GPU `rank % GPU count` when there
are GPUs (so `num_proc` = the number of GPUs gives one process per GPU), else on the CPU. An
`Image` column is read undecoded (`Image(decode=False)`) and decoded in the map process by
`uniqa score`'s decoder: an image that cannot be read gets empty scores and its reason in
`error` instead of stopping the map. Scores are batch-invariant (the views of an image are
seeded per image) and equal `uniqa score`'s on the same files within 1e-6. `datasets` caches the
map under `uniqa score`'s fingerprint (weights, adapter, heads, prompts, views...), never under
paths: a model or adapter retrained in place is scored again.
"""

import logging
import os

import torch

from ..errors import UsageError
from .image_scorer import ImageScorer

logger = logging.getLogger(__name__)


def image_source(value):
    """A cell of the image column -> what `ImageScorer.decode` takes: encoded bytes, a path, a
    PIL image or an array (`Image(decode=False)` cells are `{"bytes", "path"}` dicts)."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        if value.get("path"):
            return value["path"]
        return None
    if hasattr(value, "__array__") and not isinstance(value, (bytes, str)):
        import numpy as np

        return np.asarray(value)
    return value


class DatasetScorer:
    """The `ds.map` function: a batch (with indices and rank) -> the score columns
    (`column_prefix` + score, mos, group_*, error). Picklable: the model is loaded in each map
    process on first use, never pickled. Keyword arguments go to `ImageScorer` (outputs, heads,
    adapter, view_policy, view_seed, dtype, device, prompts, tokenizer_dir, batch_size, compile,
    quantize, jpeg_draft)."""

    def __init__(self, model_dir: str, image_column: str = "image", column_prefix: str = "", **scorer_kwargs):
        self.model_dir, self.image_column, self.column_prefix = model_dir, image_column, column_prefix
        self.scorer_kwargs = scorer_kwargs
        self._scorer, self._rank, self._parent_pid = None, None, os.getpid()

    def __getstate__(self):
        return self.__dict__ | {"_scorer": None, "_rank": None}

    def scorer(self, rank: int | None = None) -> ImageScorer:
        if self._scorer is None or (rank is not None and rank != self._rank):
            if rank is not None and os.getpid() != self._parent_pid:
                # A forked map process: its copy of the parent's CPU thread pool would deadlock the
                # first forward once the parent has run one; and N processes share the cores anyway.
                torch.set_num_threads(1)
            self._scorer, self._rank = ImageScorer(self.model_dir, key_column="index", rank=rank, **self.scorer_kwargs), rank
        return self._scorer

    @property
    def fingerprint(self) -> dict:
        """What makes the numbers (as `uniqa score`'s sidecar); loads the model here if needed."""
        return self.scorer(self._rank).fingerprint

    def output_columns(self) -> list:
        return [self.column_prefix + column for column in self.scorer(self._rank).columns[1:]]

    def __call__(self, batch: dict, indices: list, rank: int | None = None) -> dict:
        scorer = self.scorer(rank)
        names = [f"{self.image_column}[{index}]" for index in indices]
        sources = [image_source(value) for value in batch[self.image_column]]
        rows = scorer.score_decoded(indices, [
            scorer.decode(source, name) if source is not None else (None, f"{name}: no image (empty cell).")
            for source, name in zip(sources, names)
        ])
        return {self.column_prefix + column: [row[column] for row in rows] for column in scorer.columns[1:]}


def score_dataset(dataset, model_dir: str, image_column: str = "image", num_proc: int | None = None, map_batch_size: int = 64,
                  column_prefix: str = "", scorer: DatasetScorer | None = None, **scorer_kwargs):
    """`dataset` with the UniQA columns added (`column_prefix` + score, mos, group_*, error; see
    `ImageScorer` for `scorer_kwargs`). `num_proc`: map processes (one per GPU on GPUs).
    `map_batch_size`: images per map call (forwards run `batch_size` views at a time).
    Raises `UsageError` when the image column is missing or an added column exists already."""
    from datasets import Image, Value
    from datasets.fingerprint import Hasher

    if image_column not in dataset.column_names:
        raise UsageError(f"image column {image_column!r} is not in the dataset (columns: {', '.join(dataset.column_names)}).")
    function = scorer or DatasetScorer(model_dir, image_column, column_prefix, **scorer_kwargs)
    taken = sorted(set(function.output_columns()) & set(dataset.column_names))
    if taken:
        raise UsageError(f"the dataset already has column(s) {', '.join(taken)}: pass a column prefix (e.g. 'uniqa_').")
    if num_proc and num_proc > 1 and torch.cuda.is_available():
        import multiprocess

        if multiprocess.get_start_method(allow_none=True) != "spawn":
            # a forked child cannot use the CUDA the parent has set up (the model was loaded here to check it)
            raise UsageError("num_proc > 1 on GPUs needs spawned map processes: call multiprocess.set_start_method('spawn') first.")
    if isinstance(dataset.features[image_column], Image):
        dataset = dataset.cast_column(image_column, Image(decode=False))  # decoded by us, in the map process: bad files are rows
    features = dataset.features.copy()  # typed up front: a first batch of all-null errors must not fix the type to null
    for column in function.output_columns():
        features[column] = Value("string") if column == function.column_prefix + "error" else Value("float64")
    # `datasets` names its map cache after the pickled function, which holds the model's and the
    # adapter's paths, not their weights: a model retrained in place would get the old scores
    # back. Name it after what decides the numbers (`uniqa score`'s fingerprint) instead.
    cache_name = Hasher.hash([dataset._fingerprint, function.fingerprint, function.image_column, function.column_prefix])
    return dataset.map(
        function, batched=True, batch_size=map_batch_size, with_indices=True, with_rank=True, num_proc=num_proc,
        features=features, desc="UniQA scores", new_fingerprint=cache_name,
    )


def load_split(dataset: str, split: str):
    """A folder of `save_to_disk`, or anything `load_dataset` opens (a Hub id, a folder of
    files), -> the `split` `Dataset`. `UsageError` names what is missing."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    saved = os.path.isdir(dataset) and any(os.path.exists(os.path.join(dataset, name)) for name in ("dataset_dict.json", "state.json"))
    try:
        loaded = load_from_disk(dataset) if saved else load_dataset(dataset, split=split)
    except Exception as error:  # any failure to open it is a usage error naming it
        raise UsageError(f"--dataset {dataset}: cannot open it ({type(error).__name__}: {error}).") from error
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise UsageError(f"--dataset {dataset}: no split {split!r} (splits: {', '.join(loaded)}).")
        loaded = loaded[split]
    return loaded
