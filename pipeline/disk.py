"""Free space, checked before a long step writes: a full disk is one clear line before the work,
not an OSError after it (atomic writes then leave nothing half-written, and remove their
temporary files on failure as on success)."""
from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.errors import SeqlabError

MARGIN = 64 * 2**20        # left free for everything else the machine writes meanwhile


def _size(n: float) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def require_free(folder: Path, need_bytes: float, what: str) -> None:
    """SeqlabError unless the disk holding ``folder`` (or its nearest existing parent) has
    ``need_bytes`` plus :data:`MARGIN` free; ``what`` says which step needs it."""
    where = Path(folder).resolve()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if free < need_bytes + MARGIN:
        raise SeqlabError(f"{folder}: {what} needs about {_size(need_bytes)} (and {_size(MARGIN)} to spare) but "
                          f"only {_size(free)} is free on that disk; free some space, or move the repository "
                          "to a larger disk, and run again")
