"""Tolerant readers for the label files as they are distributed.

Each reader keeps the position of every value (line of a text/CSV file, row of a
spreadsheet) so that a bad value can be reported as ``<file>, line <n>: <what was
expected>``. Header names are compared after :func:`norm_header` (lower case, runs of
anything but letters and digits turned into ``_``), so ``"Image name"``, ``image_name``
and ``"IMAGE_NAME"`` are the same column, and quoting or extra columns do not matter.

Every text file is read through :func:`text_lines`: UTF-8 with or without a byte-order
mark, any line ending (``\n``, ``\r\n``, ``\r``), and lines that are not valid UTF-8
(the web comments of AVA, spreadsheets saved on Windows) decoded as Windows-1252 with a
warning giving their count, so no character is silently replaced.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .errors import DatasetFormatError

logger = logging.getLogger(__name__)

__all__ = [
    "Table",
    "norm_header",
    "read_csv",
    "read_xlsx",
    "read_tokens",
    "load_mat",
    "mat_strings",
    "mat_numbers",
    "parse_float",
    "parse_int",
    "read_pairs",
    "table_rows",
    "text_lines",
]

Row = tuple[int, list[str]]


def _redecode(line: str) -> str | None:
    """``None`` for a line that was valid UTF-8, else its Windows-1252 reading.

    Lines come decoded with ``errors="surrogateescape"``, so undecodable bytes are lone
    surrogates, which cannot be encoded back as UTF-8.
    """
    if line.isascii():
        return None
    try:
        line.encode("utf-8")
        return None
    except UnicodeEncodeError:
        raw = line.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:  # the five bytes cp1252 leaves undefined
        return raw.decode("latin-1")


def text_lines(path: str) -> Iterator[str]:
    r"""Yield the lines of a text file, each ending in ``"\n"`` (the last may not).

    Decodes UTF-8 (a leading byte-order mark is dropped); a line that is not UTF-8 is
    decoded as Windows-1252 (a superset of printable Latin-1), and a warning gives the
    number of such lines once the file has been read. ``\r\n`` and lone ``\r`` end a line
    as ``\n`` does, so line numbers are the ones an editor shows.
    """
    fallback: list[int] = []
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            other = _redecode(line)
            if other is not None:
                fallback.append(number)
                line = other
            yield line
    if fallback:
        shown = ", ".join(map(str, fallback[:5])) + (", ..." if len(fallback) > 5 else "")
        logger.warning("%s: %d lines are not UTF-8 and were read as Windows-1252 (lines %s)", path, len(fallback), shown)


def norm_header(name: Any) -> str:
    """Normalise a column header: ``"Image name"`` -> ``"image_name"``."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


def parse_float(text: str, path: str, line: int, what: str) -> float:
    """Parse a finite float or raise :class:`DatasetFormatError` naming file, line and field.

    ``nan``, ``inf`` and overflowing values such as ``1e999`` are errors: no label value is
    infinite, and one would only turn into a NaN or clipped score downstream.
    """
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise DatasetFormatError(f"expected a number for {what}, got {text!r}", path, line) from None
    if math.isnan(value):
        raise DatasetFormatError(f"expected a number for {what}, got NaN", path, line)
    if math.isinf(value):
        raise DatasetFormatError(f"expected a finite number for {what}, got {text!r}", path, line)
    return value


def parse_int(text: str, path: str, line: int, what: str) -> int:
    """Parse an integer (``"3"`` or ``"3.0"``) or raise :class:`DatasetFormatError`."""
    value = parse_float(text, path, line, what)
    if not value.is_integer():
        raise DatasetFormatError(f"expected an integer for {what}, got {text!r}", path, line)
    return int(value)


class Table:
    """A header plus numbered rows of string cells, read from a CSV or spreadsheet.

    Attributes:
        path: the file the table came from.
        header: the raw header cells.
        header_line: line/row number of the header.
        rows: ``(line_number, cells)`` pairs; cells are stripped strings ("" when empty).
    """

    def __init__(self, path: str, header: Sequence[str], header_line: int, rows: list[Row]):
        self.path = path
        self.header = [str(h) for h in header]
        self.header_line = header_line
        self.rows = rows
        self._positions = {}
        for i, name in enumerate(self.header):
            self._positions.setdefault(norm_header(name), i)

    def has(self, *aliases: str) -> bool:
        """Whether any of the column names is present."""
        return any(norm_header(a) in self._positions for a in aliases)

    def column(self, *aliases: str, required: bool = True) -> int | None:
        """Index of the first column matching one of ``aliases`` (normalised names).

        Raises:
            DatasetFormatError: when ``required`` and none is present; the message lists the
                accepted names and the header that was found.
        """
        for alias in aliases:
            index = self._positions.get(norm_header(alias))
            if index is not None:
                return index
        if not required:
            return None
        accepted = " or ".join(repr(a) for a in aliases)
        raise DatasetFormatError(
            f"expected a column {accepted} in the header, found {self.header}", self.path, self.header_line
        )

    def cell(
        self,
        row: Row,
        index: int | None,
        convert: Callable[[str, str, int, str], Any] = None,
        required: bool = True,
    ) -> Any:
        """The value of column ``index`` in ``row``, converted with ``convert``.

        An empty or absent cell gives ``None`` when not ``required`` and an error otherwise.
        ``convert`` is called as ``convert(text, path, line, column_name)``
        (:func:`parse_float`, :func:`parse_int`); strings are returned as they are.
        """
        line, cells = row
        if index is None:
            return None
        text = cells[index] if index < len(cells) else ""
        name = self.header[index]
        if text == "":
            if required:
                raise DatasetFormatError(f"empty value in column {name!r}", self.path, line)
            return None
        return convert(text, self.path, line, f"column {name!r}") if convert else text


def table_rows(
    table: Table,
    name: Sequence[str],
    mos: Sequence[str],
    std: Sequence[str] = (),
    extras: dict[str, tuple[Sequence[str], Any]] | None = None,
) -> list[dict[str, Any]]:
    """Rating rows from a table with image-name and MOS columns.

    Args:
        table: the parsed CSV or spreadsheet.
        name, mos: accepted names of the image-name and MOS columns (required).
        std: accepted names of an optional standard-deviation column (gives ``std``).
        extras: ``{output column: (accepted names, converter)}`` for optional columns;
            the converter is :func:`parse_float`, :func:`parse_int` or ``None`` (keep the
            text). Empty cells and absent columns give ``None``.

    Returns:
        One dict per table row: ``image_name``, ``mos``, ``_line`` (the row's line), and
        ``std`` and the extras where asked for.
    """
    name_at, mos_at = table.column(*name), table.column(*mos)
    std_at = table.column(*std, required=False) if std else None
    extra_at = {key: (table.column(*aliases, required=False), convert) for key, (aliases, convert) in (extras or {}).items()}
    rows = []
    for entry in table.rows:
        row = {"image_name": table.cell(entry, name_at), "mos": table.cell(entry, mos_at, parse_float), "_line": entry[0]}
        if std:
            row["std"] = table.cell(entry, std_at, parse_float, required=False)
        for key, (index, convert) in extra_at.items():
            row[key] = table.cell(entry, index, convert, required=False)
        rows.append(row)
    return rows


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # spreadsheets hold names such as 1600 as numbers
    return str(value).strip()


def read_csv(path: str, delimiter: str | None = None) -> Table:
    """Read a delimited text file with a header line.

    Args:
        path: the file.
        delimiter: the field separator; by default sniffed among ``,`` ``;`` and tab
            (``,`` when unsure).
    """
    lines = list(text_lines(path))  # label CSVs are small (FLIVE's 39,810 rows are 1.5 MB)
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff("".join(lines[:200])[:8192], delimiters=",;\t").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.reader(lines, delimiter=delimiter)
    header: list[str] | None = None
    header_line = 0
    rows: list[Row] = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header, header_line = [c.strip() for c in cells], reader.line_num
            else:
                rows.append((reader.line_num, [c.strip() for c in cells]))
    except csv.Error as exc:
        raise DatasetFormatError(f"unreadable CSV: {exc}", path, reader.line_num) from None
    if header is None:
        raise DatasetFormatError("the file is empty (expected a header line)", path)
    return Table(path, header, header_line, rows)


def read_xlsx(path: str, required: Sequence[str], sheet: str | None = None, scan_rows: int = 50) -> Table:
    """Read a table from an ``.xlsx`` workbook whose header may not start at A1.

    The header is the first row (among the first ``scan_rows``) that contains every name in
    ``required`` (normalised); the table starts at the header's first non-empty column, so
    CSIQ's layout (header on row 4 from column D) and SPAQ's (row 1 from A) both work.

    Args:
        path: the workbook.
        required: column names that identify the header row.
        sheet: preferred sheet name (case-insensitive); the first sheet when ``None`` or
            when the workbook has no sheet of that name.
        scan_rows: how many leading rows to search for the header.
    """
    try:
        import openpyxl
    except ImportError as exc:  # pragma: no cover - openpyxl is a declared dependency
        raise ImportError("reading .xlsx label files needs openpyxl (pip install openpyxl)") from exc
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:
        raise DatasetFormatError(f"cannot open as an .xlsx workbook: {exc}", path) from None
    try:
        names = {n.lower(): n for n in workbook.sheetnames}
        if sheet is not None and sheet.lower() in names:
            worksheet = workbook[names[sheet.lower()]]
        else:
            worksheet = workbook.worksheets[0]
        wanted = {norm_header(r) for r in required}
        header: list[str] | None = None
        header_row, first_col = 0, 0
        rows: list[Row] = []
        for number, values in enumerate(worksheet.iter_rows(values_only=True), start=1):
            cells = [_cell_text(v) for v in values]
            if header is None:
                if wanted <= {norm_header(c) for c in cells if c}:
                    first_col = next(i for i, c in enumerate(cells) if c)
                    header, header_row = cells[first_col:], number
                elif number >= scan_rows:
                    break
            elif any(cells[first_col:]):
                rows.append((number, cells[first_col:]))
    finally:
        workbook.close()
    if header is None:
        raise DatasetFormatError(
            f"no header row with the columns {sorted(required)} in the first {scan_rows} rows "
            f"of sheet {worksheet.title!r}",
            path,
        )
    return Table(path, header, header_row, rows)


def read_tokens(path: str, separator: str | None = None) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for each non-blank line of a text file.

    Fields are split on whitespace by default, or on ``separator``.
    """
    for number, line in enumerate(text_lines(path), start=1):
        fields = line.split(separator) if separator else line.split()
        if separator:
            if not line.strip():
                continue
            fields[-1] = fields[-1].rstrip("\r\n")
        elif not fields:
            continue
        yield number, fields


def read_pairs(path: str, name_field: int = 0, value_field: int = 1) -> list[tuple[int, str, float]]:
    """Read ``<name> <number>`` lines (fields in any order) as ``(line, name, value)``."""
    pairs = []
    need = max(name_field, value_field) + 1
    for line, fields in read_tokens(path):
        if len(fields) < need:
            raise DatasetFormatError(f"expected at least {need} whitespace-separated fields, got {fields}", path, line)
        pairs.append((line, fields[name_field], parse_float(fields[value_field], path, line, "the score")))
    return pairs


def load_mat(path: str, *variables: Sequence[str]) -> list[np.ndarray]:
    """Load variables from a MATLAB ``.mat`` file (v4-v7.2, as scipy reads them).

    Each item of ``variables`` is a list of accepted names (matched case-insensitively);
    the arrays are returned in the same order.
    """
    import scipy.io

    try:
        contents = scipy.io.loadmat(path)
    except NotImplementedError:
        raise DatasetFormatError(
            "MATLAB v7.3 (HDF5) files are not supported; re-save it with save(..., '-v7')", path
        ) from None
    except Exception as exc:
        raise DatasetFormatError(f"cannot read as a MATLAB .mat file: {exc}", path) from None
    found = {k.lower(): k for k in contents if not k.startswith("__")}
    arrays = []
    for names in variables:
        key = next((found[n.lower()] for n in names if n.lower() in found), None)
        if key is None:
            raise DatasetFormatError(
                f"expected a variable {' or '.join(map(repr, names))}, found {sorted(found.values())}", path
            )
        arrays.append(contents[key])
    return arrays


def mat_strings(array: Any) -> list[str]:
    """Flatten a MATLAB cell array (or char matrix) of strings into a list of str."""
    if isinstance(array, str):
        return [array.strip()]
    array = np.asarray(array)
    if array.dtype.kind in "US":
        return [str(x).strip() for x in array.ravel()]
    out = []
    for item in array.ravel():
        parts = mat_strings(item)
        out.append("".join(parts))
    return out


def mat_numbers(array: Any) -> np.ndarray:
    """Flatten a MATLAB numeric array into a 1-D float array."""
    return np.asarray(array, dtype=np.float64).ravel()
