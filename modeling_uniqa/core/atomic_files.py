"""Atomic file writes: a file under its final name is always complete.

`atomic_write(path, write)` has `write(temporary)` fill a new file in `path`'s folder (the same
filesystem, so the rename is atomic), fsyncs it, then `os.replace`s `path` by it. A reader, or a
rerun after a crash at any moment, sees the previous file or the new one, never half of one. If
`write` (or anything after it) raises, KeyboardInterrupt included, the temporary file is removed
and `path` is left as it was.

Temporary files are named `.<name>.<random>.tmp` (hidden, and skipped by `uniqa push`) and
created with mode 0666 minus the umask, like any file the user creates (`tempfile` would make
0600 files). A writer that is the only one for its path may pass a fixed `temporary_name`
instead, so that the file a SIGKILLed run leaves behind is overwritten by the next run rather
than piling up.

Some writers create their files 0600 whatever the umask (safetensors' `save_file`, hence every
`model.safetensors`): `honour_umask(path, ...)` gives files (and, walked, the files of folders)
that a tool wrote the mode the user's umask asks for, so a shared model folder is readable by
those it is shared with.

This module is for files. Folders that are written then renamed into place (training
checkpoints, `heads.rewrite_model_folder`) are handled where they are written.
"""

import os
import secrets
from collections.abc import Callable

_FILE_MODE = 0o666  # minus the umask, applied by the OS


def _create_temporary(folder: str, base: str, temporary_name: str | None) -> str:
    """Create the temporary file (empty) and return its path."""
    if temporary_name is not None:
        if os.path.basename(temporary_name) != temporary_name or temporary_name in ("", ".", ".."):
            raise ValueError(f"temporary_name {temporary_name!r}: must be a bare file name (it is created beside {base}).")
        temporary = os.path.join(folder, temporary_name)
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE))
        return temporary
    while True:
        temporary = os.path.join(folder, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE))
            return temporary
        except FileExistsError:  # another writer's name: draw again
            continue


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable. Best effort: not every OS or filesystem can fsync a folder."""
    if os.name != "posix":
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(*paths) -> None:
    """Give each file in `paths` (and each file under each folder in `paths`) mode 0666 minus the
    umask, as files the user creates get: for files a library wrote with a narrower mode. Symbolic
    links are neither changed nor followed; folders keep their mode."""
    mode = _FILE_MODE & ~current_umask()
    for path in paths:
        path = os.fspath(path)
        if os.path.islink(path):
            continue
        if os.path.isdir(path):
            for root, _, names in os.walk(path):
                for name in names:
                    file_path = os.path.join(root, name)
                    if not os.path.islink(file_path) and os.path.isfile(file_path):
                        os.chmod(file_path, mode)
        elif os.path.isfile(path):
            os.chmod(path, mode)


def atomic_write(path, write: Callable[[str], None], *, temporary_name: str | None = None) -> None:
    """Replace `path` by the file that `write(temporary_path)` writes, atomically.

    `write` gets the path of an existing, empty file in `path`'s folder and may open it (truncating
    is fine) or hand it to any library that writes to a path. The folder must exist.
    `temporary_name`: see the module docstring.
    """
    path = os.path.abspath(os.fspath(path))
    folder, base = os.path.split(path)
    temporary = _create_temporary(folder, base, temporary_name)
    try:
        write(temporary)
        honour_umask(temporary)  # a writer may have replaced it by a 0600 file (safetensors does)
        with open(temporary, "rb+") as handle:  # writable: Windows refuses to fsync a read-only handle
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise
    _fsync_folder(folder)


def atomic_write_text(path, text: str, *, encoding: str = "utf-8", errors: str = "strict", newline: str | None = None, temporary_name: str | None = None) -> None:
    """`atomic_write` of `text`; `encoding`, `errors` and `newline` are those of `open`."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding=encoding, errors=errors, newline=newline) as handle:
            handle.write(text)

    atomic_write(path, write, temporary_name=temporary_name)


__all__ = ["atomic_write", "atomic_write_text", "current_umask", "honour_umask"]
