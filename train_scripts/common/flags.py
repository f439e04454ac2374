"""The one convention for boolean command-line flags in every script under `train_scripts/`.

A boolean setting `name` is turned on by `--name` and off by `--no_name` (underscores, like every
other option of these scripts, and the spelling the README documents); `--no-name`, argparse's own
`BooleanOptionalAction` spelling, is accepted too. Both forms exist for every boolean flag, so a
default can change without breaking a command line that states the setting explicitly.
"""

from __future__ import annotations


def add_flag(parser, name: str, default: bool | None = False, help: str | None = None, off_help: str | None = None) -> None:
    """Add `--name` (sets `name` True) and `--no_name` / `--no-name` (sets it False) to `parser`
    (an `ArgumentParser` or an argument group). `default` is the value when neither is given
    (`None`: "decided later", e.g. by the mode)."""
    if name.startswith("-") or "-" in name:
        raise ValueError(f"add_flag takes the bare underscore name, got {name!r}.")
    parser.add_argument(f"--{name}", dest=name, action="store_true", default=default, help=help)
    parser.add_argument(f"--no_{name}", f"--no-{name}", dest=name, action="store_false", default=default,
                        help=off_help or f"Turn --{name} off{' (the default)' if default is False else ''}.")
