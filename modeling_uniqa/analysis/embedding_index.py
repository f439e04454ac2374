"""A folder that keeps one image embedding per file, updated incrementally, and ranks by text.

Layout of an index folder:

    index.json                   {"format", "version", "fingerprint", "dim", "info",
                                  "embeddings_file", "entries": [{"path", "size", "mtime_ns", "ctime_ns"}, ...]}
    embeddings-<token>.safetensors   "embeddings": float32 (len(entries), dim), row i = entries[i]

`index.json` is the commit point: a save writes a new, uniquely named embeddings file, then
replaces `index.json` atomically (`atomic_files.atomic_write`), then deletes embeddings files
that no longer belong. A crash at any moment leaves the previous or the new index, never a mix.

Paths are absolute. A file is up to date when its size, modification time and status-change
time (ns) equal the recorded ones; anything else is embedded again. The ctime is there because
the mtime can be set (`cp -p`, `tar x`, `touch -r`): a file replaced by another of the same size
with the old mtime kept would otherwise keep its stale embedding; no tool sets the ctime. Entries
of indexes written before it was recorded have none and are embedded again once. The fingerprint names the model, view policy and
embedding kind (`zero_shot.embedding_fingerprint`): an index is never used with another.
"""

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..core.atomic_files import atomic_write, atomic_write_text
from ..errors import EmbeddingIndexError  # noqa: F401  (raised here; importable from here too)

logger = logging.getLogger(__name__)

INDEX_FILE = "index.json"
INDEX_FORMAT = "uniqa-embedding-index"
INDEX_VERSION = 1


class IndexEntry(NamedTuple):  # a tuple: 100,000 of them are built in a fraction of a second
    path: str
    size: int
    mtime_ns: int
    ctime_ns: int | None = None  # None: not recorded (older indexes), never up to date

    @property
    def signature(self) -> tuple:
        return self.size, self.mtime_ns, self.ctime_ns


def file_signature(path: str) -> tuple:
    """`(size, mtime_ns, ctime_ns)` of a file, what decides whether its embedding is still valid."""
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


@dataclass
class EmbeddingIndex:
    """Image embeddings `(n, dim)` float32 with their files, for one model fingerprint."""

    fingerprint: str
    entries: list
    embeddings: torch.Tensor
    info: dict = field(default_factory=dict)  # how it was built (model folder, view policy, ...): for people

    def __post_init__(self):
        if self.embeddings.dim() != 2 or self.embeddings.shape[0] != len(self.entries):
            raise EmbeddingIndexError(f"embeddings of shape {tuple(self.embeddings.shape)} for {len(self.entries)} entries.")

    @property
    def paths(self) -> list:
        return [entry.path for entry in self.entries]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def __len__(self) -> int:
        return len(self.entries)

    # ----------------------------------------------------------------------------------------
    # Files
    # ----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str, fingerprint: str | None = None) -> "EmbeddingIndex":
        """Read an index folder. With `fingerprint`, refuse an index built for another one."""
        index_path = os.path.join(directory, INDEX_FILE)
        try:
            with open(index_path, encoding="utf-8") as handle:
                header = json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            raise EmbeddingIndexError(f"{index_path}: cannot read the index ({error}).") from error
        if not isinstance(header, dict) or header.get("format") != INDEX_FORMAT:
            raise EmbeddingIndexError(f"{index_path}: not a UniQA embedding index (no format {INDEX_FORMAT!r}).")
        if header.get("version") != INDEX_VERSION:
            raise EmbeddingIndexError(f"{index_path}: index version {header.get('version')!r}, this code reads {INDEX_VERSION}.")
        if fingerprint is not None and header.get("fingerprint") != fingerprint:
            info = header.get("info", {})
            raise EmbeddingIndexError(
                f"{directory} was built by another model or with other settings ({json.dumps(info, sort_keys=True)}); "
                "use a new --index folder for this model, or delete this one to rebuild it."
            )
        embeddings_path = os.path.join(directory, str(header.get("embeddings_file")))
        try:
            embeddings = load_file(embeddings_path)["embeddings"]
        except (OSError, KeyError, ValueError) as error:
            raise EmbeddingIndexError(f"{embeddings_path}: cannot read the index embeddings ({error}).") from error
        entries = [
            IndexEntry(entry["path"], int(entry["size"]), int(entry["mtime_ns"]), None if entry.get("ctime_ns") is None else int(entry["ctime_ns"]))
            for entry in header.get("entries", [])
        ]
        if embeddings.shape != (len(entries), header.get("dim")):
            raise EmbeddingIndexError(
                f"{embeddings_path}: embeddings of shape {tuple(embeddings.shape)}, {index_path} lists {len(entries)} files of dimension {header.get('dim')}."
            )
        return cls(header["fingerprint"], entries, embeddings.float(), header.get("info", {}))

    def save(self, directory: str) -> None:
        """Write the index folder atomically (see the module docstring)."""
        os.makedirs(directory, exist_ok=True)
        embeddings_file = f"embeddings-{secrets.token_hex(8)}.safetensors"
        atomic_write(
            os.path.join(directory, embeddings_file),
            lambda path: save_file({"embeddings": self.embeddings.float().contiguous()}, path, metadata={"format": INDEX_FORMAT}),
        )
        header = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "info": self.info,
            "embeddings_file": embeddings_file,
            "entries": [entry._asdict() for entry in self.entries],
        }

        try:
            atomic_write_text(os.path.join(directory, INDEX_FILE), json.dumps(header))
        except BaseException:
            os.remove(os.path.join(directory, embeddings_file))
            raise
        for name in os.listdir(directory):  # embeddings of earlier saves, or of a save that crashed
            if name.startswith("embeddings-") and name.endswith(".safetensors") and name != embeddings_file:
                os.remove(os.path.join(directory, name))

    # ----------------------------------------------------------------------------------------
    # Queries
    # ----------------------------------------------------------------------------------------
    def similarities(self, query_embeds: torch.Tensor) -> torch.Tensor:
        """Cosine similarities `(n, queries)` of every image with L2-normalised queries `(queries, dim)`."""
        query_embeds = query_embeds.detach().float().cpu()
        if query_embeds.dim() == 1:
            query_embeds = query_embeds[None]
        if query_embeds.shape[-1] != self.dim:
            raise ValueError(f"query embeddings of dimension {query_embeds.shape[-1]}, the index holds dimension {self.dim}.")
        return self.embeddings @ query_embeds.t()

    def search(self, query_embeds: torch.Tensor, top_k: int) -> list:
        """For each query, the `top_k` best `(row, similarity)` pairs, best first.

        Equal similarities are ordered by row (index order), so the answer is the first `top_k`
        of a stable sort by decreasing similarity.
        """
        scores = self.similarities(query_embeds).numpy()
        return [top_rows(scores[:, column], top_k) for column in range(scores.shape[1])]


def top_rows(scores: np.ndarray, top_k: int) -> list:
    """`(row, score)` of the `top_k` highest scores, best first, ties by row: the first `top_k`
    of `np.argsort(-scores, kind="stable")` without sorting all n."""
    count = min(int(top_k), len(scores))
    if count <= 0:
        return []
    if np.isnan(scores).any():
        raise ValueError("similarities hold NaN: the index or the query embedding is corrupt.")
    kth = np.partition(scores, len(scores) - count)[len(scores) - count]  # the count-th largest value
    above = np.flatnonzero(scores > kth)
    tied = np.flatnonzero(scores == kth)[: count - len(above)]
    rows = np.concatenate([above, tied])
    rows = rows[np.lexsort((rows, -scores[rows]))]
    return [(int(row), float(scores[row])) for row in rows]


# --------------------------------------------------------------------------------------------
# Incremental update
# --------------------------------------------------------------------------------------------
@dataclass
class UpdateReport:
    """What an update did: counts, and the files that could not be embedded with the reason."""

    kept: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    failed: list = field(default_factory=list)  # [(path, message)]


# embed(paths) yields (positions into `paths`, embeddings (len(positions), dim), [(position, error message)])
EmbedFunction = Callable[[list], Iterable]


def update_index(
    directory: str,
    paths: list,
    fingerprint: str,
    embed: EmbedFunction,
    info: dict | None = None,
    checkpoint_seconds: float = 300.0,
) -> tuple:
    """Make the index in `directory` hold exactly `paths` (absolute), embedding only what is new
    or changed. Returns `(EmbeddingIndex, UpdateReport)`.

    Files of the index that are not among `paths` are removed from it; files whose size, mtime or
    ctime changed are embedded again. Files that fail to embed are left out and listed in the report.
    While embedding, the index is saved every `checkpoint_seconds` (and on the way out of an
    error or interrupt), so an interrupted run keeps what it computed and the next one resumes.
    Raises `EmbeddingIndexError` if the folder holds an index of another fingerprint.
    """
    old = EmbeddingIndex.load(directory, fingerprint) if os.path.exists(os.path.join(directory, INDEX_FILE)) else None
    old_rows = {entry.path: row for row, entry in enumerate(old.entries)} if old is not None else {}
    report = UpdateReport()
    rows, todo = {}, []  # path -> (entry, its row in `old` or its new embedding); the paths to embed
    for path in paths:
        try:
            signature = file_signature(path)
        except OSError as error:
            report.failed.append((path, f"{path}: {error.strerror or error}"))
            continue
        row = old_rows.get(path)
        if row is not None and old.entries[row].signature == signature:
            rows[path] = (old.entries[row], row)
            report.kept += 1
        else:
            todo.append(IndexEntry(path, *signature))
            if row is None:
                report.added += 1
            else:
                report.changed += 1
    report.removed = len(set(old_rows) - set(paths))
    dim = old.dim if old is not None else None

    def build() -> EmbeddingIndex:
        present = [path for path in paths if path in rows]  # input order
        embeddings = torch.zeros((len(present), dim or 0))
        kept = [(position, rows[path][1]) for position, path in enumerate(present) if isinstance(rows[path][1], int)]
        new = [(position, rows[path][1]) for position, path in enumerate(present) if not isinstance(rows[path][1], int)]
        if kept:  # one gather, not a tensor per row
            embeddings[[position for position, _ in kept]] = old.embeddings[[row for _, row in kept]]
        if new:
            embeddings[[position for position, _ in new]] = torch.stack([embedding for _, embedding in new])
        return EmbeddingIndex(fingerprint, [rows[path][0] for path in present], embeddings, dict(info or {}))

    if not todo and old is not None and report.removed == 0 and [entry.path for entry in old.entries] == [p for p in paths if p in rows]:
        return old, report  # nothing to write
    last_save, unsaved = time.monotonic(), False
    try:
        for positions, embeddings, errors in embed([entry.path for entry in todo]):
            for position, embedding in zip(positions, embeddings):
                entry = todo[position]
                rows[entry.path] = (entry, embedding.detach().float().cpu())
                dim, unsaved = embedding.shape[-1], True
            for position, message in errors:
                report.failed.append((todo[position].path, message))
            if unsaved and time.monotonic() - last_save >= checkpoint_seconds:
                build().save(directory)
                last_save, unsaved = time.monotonic(), False
    except BaseException:
        if unsaved:
            logger.warning("Interrupted: saving the %d embeddings computed so far to %s.", len(rows), directory)
            build().save(directory)
        raise
    index = build()
    index.save(directory)
    return index, report


__all__ = ["EmbeddingIndex", "EmbeddingIndexError", "IndexEntry", "UpdateReport", "file_signature", "top_rows", "update_index"]
