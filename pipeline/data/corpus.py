"""Resolve ``data.corpus`` to the text of the train, valid and test splits, and fingerprint it.

Sources: ``builtin:python-docs`` (offline, ships with CPython), a UTF-8 text file split by
``data.split`` at line boundaries, a folder holding ``train.txt``/``valid.txt``/``test.txt`` used as
given, or an ``https://`` URL whose sha256 must match (downloaded once into ``data/downloads``).
:func:`fingerprint` says what the content is, so that an edited corpus file reruns the pipeline
(the ``corpus`` stage of dvc.yaml).
"""
from __future__ import annotations

import hashlib
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

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


# C0 control characters and DEL other than tab and newline (a carriage return is a line end)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(text: str, where: str) -> tuple[str, dict]:
    """What a user expects of a text corpus, done and counted: a leading byte-order mark is removed,
    CRLF and lone CR line ends become LF; any other control character (NUL, form feed, escape, ...)
    is an error naming the file, line, column and character offset. Returns ``(text, counts)``."""
    bom = text.startswith("\ufeff")
    if bom:
        text = text[1:]
    crlf, cr = text.count("\r\n"), 0
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        cr = text.count("\r")
        text = text.replace("\r", "\n")
    bad = _CONTROL.search(text)
    if bad:
        at = bad.start()
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        raise SeqlabError(f"{where}: control character U+{ord(bad.group()):04X} at line {line}, column {column} "
                          f"(character offset {at + bom}); a text corpus holds none but tab and newline: "
                          "remove it or convert the file to text")
    return text, {"bom_removed": int(bom), "crlf_line_ends": crlf, "cr_line_ends": cr}


def _summed(counts: list[dict]) -> dict:
    return {k: sum(c[k] for c in counts) for k in counts[0]} if counts else {}


def decode_utf8(data: bytes, where: str) -> str:
    """Decode strictly; the error names the file and the byte offset of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SeqlabError(f"{where}: not valid UTF-8 at byte offset {e.start} "
                          f"(byte 0x{data[e.start]:02x}); convert the file to UTF-8") from None


def _builtin_python_docs() -> str:
    """The English text of the Python reference documentation that ships with CPython."""
    from pydoc_data import topics
    return "\n\n".join(topics.topics[k].strip("\n") for k in sorted(topics.topics)) + "\n"


def split_text(text: str, fractions: list[float], where: str) -> tuple[str, str, str]:
    """Cut ``text`` by character fractions, each cut moved forward to the next line start."""
    cuts: list[int] = []
    acc = 0.0
    for frac in fractions[:2]:
        acc += frac
        pos = int(round(acc * len(text)))
        nl = text.find("\n", max(pos - 1, 0))  # pos itself when a line starts there
        cuts.append(max(nl + 1 if nl != -1 else pos, cuts[-1] if cuts else 0))
    parts = (text[:cuts[0]], text[cuts[0]:cuts[1]], text[cuts[1]:])
    for name, part in zip(SPLITS, parts):
        if not part.strip():
            raise SeqlabError(f"{where}: corpus too short for data.split={fractions}: the {name} split "
                              f"would be empty ({len(text)} characters in all)")
    return parts


def _read_file(path: Path, where: str | None = None) -> tuple[str, dict]:
    """A corpus file's text, decoded and cleaned (:func:`clean_text`), and what cleaning changed."""
    text, counts = clean_text(decode_utf8(path.read_bytes(), str(path)), where or str(path))
    if not text.strip():
        raise SeqlabError(f"{path}: the corpus is empty")
    return text, counts


def _download(url: str, sha256: str, dest_dir: Path) -> Path:
    name = url.rstrip("/").rsplit("/", 1)[-1] or "corpus.txt"
    dest = dest_dir / f"{sha256[:12]}-{name}"
    if dest.exists() and hashlib.sha256(dest.read_bytes()).hexdigest() == sha256:
        return dest
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read()
    except OSError as e:
        raise SeqlabError(f"data.corpus: could not download {url}: {e}") from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha256.lower():
        raise SeqlabError(f"data.corpus: {url}: sha256 mismatch: expected {sha256}, got {got}; "
                          "nothing was saved")
    atomic_write(dest, lambda t: t.write_bytes(data))
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


def load_corpus(spec: str, fractions: list[float], sha256: str | None = None,
                root: Path = Path(".")) -> Corpus:
    if spec.startswith("builtin:"):
        if spec not in BUILTINS:
            raise SeqlabError(f"data.corpus: unknown builtin {spec!r}; available: {', '.join(BUILTINS)}")
        text, counts = clean_text(_builtin_python_docs(), spec)
        return Corpus(*split_text(text, fractions, spec), source=spec, hygiene=counts)
    if spec.startswith("https://"):
        if not sha256:
            raise SeqlabError("data.sha256: required when data.corpus is an https URL")
        text, counts = _read_file(_download(spec, sha256, root / "data" / "downloads"), spec)
        return Corpus(*split_text(text, fractions, spec), source=spec, hygiene=counts)
    path = _local(spec, root)
    if path.is_dir():
        missing = [f"{s}.txt" for s in SPLITS if not (path / f"{s}.txt").is_file()]
        if missing:
            raise SeqlabError(f"{path}: a corpus folder needs train.txt, valid.txt and test.txt; "
                              f"missing {', '.join(missing)}")
        texts, counts = zip(*(_read_file(path / f"{s}.txt") for s in SPLITS))
        return Corpus(*texts, source=str(spec), hygiene=_summed(list(counts)))
    text, counts = _read_file(path)
    return Corpus(*split_text(text, fractions, str(path)), source=str(spec), hygiene=counts)
