"""One process at a time per model: an exclusive lock that dies with its holder.

``fcntl.flock`` locks belong to the open file: the kernel releases them when the holder exits in
any way, ``kill -9`` included, so a crashed run never leaves a stale lock behind. The file holds
the holder's PID, for the message that refuses a second process.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import SeqlabError


@contextmanager
def exclusive(path: Path, what: str, wait: bool = False):
    """Hold the lock ``path`` for the duration. If another process holds it: SeqlabError naming the
    holder's PID (``what`` says what is locked, for the message), or with ``wait``, wait for it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise SeqlabError(f"{what} is already running in process {holder} (lock {path}); wait for it "
                              f"to finish or stop it (kill {holder}), then run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)        # releases the lock
