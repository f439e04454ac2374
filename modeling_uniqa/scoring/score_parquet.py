"""Parquet score files that say what made them, and `read_scores`, which refuses mixed ones.

The `datasets` and tar-shard paths of `uniqa score` write Parquet. Each file's schema metadata
holds, under `uniqa.fingerprint`, the dict that `uniqa score` records in its sidecar
(`score_images.scoring_fingerprint`: model weights and config hashes, dtype, prompts, view
policy and seed, image processor, columns). A curation filter reads its inputs with
`read_scores`, which refuses files made by different models, prompts or view policies:
thresholds are only meaningful on scores of one scorer.

    from modeling_uniqa.scoring.score_parquet import read_scores
    table = read_scores("scores/")                  # a folder, files or glob patterns
    keep = table.filter(pyarrow.compute.greater(table["score"], 0.6))
"""

import glob
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from ..core.atomic_files import atomic_write
from ..errors import MixedScoresError  # noqa: F401  (raised here; importable from here too)
from .sharded_output import describe_difference

FINGERPRINT_KEY = b"uniqa.fingerprint"
FINGERPRINT_COLUMN = "uniqa_fingerprint"  # per row, for writers that drop schema metadata (Ray's write_parquet)


def fingerprint_id(fingerprint: dict) -> str:
    """The sha256 of a fingerprint's canonical JSON: the value of `FINGERPRINT_COLUMN`."""
    import hashlib

    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def rows_to_table(rows: list, columns: list, score_columns: list, fingerprint: dict, metadata: dict | None = None) -> pa.Table:
    """Rows (dicts) -> a table with `columns` in order, scores as float64 (empty: null), `error`
    as a string, the others inferred; the fingerprint (and `metadata`, str -> JSON-able) in the schema."""
    arrays, fields = [], []
    for column in columns:
        values = [row.get(column) for row in rows]
        kind = pa.float64() if column in score_columns else pa.string() if column == "error" else None
        array = pa.array(values, type=kind)
        arrays.append(array)
        fields.append(pa.field(column, array.type))
    schema_metadata = {FINGERPRINT_KEY: json.dumps(fingerprint, sort_keys=True).encode()}
    schema_metadata |= {f"uniqa.{name}".encode(): json.dumps(value).encode() for name, value in (metadata or {}).items()}
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=schema_metadata))


def write_table_atomic(table: pa.Table, path: str) -> None:
    """Write `table` to `path` atomically: a crash leaves no file or the whole file, never a
    partial one that a rerun would skip. One writer per path: the temporary file has a fixed
    name, so one left by a killed run is overwritten by the rerun."""
    temporary_name = f".{os.path.basename(path)}.tmp"
    atomic_write(path, lambda temporary: pq.write_table(table, temporary), temporary_name=temporary_name)


def read_fingerprint(path: str) -> dict | None:
    """The fingerprint in a Parquet file's schema, `None` if it has none. Reads the footer only."""
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata[FINGERPRINT_KEY]) if FINGERPRINT_KEY in metadata else None


def read_metadata(path: str, name: str):
    """The value stored under `uniqa.<name>` by `rows_to_table(metadata=...)`, or `None`."""
    metadata = pq.read_schema(path).metadata or {}
    key = f"uniqa.{name}".encode()
    return json.loads(metadata[key]) if key in metadata else None


def score_files(paths) -> list:
    """Files, folders (their `*.parquet`, sorted) and glob patterns -> Parquet file paths."""
    found = []
    for item in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        item = os.fspath(item)
        if os.path.isdir(item):
            found += sorted(glob.glob(os.path.join(glob.escape(item), "*.parquet")))
        elif os.path.exists(item):
            found.append(item)
        else:
            matches = sorted(glob.glob(item))
            if not matches:
                raise FileNotFoundError(f"{item}: no such file, folder or matching pattern.")
            found += matches
    return found


def read_scores(paths, fingerprint: dict | None = None) -> pa.Table:
    """The rows of the score files `paths` (files, folders of `*.parquet`, glob patterns) as one
    table, after checking that one scorer made them all: every file must carry a fingerprint
    (in its schema, or per row in a `uniqa_fingerprint` column as `UniQAScorer` writes), equal
    to `fingerprint` when given, else to the first file's. Raises `MixedScoresError` naming the
    file and the differing fields (e.g. `view_policy: was 'random10', now 'center'`)."""
    files = score_files(paths)
    if not files:
        raise FileNotFoundError(f"{paths}: no Parquet score file there.")
    reference, reference_id, reference_file, tables = fingerprint, None, "the expected fingerprint", []
    if fingerprint is not None:
        reference_id = fingerprint_id(fingerprint)
    for path in files:
        found, table = read_fingerprint(path), pq.read_table(path)
        ids = set(table.column(FINGERPRINT_COLUMN).unique().to_pylist()) if FINGERPRINT_COLUMN in table.column_names else set()
        if found is not None:
            ids.add(fingerprint_id(found))
        if not ids:
            raise MixedScoresError(f"{path}: no UniQA fingerprint (schema or {FINGERPRINT_COLUMN} column): not written by the UniQA scorer, refused.")
        if reference_id is None:
            reference, reference_id, reference_file = found, next(iter(ids)), path
        if ids != {reference_id}:
            detail = describe_difference(reference, found) if reference is not None and found is not None else f"fingerprints {sorted(ids)}"
            raise MixedScoresError(f"{path}: made by another scorer than {reference_file} ({detail}); refusing to mix their scores.")
        tables.append(table)
    table = pa.concat_tables(tables, promote_options="default")  # a column all null in one file takes the others' type
    return table.replace_schema_metadata({FINGERPRINT_KEY: json.dumps(reference, sort_keys=True).encode()} if reference is not None else None)
