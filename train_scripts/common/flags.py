"""The command lines of the scripts under `train_scripts/`: options declared once, as dataclass
fields, and the one convention for boolean flags.

A script's options are dataclass fields (`help` and, where the type does not say it, `choices`
in the field's metadata), parsed by `ArgumentParser`, a `transformers.HfArgumentParser` (as
`run_clip.py` does) that keeps this project's conventions:

- A boolean setting `name` is turned on by `--name` and off by `--no_name` (underscores, like
  every other option of these scripts, and the spelling the README documents); `--no-name`,
  argparse's own `BooleanOptionalAction` spelling, is accepted too. Both forms exist for every
  boolean flag, whatever its default, so a default can change without breaking a command line
  that states the setting explicitly. (`HfArgumentParser` alone takes `--name true` and gives
  `--no_name` only to booleans that default to true.) `metadata={"off_help": ...}` is the help of
  the `--no_name` form.
- `metadata={"action": "append"}` makes a repeatable flag (`--corpus a=1 --corpus b=2`, a list),
  and `metadata={"type": function}` parses the value with `function` (a `KEY=VALUE` pair, a
  comma-separated list): both are passed to `argparse` as they are.
- A dataclass can be made of groups by inheritance (shared groups live in `train_scripts/common`);
  a base class with an `_argument_group_name` gets its own section in `--help`.
- A group with checks subclasses `OptionGroup` and ends its `__post_init__` with
  `super().__post_init__()`, so a script made of several such groups runs every group's checks
  (a dataclass calls only the most derived `__post_init__`).
- Every error is argparse's: usage, one line, exit code 2, for an unknown flag too (where
  `HfArgumentParser.parse_args_into_dataclasses` raises `ValueError`), and for a `ValueError`
  of the dataclass's `__post_init__` (its validation).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import typing
from typing import get_type_hints

from transformers import HfArgumentParser

_BOOLEAN_TYPES = (bool, typing.Optional[bool])  # noqa: UP045  (what get_type_hints gives for `bool | None`)


def add_flag(parser, name: str, default: bool | None = False, help: str | None = None, off_help: str | None = None,
             dashed: bool = False) -> None:
    """Add `--name` (sets `name` True) and `--no_name` / `--no-name` (sets it False) to `parser`
    (an `ArgumentParser` or an argument group). `default` is the value when neither is given
    (`None`: "decided later", e.g. by the mode). `dashed`: also `--na-me` / `--no-na-me`, the
    aliases `HfArgumentParser` gives every other option."""
    if name.startswith("-") or "-" in name:
        raise ValueError(f"add_flag takes the bare underscore name, got {name!r}.")
    alias = name.replace("_", "-")
    on = [f"--{name}"] + ([f"--{alias}"] if dashed and alias != name else [])
    off = [f"--no_{name}", f"--no-{name}"] + ([f"--no-{alias}"] if dashed and alias != name else [])
    parser.add_argument(*on, dest=name, action="store_true", default=default, help=help)
    parser.add_argument(*off, dest=name, action="store_false", default=default,
                        help=off_help or f"Turn --{name} off{' (the default)' if default is False else ''}.")


class OptionGroup:
    """Base of the option dataclasses with checks: the end of the cooperative `__post_init__` chain
    (see the module docstring)."""

    def __post_init__(self) -> None:
        pass


def check_positive(options, *names: str) -> None:
    """`ValueError("--name must be >= 1, got N")` for the first of the fields `names` of `options`
    that is set (not None) and below 1."""
    for name in names:
        value = getattr(options, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")


def _field_default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The docstring's layout kept, and an option's default shown (written once, in its field)
    when it has one worth saying: not None, not a boolean flag's, not one its help already states."""

    def _format_action_invocation(self, action):
        """`--name NAME` once: the underscore spellings only (plus `--no-name`), not the dashed aliases."""
        if not action.option_strings or action.nargs == 0 and len(action.option_strings) == 1:
            return super()._format_action_invocation(action)
        shown = [option for option in action.option_strings if "-" not in option[2:] or option == f"--no-{action.dest}"] or action.option_strings
        if action.nargs == 0:
            return ", ".join(shown)
        return ", ".join(shown) + " " + self._format_args(action, self._get_default_metavar_for_optional(action))

    def _get_help_string(self, action):
        help = action.help or ""
        if (action.option_strings and not action.required and action.default not in (None, False, [], argparse.SUPPRESS)
                and not isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
                and "%(default)" not in help and "default" not in help.lower()):
            help += (" " if help else "") + "(default: %(default)s)"
        return help


class ArgumentParser(HfArgumentParser):
    """`HfArgumentParser` with the project's flag conventions (see the module docstring).
    `parse(argv)` returns the dataclass instance(s)."""

    def __init__(self, dataclass_types, description: str | None = None, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(dataclass_types, description=description, **kwargs)

    def _add_dataclass_arguments(self, dtype) -> None:
        """Each field once, in the section of the (base) class that declares it."""
        hints = get_type_hints(dtype)
        fields = [field for field in dataclasses.fields(dtype) if field.init]
        for base in [dtype, *reversed(dtype.__mro__[1:])]:  # the script's own fields first, then its groups
            declared = base.__dict__.get("__annotations__", {})
            own = [field for field in fields if field.name in declared]
            if not own:
                continue
            fields = [field for field in fields if field.name not in declared]
            group_name = base.__dict__.get("_argument_group_name")
            parser = self.add_argument_group(group_name) if group_name else self
            for field in own:
                field.type = hints[field.name]
                self._parse_dataclass_field(parser, field)

    @staticmethod
    def _parse_dataclass_field(parser, field: dataclasses.Field) -> None:
        metadata = dict(field.metadata)
        off_help = metadata.pop("off_help", None)
        default = _field_default(field)
        if field.type in _BOOLEAN_TYPES:
            add_flag(parser, field.name, default=False if default is dataclasses.MISSING else default,
                     help=metadata.get("help"), off_help=off_help, dashed=True)
        elif "action" in metadata or "type" in metadata:  # repeatable, or parsed by its own function
            options = [f"--{field.name}"] + ([f"--{field.name.replace('_', '-')}"] if "_" in field.name else [])
            if default is dataclasses.MISSING:
                metadata.setdefault("required", True)
            else:
                metadata["default"] = default
            parser.add_argument(*options, dest=field.name, **metadata)
        else:
            field = copy.copy(field)
            field.metadata = metadata
            HfArgumentParser._parse_dataclass_field(parser, field)

    def parse(self, argv=None):
        """Parse `argv` (default: `sys.argv[1:]`) into an instance of each dataclass: one
        instance for one dataclass, else a tuple. Errors exit with argparse's one line."""
        namespace = self.parse_args(argv)
        values = vars(namespace)
        outputs = []
        for dtype in self.dataclass_types:
            names = {field.name for field in dataclasses.fields(dtype) if field.init}
            try:
                outputs.append(dtype(**{name: value for name, value in values.items() if name in names}))
            except ValueError as error:
                self.error(str(error))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


__all__ = ["ArgumentParser", "OptionGroup", "add_flag", "check_positive"]
