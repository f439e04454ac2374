"""Exceptions raised by the data builders.

Every error says which file is at fault and, where it applies, the line (text and CSV
files, 1-based) or row (spreadsheets, the row number Excel shows) and what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modeling_uniqa.errors import UniQAError

__all__ = ["DatasetFormatError", "MissingLabelFileError", "MissingImageError", "UnknownDatasetError", "row_position"]


def row_position(row: Mapping[str, Any], source: str) -> str:
    """Where a parsed row came from: ``line 12``, or ``line 12 of <file>`` when the row
    was read from another file than ``source`` (builders with one label file per split
    record the file in ``_source``)."""
    line = f"line {row.get('_line')}"
    path = row.get("_source")
    return line if path is None or path == source else f"{line} of {path}"


class UnknownDatasetError(UniQAError, ValueError):
    """A dataset or corpus name that no builder has (the message lists the names there are)."""


class DatasetFormatError(UniQAError, ValueError):
    """A label or caption file does not have the layout the builder expects.

    Attributes:
        path: the offending file (``None`` when the problem is not tied to one file).
        line: 1-based line (or spreadsheet row) number, or ``None``.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.detail = message
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}, line {line}"
            where += ": "
        super().__init__(where + message)


class MissingLabelFileError(DatasetFormatError, FileNotFoundError):
    """None of the label files a builder accepts was found.

    Attributes:
        expected: the full paths that were looked for (any one of them would do).
    """

    def __init__(self, what: str, expected: Sequence[str], data_dir: str, hint: str = ""):
        self.expected = [os.fspath(p) for p in expected]
        listing = "\n".join(f"  - {p}" for p in self.expected)
        message = (
            f"{what}: label file not found under {data_dir!r}. Expected one of:\n{listing}"
            + (f"\n{hint}" if hint else "")
        )
        super().__init__(message)


class MissingImageError(DatasetFormatError, FileNotFoundError):
    """Images listed in a label file are missing (raised only with ``strict=True``).

    Attributes:
        missing: the image names that were not found.
    """

    def __init__(self, message: str, missing: Iterable[str] = ()):
        self.missing = list(missing)
        super().__init__(message)
