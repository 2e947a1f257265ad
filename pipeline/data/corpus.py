"""Resolve ``data.corpus`` to the text of the train, valid and test splits, and fingerprint it.

The splits are streamed (:func:`open_corpus`, blocks of whole lines from
:mod:`pipeline.data.text_blocks`), so a corpus of any size is read in bounded memory;
:func:`load_corpus` joins them into strings for small texts.

Sources: ``builtin:python-docs`` (offline, ships with CPython), a UTF-8 text file split by
``data.split`` at line boundaries, a folder holding ``train.txt``/``valid.txt``/``test.txt`` used as
given, or an ``https://`` URL whose sha256 must match (downloaded once into ``data/downloads``).
:func:`fingerprint` says what the content is, so that an edited corpus file reruns the pipeline
(the ``corpus`` stage of dvc.yaml).
"""
from __future__ import annotations

import hashlib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pipeline.data.text_blocks import BLOCK_BYTES, ScannedText, scan
from pipeline.errors import SeqlabError
from pipeline.io import atomic_write

SPLITS = ("train", "valid", "test")
BUILTINS = ("builtin:python-docs",)


@dataclass(frozen=True)
class Corpus:
    train: str
    valid: str
    test: str
    source: str
    hygiene: dict = field(default_factory=dict)   # what :func:`clean_text` changed, summed over the files

    def split(self, name: str) -> str:
        return getattr(self, name)


def _summed(counts: list[dict]) -> dict:
    return {k: sum(c[k] for c in counts) for k in counts[0]} if counts else {}


def _builtin_python_docs() -> str:
    """The English text of the Python reference documentation that ships with CPython."""
    from pydoc_data import topics
    return "\n\n".join(topics.topics[k].strip("\n") for k in sorted(topics.topics)) + "\n"


def _download(url: str, sha256: str, dest_dir: Path) -> Path:
    """Download once into ``dest_dir``, streamed to disk and hashed on the way (any size)."""
    name = url.rstrip("/").rsplit("/", 1)[-1] or "corpus.txt"
    dest = dest_dir / f"{sha256[:12]}-{name}"
    if dest.exists() and _file_sha256(dest, {}) == sha256.lower():
        return dest

    def fetch(tmp: Path) -> None:
        h = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as out:
                for block in iter(lambda: r.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
        except OSError as e:
            raise SeqlabError(f"data.corpus: could not download {url}: {e}") from None
        if h.hexdigest() != sha256.lower():
            raise SeqlabError(f"data.corpus: {url}: sha256 mismatch: expected {sha256}, got {h.hexdigest()}; "
                              "nothing was saved")
    atomic_write(dest, fetch)
    return dest


def _file_sha256(path: Path, stats: dict) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (any size in bounded memory); ``stats`` maps a
    path to (size, mtime_ns, sha256) seen before, so an unchanged file is not read again."""
    st = path.stat()
    key = str(path.resolve())
    seen = stats.get(key)
    if seen and seen[0] == st.st_size and seen[1] == st.st_mtime_ns:
        return seen[2]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    stats[key] = [st.st_size, st.st_mtime_ns, h.hexdigest()]
    return h.hexdigest()


def fingerprint(spec: str, sha256: str | None = None, root: Path = Path("."), stats: dict | None = None) -> dict:
    """What the corpus ``spec`` holds, as ``{"source", "files": {name: sha256}}``: the builtin's text,
    a file's or a folder's three files' bytes, an URL's pinned sha256. ``stats``: see
    :func:`_file_sha256` (updated in place). Errors like :func:`load_corpus`'s."""
    stats = {} if stats is None else stats
    if spec.startswith("builtin:"):
        if spec not in BUILTINS:
            raise SeqlabError(f"data.corpus: unknown builtin {spec!r}; available: {', '.join(BUILTINS)}")
        import sys
        files = {spec: hashlib.sha256(_builtin_python_docs().encode("utf-8")).hexdigest(),
                 "python": sys.version.split()[0]}
    elif spec.startswith("https://"):
        if not sha256:
            raise SeqlabError("data.sha256: required when data.corpus is an https URL")
        files = {spec: sha256.lower()}
    else:
        path = _local(spec, root)
        if path.is_dir():
            files = {f"{s}.txt": _file_sha256(path / f"{s}.txt", stats) for s in SPLITS
                     if (path / f"{s}.txt").is_file()}
        else:
            files = {path.name: _file_sha256(path, stats)}
    return {"source": spec, "files": files}


def _local(spec: str, root: Path) -> Path:
    """The file or folder a local ``data.corpus`` names; SeqlabError if it is neither."""
    if "://" in spec:
        raise SeqlabError(f"data.corpus: {spec!r}: only https:// URLs are supported")
    path = (root / spec) if not Path(spec).is_absolute() else Path(spec)
    if not (path.is_dir() or path.is_file()):
        raise SeqlabError(f"data.corpus: {spec!r} is neither a builtin, an https URL, a file nor a folder")
    return path



@dataclass(frozen=True)
class SplitText:
    """One split: characters ``[start, end)`` of a scanned file, streamed by :meth:`chunks`."""
    name: str
    file: ScannedText
    start: int
    end: int

    @property
    def chars(self) -> int:
        return self.end - self.start

    def chunks(self) -> Iterator[str]:
        """The split's text in pieces that end at line ends (but perhaps the last)."""
        return self.file.read(self.start, self.end)


@dataclass(frozen=True)
class CorpusText:
    splits: dict[str, SplitText]
    source: str
    hygiene: dict          # what cleaning changed, summed over the files

    def split(self, name: str) -> SplitText:
        return self.splits[name]


def _checked(file: ScannedText) -> ScannedText:
    if not file.has_text:
        raise SeqlabError(f"{file.where}: the corpus is empty")
    return file


def split_file(file: ScannedText, fractions: list[float], where: str) -> dict[str, SplitText]:
    """Cut a file by character fractions, each cut moved forward to the next line start."""
    total, cuts = file.chars, []
    acc = 0.0
    for frac in fractions[:2]:
        acc += frac
        pos = int(round(acc * total))
        nl = file.next_line_start(max(pos - 1, 0))
        cuts.append(max(pos if nl is None else nl, cuts[-1] if cuts else 0))
    bounds = [0, *cuts, total]
    parts = {name: SplitText(name, file, bounds[i], bounds[i + 1]) for i, name in enumerate(SPLITS)}
    for name, part in parts.items():
        if not file.has_text_in(part.start, part.end):
            raise SeqlabError(f"{where}: corpus too short for data.split={fractions}: the {name} split "
                              f"would be empty ({total} characters in all)")
    return parts


def open_corpus(spec: str, fractions: list[float], sha256: str | None = None, root: Path = Path("."),
                block_bytes: int = BLOCK_BYTES) -> CorpusText:
    """Scan ``data.corpus`` (every file read once, checked and indexed) and say where each split lies."""
    if spec.startswith("builtin:"):
        if spec not in BUILTINS:
            raise SeqlabError(f"data.corpus: unknown builtin {spec!r}; available: {', '.join(BUILTINS)}")
        file = scan(spec, data=_builtin_python_docs().encode("utf-8"), block_bytes=block_bytes)
        return CorpusText(split_file(file, fractions, spec), spec, file.hygiene)
    if spec.startswith("https://"):
        if not sha256:
            raise SeqlabError("data.sha256: required when data.corpus is an https URL")
        path = _download(spec, sha256, root / "data" / "downloads")
        file = _checked(scan(spec, path, block_bytes=block_bytes))
        return CorpusText(split_file(file, fractions, spec), spec, file.hygiene)
    path = _local(spec, root)
    if path.is_dir():
        missing = [f"{s}.txt" for s in SPLITS if not (path / f"{s}.txt").is_file()]
        if missing:
            raise SeqlabError(f"{path}: a corpus folder needs train.txt, valid.txt and test.txt; "
                              f"missing {', '.join(missing)}")
        files = {s: _checked(scan(str(path / f"{s}.txt"), path / f"{s}.txt", block_bytes=block_bytes))
                 for s in SPLITS}
        splits = {s: SplitText(s, f, 0, f.chars) for s, f in files.items()}
        return CorpusText(splits, str(spec), _summed([f.hygiene for f in files.values()]))
    file = _checked(scan(str(path), path, block_bytes=block_bytes))
    return CorpusText(split_file(file, fractions, str(path)), str(spec), file.hygiene)


def load_corpus(spec: str, fractions: list[float], sha256: str | None = None,
                root: Path = Path(".")) -> Corpus:
    """The splits as strings: for texts that fit in memory (tests, tools); the stages stream."""
    c = open_corpus(spec, fractions, sha256, root)
    return Corpus(*("".join(c.split(s).chunks()) for s in SPLITS), source=c.source, hygiene=c.hygiene)
