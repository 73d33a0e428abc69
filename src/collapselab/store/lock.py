"""The run lock: one process at a time uses a run directory (``flock``; a killed holder's lock is free again)."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from collapselab.errors import ConfigError, StoreError
from collapselab.store.layout import LOCK


class RunLock:
    """An exclusive ``flock`` on ``<run>/.collapselab.lock`` holding the owner's pid.

    Hand-written on fcntl rather than ``filelock``: the message must name the holder's pid, and a flock
    dies with its process, so a killed run never leaves a lock that blocks ``resume``.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK
        self.fd: int | None = None

    def check_free(self) -> None:
        """Raise the "in use by pid N" :class:`ConfigError` when another process holds the lock; creates nothing
        (a folder without a lock file is free)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            self._flock(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _flock(self, fd: int) -> None:
        """Take the lock on ``fd`` without waiting, or raise naming the holder."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise ConfigError(f"{self.path.parent}: in use by pid {holder} (a run, resume or report holds it; "
                              f"wait for it or stop it)") from None

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise ConfigError(f"{self.path.parent}: the run directory is not writable ({e.strerror})") from None
            raise StoreError(f"cannot create {self.path}: {e.strerror}") from None
        try:
            self._flock(fd)
        except ConfigError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None
