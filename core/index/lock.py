"""Cross-process exclusive locks on files in the data directory (``fcntl.flock``).

Why flock and not a pid file: the kernel drops the lock the moment its holder dies (crash, SIGKILL,
reboot), so a killed refresh or build never leaves a lock behind that someone must delete by hand,
and every process that looks at the same file — the CLI, the bot, the bot's refresh child — sees
the same answer. The holder's pid is written into the file only so a refusal can name it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import EchoVidsError

#: In the data directory; held by the process doing the refresh (CLI or the bot's child).
REFRESH_LOCK = "refresh.lock"


class LockBusyError(EchoVidsError):
    """Another process (or another holder in this one) holds the lock."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


class FileLock:
    """An exclusive, non-blocking flock on ``path``; release with :meth:`release` (or ``with``)."""

    def __init__(self, path: Path, what: str = "this job"):
        self.path = Path(path)
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            by = f" (pid {pid})" if pid else ""
            raise LockBusyError(f"{self.what} is already running{by}", pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(path: Path) -> int | None:
    """0 or the holder's pid when ``path`` is locked by someone, None when it is free (a probe)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextmanager
def refresh_lock(data_dir: Path) -> Iterator[FileLock]:
    """Held for a whole refresh: a second refresh anywhere on this data directory is refused."""
    with FileLock(Path(data_dir) / REFRESH_LOCK, "an index refresh") as lock:
        yield lock


def refresh_holder(data_dir: Path) -> int | None:
    """Who runs a refresh on ``data_dir`` now (pid, or 0 if unknown), or None when nobody does."""
    return holder(Path(data_dir) / REFRESH_LOCK)
