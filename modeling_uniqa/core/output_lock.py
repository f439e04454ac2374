"""One writer per output: a lock that two runs into the same output (folder or file) cannot both
hold, and that a killed run never leaves stuck.

The lock is an advisory `flock` on a hidden file beside the output, `.<name>.lock` (beside, not
inside, so a model folder holds only the model). The kernel drops a `flock` when the process that
holds it ends, however it ends (killed, crashed, out of memory): no stale lock is ever left to
clear by hand. The file records who holds it (pid, host, command) for the refusal's message, and
is removed on release (a waiting process that opened the removed file notices, by its inode, and
tries again). Where `fcntl` is missing (Windows) the lock is a no-op.

Under `accelerate launch`/`torchrun` only the global main process (`RANK` 0, or no `RANK`) takes
the lock: the other processes of the same run share it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
from collections.abc import Iterator

from modeling_uniqa.errors import OutputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


# Lock files this process holds, with their nesting depth: a library function that locks its output
# (fine-tuning) may run under a command that has locked the same output already.
_HELD: dict[str, int] = {}


class OutputInUseError(OutputError):
    """Another run is writing the same output: the message names it and the process holding it."""


def lock_path(output: str) -> str:
    """The lock file of `output` (a folder or a file): `.<name>.lock` beside it, resolved through
    symlinks and `..` so that every spelling of one output locks one file."""
    real = os.path.realpath(os.path.abspath(os.fspath(output)))
    parent, name = os.path.split(real.rstrip(os.sep) or real)
    return os.path.join(parent, f".{name or 'root'}.lock")


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def _holder(path: str) -> str:
    with contextlib.suppress(OSError, ValueError):
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
        return f"pid {info.get('pid')} on {info.get('host')}: {info.get('command')}"
    return "another process"


class OutputLock:
    """The lock of one output; `acquire` raises `OutputInUseError` when another run holds it."""

    def __init__(self, output: str, what: str = "output"):
        self.output, self.what = os.fspath(output), what
        self.path = lock_path(self.output)
        self._fd: int | None = None
        self._nested = False

    def acquire(self) -> OutputLock:
        if fcntl is None or self._fd is not None or self._nested:
            return self
        if self.path in _HELD:  # this process holds it already (an outer block): nest
            _HELD[self.path] += 1
            self._nested = True
            return self
        parent = os.path.dirname(self.path)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{self.output}: cannot write the output there (cannot create its parent folder {parent}: {error.strerror}).") from error
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as error:
                raise OutputError(f"{self.output}: cannot write the output there ({self.path}: {error.strerror}).") from error
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise OutputError(f"{self.output}: cannot lock {self.path} ({error.strerror}).") from error
                raise OutputInUseError(
                    f"{self.output}: in use by another run ({_holder(self.path)}); wait for it to end or choose another "
                    f"{self.what} (two runs into one {self.what} would mix their files)."
                ) from None
            try:  # the file may have been removed by its last holder after we opened it: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:300]}
        os.write(fd, json.dumps(record).encode("utf-8"))
        self._fd = fd
        _HELD[self.path] = 1
        return self

    def release(self) -> None:
        if self._nested:
            _HELD[self.path] -= 1
            self._nested = False
            return
        if self._fd is None:
            return
        _HELD.pop(self.path, None)
        with contextlib.suppress(OSError):
            os.remove(self.path)  # while still held: a waiter that opened it retries on a new file
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def output_lock(output: str, what: str = "output", all_processes: bool = False) -> Iterator[OutputLock | None]:
    """Hold the lock of `output` for the block (`OutputInUseError` when another run holds it).
    Under a distributed launch only the global main process locks, unless `all_processes`."""
    if not (all_processes or _is_main_process()):
        yield None
        return
    with OutputLock(output, what) as lock:
        yield lock


__all__ = ["OutputInUseError", "OutputLock", "lock_path", "output_lock"]
