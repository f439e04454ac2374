"""Finding label files and images on disk without opening them.

:class:`DirectoryIndex` lists each folder it is asked about once (``os.scandir``) and then
answers look-ups from memory, matching every path component exactly first and then
case-insensitively (TID2013 and others differ in letter case between list and disk).
Indexing AVA's 255,530 flat files costs one directory listing, not one ``stat`` per row.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

__all__ = ["DirectoryIndex", "split_parts", "under"]

_SEPARATORS = re.compile(r"[\\/]+")


def split_parts(name: str) -> list[str]:
    """Path components of ``name`` with ``/`` or ``\\`` separators, without ``.``/empty parts."""
    return [p for p in _SEPARATORS.split(name) if p not in ("", ".")]


def under(prefixes: Iterable[str], *names: str) -> list[str]:
    """Every ``prefix/name`` combination, prefixes first (``""`` = no prefix)."""
    return [f"{p}/{n}" if p else n for p in prefixes for n in names]


class DirectoryIndex:
    """Case-tolerant, cached look-ups of relative paths under ``root``."""

    def __init__(self, root: str):
        self.root = os.path.abspath(os.fspath(root))
        self._listings: dict[str, tuple[frozenset, dict[str, str]] | None] = {}

    def _listing(self, rel_dir: str) -> tuple[frozenset, dict[str, str]] | None:
        if rel_dir not in self._listings:
            try:
                with os.scandir(os.path.join(self.root, rel_dir)) as entries:
                    names = [e.name for e in entries]
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                self._listings[rel_dir] = None
            else:
                lower: dict[str, str] = {}
                for name in sorted(names):  # sorted: the same pick on every run when only case differs
                    lower.setdefault(name.lower(), name)
                self._listings[rel_dir] = (frozenset(names), lower)
        return self._listings[rel_dir]

    def resolve(self, name: str) -> str | None:
        """Absolute path of ``name`` (relative to ``root``) if it exists, else ``None``."""
        rel = ""
        for part in split_parts(name):
            if part == "..":
                rel = os.path.dirname(rel)
                continue
            listing = self._listing(rel)
            if listing is None:
                return None
            exact, lower = listing
            actual = part if part in exact else lower.get(part.lower())
            if actual is None:
                return None
            rel = os.path.join(rel, actual) if rel else actual
        return os.path.join(self.root, rel) if rel else None

    def find(self, candidates: Iterable[str], want_dir: bool = False) -> str | None:
        """The first candidate (relative path) that exists as a file (or folder)."""
        for candidate in candidates:
            path = self.resolve(candidate)
            if path is not None and (os.path.isdir(path) if want_dir else os.path.isfile(path)):
                return path
        return None

    def resolve_tail(self, path: str) -> str | None:
        """Resolve a path written on another machine by its longest tail found under ``root``.

        ``/data/AVA/images/953619.jpg`` is tried as ``data/AVA/images/953619.jpg``, then
        ``AVA/images/953619.jpg``, ``images/953619.jpg`` and ``953619.jpg``.
        """
        parts = split_parts(path)
        for start in range(len(parts)):
            found = self.resolve("/".join(parts[start:]))
            if found is not None:
                return found
        return None
