"""Deterministic train/test splits, few-label subsets, and split files.

Random splits (method.md sections 3-4: 10 random 80/20 splits, seed 123):

* The *units* of a split are image names, or reference-image names for synthetic sets
  (LIVE, CSIQ, TID2013, KADID-10k), so no content is in both parts.
* The units are sorted (so the file order of a label file does not matter), permuted with
  ``numpy.random.default_rng([seed, split_index, 1])``, and the first
  ``floor(train_fraction * n + 0.5)`` units of the permutation form the training part.
* ``few_label=N`` sorts the training images and permutes them with
  ``numpy.random.default_rng([seed, split_index, repetition, 2])``; the first ``N`` are kept.
  The subsets are nested (the 50 images are the first 50 of the 100) and the test part
  does not change.

The trailing stream numbers (1, 2) keep the two generators apart (numpy treats trailing
zeros in a seed list as absent, so the stream number is put last and is never 0).

Split files are JSON: ``{"train": [names...], "test": [names...], "validation": [...],
"metadata": {...}}`` where names are the ``image_name`` column (the image's path relative
to the dataset's image folder, as in the label file). :func:`write_split` writes one from a
``DatasetDict`` (or a mapping of names), :func:`read_split` reads it back, and every rating
builder takes ``split_file=`` to reproduce it exactly.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import DatasetFormatError
from .metadata import get_metadata

logger = logging.getLogger(__name__)

__all__ = [
    "TRAIN_VAL_TEST",
    "check_split_list",
    "random_split",
    "few_label_subset",
    "write_split",
    "read_split",
    "SPLIT_FILE_FORMAT",
]

SPLIT_FILE_FORMAT = "uniqa-hf-split/1"
TRAIN_VAL_TEST = ("train", "validation", "test")
_SPLIT_STREAM = 1
_FEW_LABEL_STREAM = 2


def _check_seed(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def random_split(
    units: Iterable[Hashable],
    seed: int = 123,
    split_index: int = 0,
    train_fraction: float = 0.8,
) -> tuple[set[Hashable], set[Hashable]]:
    """Split ``units`` (image or reference names) into ``(train, test)`` sets.

    Args:
        units: the names to split; duplicates count once.
        seed: the base seed (123 as in the authors' release).
        split_index: which of the repeated splits (0-9 for the usual ten).
        train_fraction: the share of units in the training part, in (0, 1).
    """
    _check_seed(seed=seed, split_index=split_index)
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    ordered = sorted(set(units))
    order = np.random.default_rng([seed, split_index, _SPLIT_STREAM]).permutation(len(ordered))
    n_train = int(math.floor(train_fraction * len(ordered) + 0.5))
    train = {ordered[i] for i in order[:n_train]}
    test = {ordered[i] for i in order[n_train:]}
    return train, test


def few_label_subset(
    names: Iterable[Hashable],
    n: int,
    seed: int = 123,
    split_index: int = 0,
    repetition: int = 0,
) -> set[Hashable]:
    """Draw ``n`` training names (nested in ``n``; see the module docstring)."""
    _check_seed(seed=seed, split_index=split_index, repetition=repetition)
    ordered = sorted(set(names))
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"few_label must be a positive integer, got {n!r}")
    if n > len(ordered):
        raise ValueError(f"few_label={n} is more than the {len(ordered)} training images available")
    order = np.random.default_rng([seed, split_index, repetition, _FEW_LABEL_STREAM]).permutation(len(ordered))
    return {ordered[i] for i in order[:n]}


def write_split(
    splits: Any,
    path: str,
    metadata: Mapping[str, Any] | None = None,
    column: str = "image_name",
) -> str:
    """Write the image names of each split to a JSON file.

    Args:
        splits: a ``datasets.DatasetDict`` (names are read from ``column``; the dataset's
            UniQA metadata is added, see :func:`data_builders.metadata.get_metadata`) or a
            mapping ``{split: [names...]}``.
        path: where to write.
        metadata: extra metadata (merged over what the dataset provides).
        column: the column holding the names.

    Returns:
        ``path``.
    """
    names: dict[str, list[str]] = {}
    meta: dict[str, Any] = {}
    for split, value in splits.items():
        if hasattr(value, "column_names"):
            names[split] = [str(n) for n in value[column]]
            if not meta:
                meta = dict(get_metadata(value))
        else:
            names[split] = [str(n) for n in value]
    meta.update(metadata or {})
    meta["format"] = SPLIT_FILE_FORMAT
    payload: dict[str, Any] = dict(names)
    payload["metadata"] = meta
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1)
        handle.write("\n")
    return path


def read_split(path: str) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Read a split file written by :func:`write_split`.

    Returns:
        ``(splits, metadata)``: ``{split: [names...]}`` and the metadata dict.

    Raises:
        DatasetFormatError: not JSON, not an object of name lists, or a name in two splits.
    """
    try:
        with open(path, encoding="utf-8-sig") as handle:  # a BOM: the file was saved by a Windows editor
            payload = json.load(handle)
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise DatasetFormatError(f"not a JSON split file: {exc}", path, line) from None
    if not isinstance(payload, dict):
        raise DatasetFormatError('expected a JSON object {"train": [...], "test": [...]}', path)
    metadata = payload.get("metadata") or {}
    splits: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for split, value in payload.items():
        if split == "metadata":
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DatasetFormatError(f"split {split!r} must be a list of image names", path)
        for name in value:
            if name in owner:
                raise DatasetFormatError(f"image {name!r} is in both {owner[name]!r} and {split!r}", path)
            owner[name] = split
        splits[split] = list(value)
    if not splits:
        raise DatasetFormatError('no splits in file (expected {"train": [...], "test": [...]})', path)
    return splits, metadata


def check_split_list(listed: Collection[str], known: Collection[str], path: str, what: str) -> None:
    """Check the names of an official split list against the names in the label file.

    An official split is a list of names (AVA's ``generic_test.jpgl``, FLIVE's
    ``labels640.csv``); rows not in it become training rows. A listed name that matches no
    labelled image is counted in a warning; when none matches, the list cannot belong to
    these labels (another release, other name spelling) and using it would silently put
    every test image into training, so that is an error.

    Args:
        listed: the names (keys) in the split list.
        known: the names (keys, compared the same way) of the labelled images.
        path: the split list file, for messages.
        what: the dataset name, for messages.

    Raises:
        DatasetFormatError: when ``listed`` is not empty and none of its names is known.
    """
    known = set(known)
    unknown = sorted(n for n in set(listed) if n not in known)
    if not unknown or not known:  # no labels at all is reported by the builder
        return
    if len(unknown) == len(set(listed)):
        raise DatasetFormatError(
            f"none of its {len(unknown)} names is in the label file (first: {unknown[:3]}); "
            "is it the list of another release?",
            path,
        )
    logger.warning(
        "%s: %d of the %d names in %s are not in the label file and were ignored (first: %s)",
        what, len(unknown), len(set(listed)), path, ", ".join(unknown[:5]),
    )


def assign_names(
    names: Sequence[str],
    units: Sequence[Hashable],
    official: Sequence[str | None],
    scheme: str,
    seed: int,
    split_index: int,
    train_fraction: float,
    split_file: str | None = None,
    few_label: int | None = None,
    repetition: int = 0,
) -> tuple[list[str | None], dict[str, Any]]:
    """Assign a split name (or ``None`` = dropped) to every row.

    Args:
        names: the image name of each row.
        units: the split unit of each row (reference for synthetic sets, else the name).
        official: each row's official split (or ``None``), used by ``scheme="official"``.
        scheme: ``"official"``, ``"random"`` or ``"full"`` (one split ``full`` with all rows).
        split_file: read the assignment from this file instead (overrides ``scheme``).
        few_label, repetition: keep only ``few_label`` training rows.

    Returns:
        The per-row split names and a dict describing what was done (for the metadata).
    """
    info: dict[str, Any] = {"split_scheme": scheme}
    if split_file is not None:
        by_name, _ = read_split(split_file)
        lookup = {n: s for s, group in by_name.items() for n in group}
        present = set(names)
        unknown = [n for n in lookup if n not in present]
        if unknown:
            raise DatasetFormatError(
                f"{len(unknown)} image names in the split file are not in the label files "
                f"(first: {unknown[:5]}); was it written for another dataset?",
                split_file,
            )
        assigned = [lookup.get(n) for n in names]
        info = {"split_scheme": "file", "split_file": os.path.abspath(split_file)}
    elif scheme == "official":
        assigned = list(official)
    elif scheme == "random":
        train, _ = random_split(units, seed=seed, split_index=split_index, train_fraction=train_fraction)
        assigned = ["train" if u in train else "test" for u in units]
        info.update(seed=seed, split_index=split_index, train_fraction=train_fraction)
    elif scheme == "full":
        assigned = ["full"] * len(names)
    else:
        raise ValueError(f"unknown split scheme {scheme!r}")
    if few_label is not None:
        chosen = few_label_subset(
            [n for n, s in zip(names, assigned) if s == "train"],
            few_label,
            seed=seed,
            split_index=split_index,
            repetition=repetition,
        )
        assigned = [None if s == "train" and n not in chosen else s for n, s in zip(names, assigned)]
        info.update(few_label=few_label, repetition=repetition, seed=seed, split_index=split_index)
    return assigned, info
