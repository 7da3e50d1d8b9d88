"""Cross-process exclusive locks on files in the data directory (``fcntl.flock``).

Why flock and not a pid file: the kernel drops the lock the moment its holder dies (crash, SIGKILL,
reboot), so a killed refresh or build never leaves a lock behind that someone must delete by hand,
and every process that looks at the same file — the CLI, the bot, the bot's refresh child — sees
the same answer. The holder's pid is written into the file only so a refusal can name it.

Past one machine the flock is not enough: bot processes on several machines, each with its own copy
of the data directory, never see each other's flock. With the ``milvus`` vector store the refresh
also holds a lease-based lock in the Milvus server they all share (:mod:`core.index.milvus_lock`);
:func:`acquire_refresh_lock` takes both (the flock first: instant, and kernel-released on this
machine) and :func:`refresh_holder_of` reports a holder found in either.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import EchoVidsError

#: In the data directory; held by the process doing the refresh (CLI or the bot's child).
REFRESH_LOCK = "refresh.lock"


class LockBusyError(EchoVidsError):
    """Another process (or another holder in this one) holds the lock."""

    def __init__(self, message: str, pid: int | None = None, host: str | None = None):
        super().__init__(message)
        self.pid = pid
        #: The holder's host when it was found in Milvus (possibly another machine); None: this one.
        self.host = host


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


@dataclass(frozen=True)
class RefreshHolder:
    """Who runs a refresh now, for a front end's refusal or status line."""

    #: The holder's pid (0 when it cannot be told).
    pid: int
    #: Its host when the holder was found through Milvus (maybe another machine); None: the data
    #: directory's flock, so this machine (or a client of the same network folder).
    host: str | None = None


class LockLostError(EchoVidsError):
    """The Milvus lease of a running refresh was taken over (it expired: the process stalled)."""


class RefreshLock:
    """The data directory's flock, plus the Milvus lease when the index lives in Milvus."""

    def __init__(self, file_lock: FileLock, milvus_lock: Any | None = None):
        self.file_lock = file_lock
        self.milvus_lock = milvus_lock

    def confirm(self) -> None:
        """Raise LockLostError if another process took the Milvus lease over; called right before a
        refresh makes its build current, so a refresh that stalled past its lease (and whose lock a
        second refresh has since taken) stops without publishing instead of racing the other one.

        The flock cannot be lost while this process lives. A Milvus server that does not answer
        here is not proof of a takeover: the publish step that follows needs the server anyway and
        fails on its own.
        """
        lease = self.milvus_lock
        if lease is not None and not lease.beat() and lease.lost.is_set():
            raise LockLostError("this refresh stopped before publishing its build: the refresh lock in Milvus was "
                                "taken over while it ran (its lease expired, so this process had stalled); "
                                "the other refresh carries on")

    def release(self) -> None:
        try:
            if self.milvus_lock is not None:
                self.milvus_lock.release()
        finally:
            self.file_lock.release()

    def __enter__(self) -> RefreshLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_refresh_lock(settings: Any, *, clock: Callable[[], float] = time.time) -> RefreshLock:
    """Take every refresh lock these settings call for, or raise LockBusyError naming the holder.

    The flock comes first (a second refresh on this machine is refused without a network call);
    with ``vector_store == "milvus"`` the Milvus lease follows, so a refresh on any machine sharing
    the server and prefix is refused too. ``clock`` decides the lease's expiry (tests move it).
    """
    lock = FileLock(Path(settings.data_dir) / REFRESH_LOCK, "an index refresh").acquire()
    if getattr(settings, "vector_store", "scann") != "milvus":
        return RefreshLock(lock)
    from core.index.milvus_lock import MilvusLockBusy, MilvusRefreshLock

    try:
        shared = MilvusRefreshLock(settings, clock=clock).acquire()
    except MilvusLockBusy as busy:
        lock.release()
        lease = busy.lease
        who = f"pid {lease.pid} on {lease.host}" if lease.pid else f"on {lease.host or 'another machine'}"
        raise LockBusyError(f"an index refresh is already running ({who})", lease.pid, lease.host or None) from None
    except BaseException:
        lock.release()
        raise
    return RefreshLock(lock, shared)


def refresh_holder_of(settings: Any, *, clock: Callable[[], float] = time.time) -> RefreshHolder | None:
    """Who runs a refresh for these settings: the data directory's flock holder, else (on Milvus)
    the holder of a fresh lease, on any machine. None when nobody does."""
    pid = refresh_holder(Path(settings.data_dir))
    if pid is not None:
        return RefreshHolder(pid)
    if getattr(settings, "vector_store", "scann") != "milvus":
        return None
    from core.index.milvus_lock import holder

    lease = holder(settings, clock=clock)
    return None if lease is None else RefreshHolder(lease.pid or 0, lease.host or None)
