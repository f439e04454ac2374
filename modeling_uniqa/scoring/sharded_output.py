"""Resumable, per-process result files merged into one canonical CSV or JSONL output.

Every long job that writes one row per input (`uniqa score`, captioning, AIR purification,
evaluation) writes through this module, so a crash loses at most the rows in flight, a resumed
run never mixes results of two different producers, and a file that is not ours is never
replaced by accident.

Files, for an output `scores.csv`:

- `scores.csv`: the canonical output, one row per key, in input order. Only ever replaced
  atomically (`atomic_files.atomic_write_text`), so it is always complete.
- `scores.csv.part<rank>`: the rows of a run in progress, one file per process, appended and
  flushed after every batch. A line cut short by a crash is ignored (and cut off before the
  next append).
- `scores.csv.meta.json`: the sidecar. `fingerprint` records what produced the canonical file
  (any JSON-able dict the caller passes: model fingerprint, view policy, prompts, columns...),
  `in_progress` what produces the part files, and whether they extend the canonical file (a
  resumed run) or will replace it (a fresh run). A file with this sidecar is "ours".

Typical use (`rank`, `world` and `barrier` from accelerate's `PartialState`)::

    output = ShardedOutput("scores.csv", columns=["path", "score", "error"], key_columns=["path"],
                           fingerprint={"model": ..., "columns": [...]}, is_done=lambda row: not row["error"],
                           parse_csv_row=my_parser)
    output.check(resume=args.resume, overwrite=args.overwrite)  # every process; raises OutputError
    barrier()
    if rank == 0:
        output.start(resume=args.resume)                       # clear stale parts, mark the run
    barrier()
    done = output.done_keys()                                   # with resume: keys already done
    barrier()                                                   # all have read before anyone writes
    todo = [key for key in keys if key not in done][rank::world]
    with output.part_writer(rank) as writer:
        for batch in batches(todo):
            writer.write(rows_of(batch))                       # appended + flushed
    barrier()
    if rank == 0:
        result = output.finish(keys)                           # merge, order, atomic rewrite

Rules:

- Rows are dicts with exactly `columns`. The key of a row is `row[key_columns[0]]`, or the tuple
  of its `key_columns` values when there are several (e.g. `("image", "caption_index")`).
- Merging: a later row of a key replaces an earlier one, except that a row that is not done
  (`is_done(row)` false, e.g. an error row) never replaces a done one.
- `finish(keys)` writes the rows of `keys` in that order, then (resumed runs only) the rows of
  keys no longer listed, in their earlier order: a resume never drops earlier results. A fresh
  run (no resume) writes the rows of its keys only.
- A fresh run that produced no done row leaves an existing output holding done rows untouched:
  earlier good results are never replaced by a run in which everything failed.
- `check(resume, overwrite)` refuses (`OutputError`): an existing output or part files without
  our sidecar, unless `overwrite` (and never for `resume`); a `resume` whose fingerprint differs
  from the recorded one (the message lists the differing fields).
- Text is UTF-8 with `errors="surrogateescape"`: strings that came from file names holding bytes
  that are not UTF-8 (Python decodes them to lone surrogates) are written as those very bytes,
  so names round-trip losslessly and resumes match them. JSONL is written with
  `ensure_ascii=False` for the same rule. CSV values are strings: pass `parse_csv_row` to type
  them (a row it rejects with `ValueError` is treated as absent).
- Files are created with mode 0666 minus the umask, like any file the user creates.
"""

import csv
import glob
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field

from ..core.atomic_files import atomic_write_text
from ..errors import OutputError  # noqa: F401  (raised here; importable from here too)

logger = logging.getLogger(__name__)

ENCODING, ERRORS = "utf-8", "surrogateescape"
FORMATS = (".csv", ".jsonl")
META_FORMAT = "uniqa-sharded-output/1"


def output_format(path: str) -> str:
    """`"csv"` or `"jsonl"` from the file name; `OutputError` for anything else."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in FORMATS:
        raise OutputError(f"{path}: the output must end in {' or '.join(FORMATS)}.")
    return extension[1:]


def meta_path(output: str) -> str:
    return output + ".meta.json"


def part_path(output: str, process_index: int) -> str:
    return f"{output}.part{process_index}"


def part_files(output: str) -> list:
    """The per-process files `<output>.part<rank>` present now (of this run or a crashed one)."""
    pattern = re.compile(re.escape(os.path.basename(output)) + r"\.part\d+$")
    return sorted(path for path in glob.glob(glob.escape(output) + ".part*") if pattern.match(os.path.basename(path)))


def check_writable(output: str) -> None:
    """Fail early (`OutputError`) when `output` cannot be written: its folder is created if missing
    and a probe file is created and removed there. Call it before any costly work."""
    folder = os.path.dirname(os.path.abspath(output))
    try:
        os.makedirs(folder, exist_ok=True)
        if os.path.isdir(output):
            raise OutputError(f"{output}: is a folder, not a file.")
        probe = os.path.join(folder, f".probe-{os.getpid()}-{os.path.basename(output)}")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.remove(probe)
        if os.path.exists(output) and not os.access(output, os.W_OK):
            raise PermissionError(f"{output} is read-only")
    except OSError as error:
        raise OutputError(f"{output}: cannot write the output there ({type(error).__name__}: {error}).") from error


def write_atomic(path: str, text: str) -> None:
    """Replace `path` by `text` atomically, in this module's encoding: a crash leaves the old
    file or the new one, never half."""
    atomic_write_text(path, text, encoding=ENCODING, errors=ERRORS, newline="")


def read_meta(output: str) -> dict | None:
    """The sidecar of `output` if it is ours, else `None`."""
    try:
        with open(meta_path(output), encoding=ENCODING, errors=ERRORS) as handle:
            meta = json.load(handle)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == META_FORMAT else None


def _short(value, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_difference(recorded: dict, current: dict) -> str:
    """`field: was X, now Y; ...` for the fields where two fingerprints differ (long values cut)."""
    fields = sorted(set(recorded) | set(current))
    return "; ".join(
        f"{name}: was {_short(recorded.get(name))}, now {_short(current.get(name))}" for name in fields if recorded.get(name) != current.get(name)
    )


@dataclass
class MergeResult:
    """What `finish` did. `rows`: the rows of the listed keys, in order (of this run and earlier
    ones). `unlisted`: rows kept from an earlier run for keys not listed now (resumes only).
    `kept_previous`: the run produced no done row and the earlier output was left as it was."""

    rows: list
    unlisted: list = field(default_factory=list)
    kept_previous: bool = False


class PartWriter:
    """Appends rows to one process's part file and flushes after every `write`."""

    def __init__(self, path: str, columns: list, csv_format: bool):
        self.columns, self.csv_format = columns, csv_format
        _cut_partial_line(path)
        self.handle = open(path, "a", encoding=ENCODING, errors=ERRORS, newline="")  # noqa: SIM115 (kept open across batches)
        self.needs_header = csv_format and self.handle.tell() == 0

    def write(self, rows: list) -> None:
        self.handle.write(format_rows(rows, self.columns, self.csv_format, header=self.needs_header))
        self.handle.flush()
        self.needs_header = False

    def close(self) -> None:
        self.handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _cut_partial_line(path: str) -> None:
    """Drop a last line cut short by a crash, so the next append starts on a fresh line."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def format_rows(rows: list, columns: list, csv_format: bool, header: bool = False) -> str:
    if not csv_format:
        return "".join(json.dumps({column: row[column] for column in columns}, ensure_ascii=False) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class ShardedOutput:
    """One canonical output file with its part files and sidecar; see the module docstring.

    Args:
        output: the canonical file, `.csv` or `.jsonl`.
        columns: the columns of every row, in file order.
        key_columns: the column(s) whose values identify a row.
        fingerprint: what produces the rows (JSON-able dict); a resume must match it.
        is_done: `row -> bool`, whether a row is final (default: every row); rows that are not
            done are produced again by a resume and never replace done ones.
        parse_csv_row: `dict of str -> row` for CSV files (e.g. numbers from strings, `""` to
            `None`); raise `ValueError` to treat a row as absent. Default: the strings as read.
        added_columns: `{column: value}` for columns a newer version added: a JSONL row written
            before lacks them and is read with these values, so a resume keeps it.
    """

    def __init__(self, output: str, columns: list, key_columns: list, fingerprint: dict, is_done=None, parse_csv_row=None,
                 added_columns: dict | None = None):
        self.output = os.path.abspath(output)
        self.csv_format = output_format(output) == "csv"
        self.columns, self.key_columns = list(columns), list(key_columns)
        missing = [name for name in self.key_columns if name not in self.columns]
        if not self.key_columns or missing:
            raise ValueError(f"key_columns {self.key_columns} must be among the columns {self.columns}.")
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from the sidecar
        self.is_done = is_done or (lambda row: True)
        self.parse_csv_row = parse_csv_row or (lambda row: row)
        self.added_columns = dict(added_columns or {})

    def __str__(self) -> str:
        return self.output  # log lines and messages name the file, not the object

    def key(self, row: dict):
        values = [tuple(value) if isinstance(value, list) else value for value in (row[name] for name in self.key_columns)]
        return values[0] if len(values) == 1 else tuple(values)

    # ----------------------------------------------------------------------------------------
    # Before the run
    # ----------------------------------------------------------------------------------------
    def check(self, resume: bool, overwrite: bool = False) -> None:
        """Refuse, with `OutputError`, a run that would replace a file that is not ours (unless
        `overwrite`) or resume results of another producer. Reads only: every process may call it."""
        meta, parts = read_meta(self.output), part_files(self.output)
        existing = [path for path in [self.output, *parts] if os.path.exists(path)]
        if meta is None and existing:
            names = ", ".join(existing)
            if resume:
                raise OutputError(
                    f"cannot resume {self.output}: there is no {os.path.basename(meta_path(self.output))} recording what "
                    f"produced {names}. Score into another output, or drop --resume and pass --overwrite to replace it."
                )
            if not overwrite:
                raise OutputError(
                    f"{names} exists and was not written by this tool (no {os.path.basename(meta_path(self.output))} beside it): "
                    "pass --overwrite to replace it, or choose another output."
                )
        if not resume or meta is None:
            return
        progress = meta.get("in_progress")
        recorded = []
        if progress is not None:
            recorded.append(("the unfinished run that wrote " + ", ".join(parts or ["no part file yet"]), progress.get("fingerprint")))
        if os.path.exists(self.output) and (progress is None or progress.get("extends_output")):
            recorded.append(("it", meta.get("fingerprint")))
        for what, fingerprint in recorded:
            if fingerprint != self.fingerprint:
                raise OutputError(
                    f"cannot resume {self.output}: {what} was produced differently ({describe_difference(fingerprint or {}, self.fingerprint)}). "
                    "Use the same settings, another output, or drop --resume to replace it."
                )

    def start(self, resume: bool) -> None:
        """Main process only, after `check` and before any part is written: a fresh run deletes
        stale part files (the canonical output stays until `finish`); both record the run in the
        sidecar."""
        meta = read_meta(self.output) or {"format": META_FORMAT, "fingerprint": None}
        progress = meta.get("in_progress") if resume else None
        if progress is None:
            for stale in part_files(self.output):
                # With `resume` and no run in progress these rows are in the output already.
                os.remove(stale)
            progress = {"fingerprint": self.fingerprint, "extends_output": bool(resume and os.path.exists(self.output))}
        self._write_meta(meta | {"in_progress": progress})

    def done_keys(self) -> set:
        """Keys whose row is done, in the output (when the run extends it) and the part files."""
        return {key for key, row in self._current_rows()[0].items() if self.is_done(row)}

    def part_writer(self, process_index: int) -> PartWriter:
        return PartWriter(part_path(self.output, process_index), self.columns, self.csv_format)

    # ----------------------------------------------------------------------------------------
    # After the run
    # ----------------------------------------------------------------------------------------
    def finish(self, keys: list) -> MergeResult:
        """Main process only, once every writer is closed: merge the earlier output (resumed
        runs) and the part files into the canonical output, rows of `keys` in that order,
        rewrite it atomically, record the fingerprint and delete the part files."""
        rows, base_order = self._current_rows()
        listed = set(keys)
        ordered = [rows[key] for key in keys if key in rows]
        unlisted = [rows[key] for key in base_order if key not in listed]
        meta = read_meta(self.output) or {"format": META_FORMAT}
        fresh_run = not (meta.get("in_progress") or {}).get("extends_output")
        result = MergeResult(ordered, unlisted)
        if fresh_run and not any(self.is_done(row) for row in ordered) and self._holds_done_rows(meta):
            logger.warning("No row of this run is done: %s keeps its earlier results.", self.output)
            result.kept_previous = True
        if not result.kept_previous:
            write_atomic(self.output, format_rows(ordered + unlisted, self.columns, self.csv_format, header=True))
            meta["fingerprint"] = self.fingerprint
        meta["in_progress"] = None
        self._write_meta(meta)
        for part in part_files(self.output):
            os.remove(part)
        return result

    # ----------------------------------------------------------------------------------------
    # Reading
    # ----------------------------------------------------------------------------------------
    def _write_meta(self, meta: dict) -> None:
        write_atomic(meta_path(self.output), json.dumps(meta, indent=1, ensure_ascii=False) + "\n")

    def _holds_done_rows(self, meta: dict) -> bool:
        """Whether the canonical output is ours and holds a done row (rows of other columns,
        from another producer, count as done: they are results too)."""
        if meta.get("fingerprint") is None or not os.path.exists(self.output):
            return False
        try:
            rows, _ = self._read_files([self.output])
        except OutputError:
            with open(self.output, encoding=ENCODING, errors=ERRORS) as handle:
                return sum(1 for _ in handle) > (1 if self.csv_format else 0)
        return any(self.is_done(row) for row in rows.values())

    def _current_rows(self):
        """`({key: row}, keys of the earlier output in file order)` of the run in progress."""
        meta = read_meta(self.output) or {}
        progress = meta.get("in_progress")
        extends = progress is None or progress.get("extends_output")
        base = [self.output] if extends and os.path.exists(self.output) else []
        base_rows, _ = self._read_files(base)
        rows, _ = self._read_files(part_files(self.output), base_rows)
        return rows, list(base_rows)

    def _read_files(self, paths: list, rows: dict | None = None):
        """Merge the rows of `paths` into `rows` (see the merging rule). Returns `(rows, skipped)`."""
        rows = {} if rows is None else dict(rows)
        skipped = 0
        for path in paths:
            with open(path, encoding=ENCODING, errors=ERRORS, newline="") as handle:
                text = handle.read()
            records, bad = self._parse(path, text[: text.rfind("\n") + 1])  # a line cut short by a crash is ignored
            skipped += bad
            for row in records:
                key = self.key(row)
                previous = rows.get(key)
                if previous is None or self.is_done(row) or not self.is_done(previous):
                    rows[key] = row
        if skipped:
            logger.warning("Ignored %d unreadable rows of %s.", skipped, ", ".join(paths))
        return rows, skipped

    def _parse(self, path: str, text: str):
        records, bad = [], 0
        if self.csv_format:
            reader = csv.DictReader(io.StringIO(text))
            if reader.fieldnames is not None and reader.fieldnames != self.columns:
                raise OutputError(f"{path} has the columns {reader.fieldnames}, this run writes {self.columns}.")
            for row in reader:
                try:
                    if None in row or None in row.values():  # too many or too few fields
                        raise ValueError("wrong number of fields")
                    records.append(self.parse_csv_row(row))
                except ValueError:
                    bad += 1
            return records, bad
        for line in text.split("\n")[:-1]:  # not splitlines(): U+2028, U+0085 ... stay raw in JSON strings
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict):
                row = {**self.added_columns, **row}
            if isinstance(row, dict) and set(row) == set(self.columns):
                records.append(row)
            else:
                bad += 1
        return records, bad


__all__ = [
    "ShardedOutput", "PartWriter", "MergeResult", "OutputError", "check_writable", "format_rows",
    "meta_path", "output_format", "part_files", "part_path", "read_meta", "write_atomic",
]
