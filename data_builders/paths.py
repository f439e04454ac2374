"""Finding label files and images on disk.

:class:`DirectoryIndex` lists each folder it is asked about once (``os.scandir``) and then
answers look-ups from memory, matching every path component exactly first and then
case-insensitively (TID2013 and others differ in letter case between list and disk).
Indexing AVA's 255,530 flat files costs one directory listing, not one ``stat`` per row.

On top of it the builders use :func:`locate_file` (the first label file found among
candidates, or an error listing every candidate), :func:`find_image_root` (the image
folder) and :func:`attach_images` (each row's image path; missing and, if asked, corrupt
images skipped with a warning or rejected). Only ``verify_images`` opens an image.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import DatasetFormatError, MissingImageError, MissingLabelFileError, row_position

logger = logging.getLogger(__name__)

__all__ = ["DirectoryIndex", "attach_images", "find_image_root", "locate_file", "resolve_image", "split_parts", "under"]

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


def locate_file(what: str, base: str, candidates: Sequence[str], required: bool = True) -> str | None:
    """The first of ``candidates`` (paths relative to ``base``) that is a file.

    Args:
        what: the dataset name, for the error message.
        base: the folder the candidates are relative to.
        candidates: accepted relative paths, in order of preference.
        required: raise when none exists (else return ``None``).

    Raises:
        MissingLabelFileError: when ``required`` and none exists; lists every candidate.
    """
    found = DirectoryIndex(base).find(candidates)
    if found is None and required:
        raise MissingLabelFileError(what, [os.path.join(base, c) for c in candidates], base)
    return found


def find_image_root(what: str, base: str, image_dir: str | None, usual: Sequence[str]) -> str:
    """The folder image names are relative to.

    Args:
        what: the dataset name, for the error message.
        base: the dataset folder.
        image_dir: the user's choice, absolute or relative to ``base`` (must be a folder).
        usual: the dataset's usual image folders relative to ``base`` (``""`` = ``base``);
            the first that exists is used, else ``base``.
    """
    if image_dir is not None:
        root = os.path.join(base, os.path.expanduser(os.fspath(image_dir)))
        if not os.path.isdir(root):
            raise MissingLabelFileError(what, [root], base, hint="image_dir is not a folder.")
        return os.path.abspath(root)
    return DirectoryIndex(base).find([d for d in usual if d], want_dir=True) or base


def resolve_image(index: DirectoryIndex, name: str) -> str | None:
    """Path of image ``name``: an existing absolute path as it is, else ``name`` under the
    index's folder, else its longest tail found there (``images/1.jpg`` -> ``1.jpg``;
    ``/data/AVA/images/953619.jpg`` -> ``953619.jpg``), letter case tolerated."""
    if os.path.isabs(name) and os.path.isfile(name):
        return name
    return index.resolve_tail(name)


def _image_ok(path: str) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:
        return False


def _report(what: str, names: list[str], total: int, source: str, reason: str, strict: bool) -> None:
    message = f"{what}: {len(names)} of {total} images listed in {source} {reason} (first: {', '.join(names[:5])})"
    if strict:
        raise MissingImageError(message, names)
    logger.warning("%s; they were skipped. Pass strict=True to make this an error.", message)


def attach_images(
    rows: list[dict[str, Any]],
    image_root: str,
    what: str,
    source: str,
    check_images: bool = True,
    verify_images: bool = False,
    strict: bool = False,
    unique: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Give each row (with ``image_name``) its ``_path`` under ``image_root``.

    Args:
        rows: the rows, in order.
        image_root: the image folder (see :func:`find_image_root`).
        what: the dataset name, for messages.
        source: the label file(s) the rows came from, for messages.
        check_images: drop rows whose image is not found (else keep them, with the path
            the image would have).
        verify_images: also decode every kept image with PIL and drop corrupt ones.
        strict: raise :class:`MissingImageError` instead of skipping with a warning.
        unique: two rows may not name the same file (rating rows: one label per image).

    Returns:
        ``(kept rows, {"missing": names, "corrupt": names})`` (kinds with no name left out).

    Raises:
        MissingImageError: when no listed image is found at all, or with ``strict``.
        DatasetFormatError: with ``unique``, when two rows name the same image file.
    """
    index = DirectoryIndex(image_root)
    kept, missing = [], []
    owner: dict[str, dict[str, Any]] = {}
    for row in rows:
        path = resolve_image(index, row["image_name"])
        if path is None:
            if check_images:
                missing.append(row["image_name"])
                continue
            path = os.path.join(image_root, row["image_name"])
        first = owner.setdefault(path, row) if unique else row
        if first is not row:
            # names that differ only in case or folder prefix ("I01_01_1.bmp", "images/i01_01_1.bmp")
            here = row.get("_source", source)
            raise DatasetFormatError(
                f"{first['image_name']!r} ({row_position(first, here)}) and {row['image_name']!r} (line "
                f"{row.get('_line')}) name the same image {path}; each image must be listed once",
                here,
                row.get("_line"),
            )
        row["_path"] = path
        kept.append(row)
    if rows and not kept:
        raise MissingImageError(
            f"{what}: none of the {len(rows)} images listed in {source} was found under "
            f"{image_root!r} (e.g. {rows[0]['image_name']!r}); pass image_dir= to point at them",
            [r["image_name"] for r in rows],
        )
    skipped: dict[str, list[str]] = {}
    if missing:
        skipped["missing"] = missing
        _report(what, missing, len(rows), source, f"were not found under {image_root}", strict)
    if verify_images:
        flags = [_image_ok(row["_path"]) for row in kept]
        corrupt = [row["image_name"] for row, ok in zip(kept, flags) if not ok]
        if corrupt:
            skipped["corrupt"] = corrupt
            _report(what, corrupt, len(rows), source, "could not be decoded", strict)
        kept = [row for row, ok in zip(kept, flags) if ok]
    return kept, skipped
