"""`--dataset_option KEY=VALUE`: builder options of `data_builders.load` on the command line, one
flag for every script that builds a rating dataset (fine-tuning, evaluation, captioning)."""

from __future__ import annotations

import argparse
import json


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


def add_dataset_option_argument(parser) -> None:
    """Add the repeatable `--dataset_option` flag (parsed into a list of `(key, value)`: `dict()` it)."""
    parser.add_argument("--dataset_option", type=dataset_option, action="append", default=[], metavar="KEY=VALUE",
                        help="Builder option, e.g. mos_range=[1,10] or label_file=scores.csv for folder_csv (repeatable).")


__all__ = ["add_dataset_option_argument", "dataset_option"]
