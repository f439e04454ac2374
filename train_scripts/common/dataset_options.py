"""The rating dataset of a script's command line, one definition for every script that builds one
(fine-tuning, evaluation, captioning): `--dataset_option KEY=VALUE` (builder options of
`data_builders.load`) and `RatingDataArguments`, the dataset group of the dataclass scripts."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

import data_builders


def dataset_option(value: str) -> tuple:
    """`KEY=VALUE` -> `(key, value)`, the value read as JSON when it is JSON (`[1,10]`, `5`,
    `true`), else kept as text."""
    key, sep, raw = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


# The flag's argparse settings: a repeatable KEY=VALUE, parsed into a list of `(key, value)` (`dict()` it).
DATASET_OPTION = {"type": dataset_option, "action": "append", "metavar": "KEY=VALUE",
                  "help": "Builder option, e.g. mos_range=[1,10] or label_file=scores.csv for folder_csv (repeatable)."}


@dataclass(kw_only=True)
class DatasetCacheArguments:
    """Where `datasets` caches what a script builds with `data_builders.load`."""

    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder (default: the datasets cache)."})


@dataclass(kw_only=True)
class RatingDataArguments(DatasetCacheArguments):
    """The rating dataset a fine-tuning or evaluation script builds (`data_builders.load`)."""

    _argument_group_name = "dataset"

    dataset: str = field(metadata={"help": f"data_builders name: {', '.join(data_builders.available())}."})
    data_dir: str = field(metadata={"help": "The dataset's folder."})
    dataset_option: list[tuple] = field(default_factory=list, metadata=DATASET_OPTION)
    split_seed: int = field(default=123, metadata={
        "help": "Seed of the random 80/20 splits and few-label draws (123 as in the release). Independent of --seed, "
        "so changing the training seed never moves test images into training."})

    @property
    def dataset_options(self) -> dict:
        """`--dataset_option` as a dict."""
        return dict(self.dataset_option)


__all__ = ["DATASET_OPTION", "DatasetCacheArguments", "RatingDataArguments", "dataset_option"]
