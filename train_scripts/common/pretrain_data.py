"""The pre-training data: merged caption corpora, one item per image, and its batching.

* :func:`load_pretrain_corpus` builds the corpora with ``data_builders.load`` and merges them
  by image (captions pooled) with ``data_builders.merge_corpora``, leaving out excluded images
  (e.g. AVA's official test split).
* :class:`PretrainDataset`: item ``(index, epoch)`` -> ``crops_per_image`` random views of the
  decoded image (one by default), each with ONE of its captions, drawn from a generator seeded
  with ``(seed, epoch, index)``: the same on any
  number of processes or workers and after a resume, different from epoch to epoch. An image
  that does not decode is stood in for by the next row that does (the same on every run) and
  reported with the item (``skipped``).
* :class:`GlobalBatchSampler`: a seeded permutation per epoch cut into global batches (the
  incomplete last one dropped, as the release does); each process takes its slice. Since an
  image is one item, a global batch never holds an image twice, and the global batches are the
  same for any number of processes.
* :class:`PretrainCollator`: stacks images and tokenises the drawn captions with dynamic
  padding (to the longest caption of the batch, at most the text tower's context length).
* :func:`positive_groups`: which views of a batch the CLIP loss counts as each other's
  positives (views of one image; with ``by_meaning``, also captions that state the same thing).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import datasets
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from modeling_uniqa.processing_uniqa import UniQAImageError, load_image

from .errors import DataError, MissingFileError, SettingsError

STAND_IN_TRIES = 16  # rows tried for an item whose image does not decode before the run stops


def parse_named_dirs(specs: Sequence[str], flag: str) -> list[tuple[str, str]]:
    """``["NAME=DIR", ...]`` -> ``[(NAME, DIR), ...]``; a malformed spec raises naming ``flag``."""
    pairs = []
    for spec in specs or ():
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise SettingsError(f"{flag} {spec!r}: expected NAME=DIR (e.g. caption_jsonl=/data/captions).")
        pairs.append((name.strip(), os.path.expanduser(path.strip())))
    return pairs


def _exclusion(name: str, path: str, cache_dir: str | None):
    """Images to leave out: a text file of names (``file=``), a corpus (all of its images), or a
    rating dataset's official ``test`` split."""
    import data_builders

    if name == "file":
        if not os.path.isfile(path):
            raise MissingFileError(f"--exclude file={path}: no such file (expected one image name per line).")
        with open(path, encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip()]
    loaded = data_builders.load(name, path, cache_dir=cache_dir)
    if "captions" in next(iter(loaded.values())).column_names:
        return loaded
    if "test" not in loaded:
        raise DataError(f"--exclude {name}={path}: the dataset has no 'test' split (splits: {list(loaded)}).")
    return loaded["test"]


def load_pretrain_corpus(
    corpora: Sequence[tuple[str, str]],
    exclude: Sequence[tuple[str, str]] = (),
    match_key: str = "stem",
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """Build and merge caption corpora into one row per image.

    Args:
        corpora: ``(builder name, data_dir)`` pairs, e.g. ``("caption_jsonl", "/data/caps")``.
        exclude: ``(name, path)`` pairs of images to leave out: a rating dataset (its ``test``
            split, e.g. ``("ava", "/data/AVA")``), a corpus (all its images) or
            ``("file", "names.txt")`` (one image name a line).
        match_key: how images are matched across corpora (see ``data_builders.image_key``).
        cache_dir: where the builders write their Arrow files.

    Returns:
        The merged ``datasets.Dataset`` (columns of ``data_builders.merge_corpora``).
    """
    import data_builders

    if not corpora:
        raise SettingsError("No corpus given: pass at least one --corpus NAME=DIR.")
    loaded = [data_builders.load(name, path, cache_dir=cache_dir) for name, path in corpora]
    excluded = []
    for name, path in exclude:
        part = _exclusion(name, path, cache_dir)
        excluded.extend(part if isinstance(part, list) else [n for split in _splits(part) for n in split["image_name"]])
    merged = data_builders.merge_corpora(loaded, exclude=excluded or None, key=match_key)
    if len(merged) == 0:
        raise DataError(f"The corpora {[p for _, p in corpora]} hold no image with a caption after exclusions.")
    return merged


def _splits(obj):
    return list(obj.values()) if isinstance(obj, datasets.DatasetDict) else [obj]


def decode_image_cell(image, name: str) -> Image.Image:
    """A ``datasets.Image(decode=False)`` cell (``{"bytes", "path"}``) -> upright RGB PIL image."""
    if image.get("bytes") is not None:  # even empty: `load_image` says so, naming the image
        return load_image(image["bytes"], name=name)
    if image.get("path"):
        return load_image(image["path"])
    raise UniQAImageError(f"{name}: the corpus row holds neither image bytes nor a path.")


class PretrainDataset(Dataset):
    """Merged corpus rows -> ``{"pixel_values", "captions", "index"}`` for pre-training.

    Args:
        data: a ``datasets.Dataset`` with ``image`` and ``captions`` (and ``image_name``).
        transform: callable ``(PIL image, numpy Generator) -> float32 (3, H, W)``.
        seed: base seed of the caption draw and of random transforms.
        crops_per_image: views cut from each decoded image (``pixel_values`` is
            ``(crops_per_image, 3, H, W)``, ``captions`` one drawn caption per view). Decoding a
            large image costs more than a small tower's forward on a crop of it, so several
            crops per decode make a CPU step several times cheaper (UniQA-Tiny).

    Items are addressed as ``(index, epoch)`` (a bare ``index`` means epoch 0).
    """

    def __init__(self, data: datasets.Dataset, transform, seed: int = 0, crops_per_image: int = 1):
        missing = {"image", "captions"} - set(data.column_names)
        if missing:
            raise ValueError(f"The pre-training corpus lacks the column(s) {sorted(missing)}; got {data.column_names}.")
        self.data = data.cast_column("image", datasets.Image(decode=False))
        self.transform = transform
        self.seed = int(seed)
        if int(crops_per_image) < 1:
            raise ValueError(f"crops_per_image must be at least 1, got {crops_per_image}.")
        self.crops_per_image = int(crops_per_image)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key):
        index, epoch = (key, 0) if isinstance(key, (int, np.integer)) else key
        index, skipped = int(index), []
        # An image that passed the start's header check (`image_check`) and still does not decode
        # (a truncated JPEG) must not end the run: the next rows stand in, in order, with this
        # item's draws, and the failure travels with the item to be counted (`skipped`).
        for offset in range(min(STAND_IN_TRIES, len(self.data))):
            row_index = (index + offset) % len(self.data)
            try:
                item = self._item(row_index, index, epoch)
            except UniQAImageError as error:
                skipped.append({"image": self._name(self.data[row_index], row_index), "error": str(error)})
                continue
            return {**item, "skipped": skipped}
        raise DataError(
            f"{len(skipped)} corpus images in a row cannot be decoded (from {skipped[0]['error']}): the corpus is damaged; "
            "fix or remove the images."
        )

    @staticmethod
    def _name(row: dict, row_index: int) -> str:
        return row.get("image_name") or (row["image"] or {}).get("path") or f"row {row_index}"

    def _item(self, row_index: int, index: int, epoch: int) -> dict:
        """The views and captions of corpus row `row_index`, drawn for item `index` (itself, or the item it stands in for)."""
        row = self.data[row_index]
        name = self._name(row, row_index)
        captions = row["captions"]
        if not captions:
            raise ValueError(f"{name}: the corpus row {row_index} has no caption.")
        # One generator per (seed, epoch, index): the captions first, then the transform's draws.
        rng = np.random.default_rng([self.seed, epoch, index])
        drawn = rng.integers(len(captions), size=self.crops_per_image)
        meanings = row.get("caption_meanings") or [None] * len(captions)
        image = decode_image_cell(row["image"], name)
        pixels = np.stack([self.transform(image, rng) for _ in range(self.crops_per_image)])
        return {"pixel_values": pixels, "captions": [captions[int(i)] for i in drawn],
                "meanings": [meanings[int(i)] for i in drawn], "index": row_index}


class GlobalBatchSampler(Sampler):
    """Yields this process's part of each global batch, as lists of ``(index, epoch)``.

    Epoch ``e`` permutes ``range(num_items)`` with a generator seeded ``(seed, e)`` (or keeps
    the order with ``shuffle=False``), cuts it into ``num_items // global_batch`` full global
    batches of ``batch_size * num_processes`` items and gives process ``p`` the ``p``-th
    ``batch_size`` slice of each. Call :meth:`set_epoch` before iterating.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        num_processes: int = 1,
        process_index: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ):
        if batch_size < 1 or num_processes < 1 or not 0 <= process_index < num_processes:
            raise ValueError(f"bad batch layout: batch_size={batch_size}, process {process_index} of {num_processes}.")
        self.num_items, self.batch_size = int(num_items), int(batch_size)
        self.num_processes, self.process_index = int(num_processes), int(process_index)
        self.seed, self.shuffle, self.epoch = int(seed), bool(shuffle), 0

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_processes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_items // self.global_batch_size

    def global_batches(self, epoch: int) -> np.ndarray:
        """All global batches of ``epoch``: (len(self), global_batch_size) item indices."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        else:
            order = np.arange(self.num_items)
        return order[: len(self) * self.global_batch_size].reshape(len(self), self.global_batch_size)

    def __iter__(self):
        start = self.process_index * self.batch_size
        for batch in self.global_batches(self.epoch):
            yield [(int(i), self.epoch) for i in batch[start : start + self.batch_size]]


class PretrainCollator:
    """Items of :class:`PretrainDataset` -> a batch of tensors, one row per view.

    Returns ``pixel_values`` (B, 3, H, W) float32 (B = items x crops per image, an item's
    views adjacent), ``input_ids`` and ``attention_mask`` (B, L) with L the longest caption of
    the batch (truncated to ``max_length``), and ``indices`` (B,) the corpus row of each view
    (views of one image share it: the CLIP loss counts them as each other's positives).
    """

    def __init__(self, tokenizer, max_length: int = 77):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            [caption for item in items for caption in item["captions"]],
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {
            "pixel_values": torch.from_numpy(np.concatenate([item["pixel_values"] for item in items])),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "indices": torch.tensor(
                [item["index"] for item in items for _ in item["captions"]], dtype=torch.long
            ),
            # what each drawn caption states (None where its corpus does not say): see `positive_groups`
            "meanings": [meaning for item in items for meaning in item.get("meanings") or [None] * len(item["captions"])],
            # images that did not decode and were stood in for: [{"image", "error"}]
            "skipped": [entry for item in items for entry in item.get("skipped", ())],
        }


def _meaning_id(meaning: str) -> int:
    """A negative int64 for a meaning, the same on every process (row indices are >= 0)."""
    digest = hashlib.sha1(meaning.encode("utf-8")).digest()
    return -1 - (int.from_bytes(digest[:8], "big") >> 1)


def positive_groups(indices: torch.Tensor, meanings: Sequence[str | None], by_meaning: bool) -> torch.Tensor:
    """The group of each view for :class:`~train_scripts.common.clip_loss.ClipLoss` (B,).

    A view's group is its corpus row (views of one image are each other's positives) or, with
    ``by_meaning``, the meaning of its caption where the corpus records one: template captions
    that state the same level and distortion in other words then count as positives instead of
    as negatives. A view without a recorded meaning keeps its row's group.
    """
    if not by_meaning:
        return indices
    groups = indices.clone()
    for i, meaning in enumerate(meanings):
        if meaning is not None:
            groups[i] = _meaning_id(meaning)
    return groups


__all__ = [
    "GlobalBatchSampler",
    "PretrainCollator",
    "PretrainDataset",
    "decode_image_cell",
    "load_pretrain_corpus",
    "parse_named_dirs",
    "positive_groups",
]
