"""argparse value types shared by the `uniqa` subcommands (one line each in `--help` errors)."""

import argparse
import os

from ..configuration_uniqa import parse_view_policy
from ..errors import OutputError
from ..scoring.options import OUTPUT_KINDS
from ..scoring.sharded_output import output_format


def view_policy_arg(value: str) -> str:
    try:
        parse_view_policy(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return value


def output_kinds_arg(value: str) -> list:
    kinds = [kind.strip() for kind in value.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(OUTPUT_KINDS))
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(OUTPUT_KINDS)} (comma-separated), got {value!r}")
    return kinds


def head_list_arg(value: str) -> list:
    heads = [name.strip() for name in value.split(",") if name.strip()]
    if not heads:
        raise argparse.ArgumentTypeError("give at least one head name")
    return list(dict.fromkeys(heads))


def at_least(minimum: int):
    def parse(value: str) -> int:
        if not value.lstrip("-").isdigit() or int(value) < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value!r}")
        return int(value)

    return parse


def output_path_arg(value: str) -> str:
    extension = os.path.splitext(value)[1].lower()
    if extension and extension != ".parquet" and not os.path.isdir(value):  # .parquet: --dataset; a folder: tar shards
        try:
            output_format(value)
        except OutputError as error:
            raise argparse.ArgumentTypeError(f"{error} (.parquet with --dataset; a folder for tar shards)") from error
    return os.path.abspath(value)
