"""Atomic file writes, so that a failed stage never leaves a half-written output behind."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def replaced_folder(folder: Path):
    """Yield a temporary sibling of ``folder`` to fill; on success it replaces ``folder`` as a whole,
    on failure it is removed and ``folder`` is left as it was: never a half-written folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda t: t.write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_npy(path: Path, array: np.ndarray) -> None:
    def _w(t: Path) -> None:
        with open(t, "wb") as f:
            np.save(f, array, allow_pickle=False)
    atomic_write(path, _w)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        from pipeline.errors import SeqlabError
        raise SeqlabError(f"{path}: not found (run the stage that produces it first: dvc repro)") from None


class NpyAppender:
    """A 1-D ``.npy`` file written piece by piece (its length unknown until the end), so an array of
    any size goes to disk in bounded memory; ``np.load(path, mmap_mode="r")`` reads it back.

    The header is reserved up front and written by :meth:`close`; it has the 128 bytes
    ``np.save`` gives a 1-D array, so the file is the one ``np.save`` would write.
    """
    HEADER = 128

    def __init__(self, path: Path, dtype):
        self.path, self.dtype, self.length = Path(path), np.dtype(dtype), 0
        self._f = open(self.path, "wb")
        self._f.write(b"\0" * self.HEADER)

    def append(self, values: np.ndarray) -> None:
        a = np.ascontiguousarray(values, dtype=self.dtype).reshape(-1)
        self._f.write(a.tobytes())
        self.length += a.size

    def close(self) -> None:
        import io
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            head, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                   "shape": (self.length,)})
        if len(head.getvalue()) != self.HEADER:
            raise AssertionError(f"unexpected .npy header size {len(head.getvalue())}")
        self._f.seek(0)
        self._f.write(head.getvalue())
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        else:
            self._f.close()
