"""sha256 of files and texts, read in blocks (any size in bounded memory), and remembered per file.

Shared by every corpus source, text (:mod:`pipeline.data.corpus`) and image
(:mod:`pipeline.data.images`): the ``corpus`` stage runs at every repro, so an unchanged file is
never read again (:func:`remembered_sha256`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

HASH_BLOCK = 1 << 20     # bytes read at a time when hashing: any size in bounded memory


def blocks(f: BinaryIO) -> Iterator[bytes]:
    return iter(lambda: f.read(HASH_BLOCK), b"")


def sha256_of(pieces: Iterable[bytes]) -> str:
    """Hex sha256 of the concatenated ``pieces``: one hasher for files, downloads and texts."""
    h = hashlib.sha256()
    for block in pieces:
        h.update(block)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in :data:`HASH_BLOCK` blocks (any size in bounded memory)."""
    with open(path, "rb") as f:
        return sha256_of(blocks(f))


def remembered_sha256(path: Path, stats: dict) -> str:
    """:func:`file_sha256`, remembered: ``stats`` maps a path to (size, mtime_ns, sha256) seen before,
    so an unchanged file is not read again (the ``corpus`` stage runs at every repro)."""
    st = path.stat()
    key = str(path.resolve())
    seen = stats.get(key)
    if seen and seen[0] == st.st_size and seen[1] == st.st_mtime_ns:
        return seen[2]
    digest = file_sha256(path)
    stats[key] = [st.st_size, st.st_mtime_ns, digest]
    return digest
