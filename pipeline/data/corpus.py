"""Resolve ``data.corpus`` to the text of the train, valid and test splits, and fingerprint it.

The splits are streamed (:func:`open_corpus`, blocks of whole lines from
:mod:`pipeline.data.text_blocks`), so a corpus of any size is read in bounded memory;
:func:`load_corpus` joins them into strings for small texts. :func:`fingerprint` says what the
content is, so that an edited corpus file reruns the pipeline (the ``corpus`` stage of dvc.yaml
writes it to data/corpus.json).

Each kind of source is one :class:`CorpusSource` in :data:`SOURCES`, tried in order; the first whose
``matches`` accepts the spec fingerprints it, opens its splits and, in the error for a spec that
no source takes, ``describe``\\ s itself:

- ``builtin:NAME`` (:class:`BuiltinSource`): a text made offline, one entry of :data:`BUILTIN_TEXTS`
  (``builtin:python-docs``: CPython 3.11.7's reference documentation, a snapshot in
  ``pipeline/data/snapshots``; the paired corpora ``builtin:cmudict`` and
  ``builtin:dates`` of :mod:`pipeline.data.builtin_pairs`), split by ``data.split`` at line starts,
  never between two lines of one group;
- an ``https://`` URL (:class:`UrlSource`) whose sha256 (``data.sha256``) is required and checked,
  downloaded once into ``data/downloads``, split by ``data.split``;
- a folder (:class:`FolderSource`) holding ``train.txt``/``valid.txt``/``test.txt``, used as given;
- a UTF-8 text file (:class:`TextFileSource`), split by ``data.split`` at line starts.

How to add a source. A new builtin text is one entry of :data:`BUILTIN_TEXTS`: its spec
(``builtin:NAME``) -> a :class:`Builtin` (a function returning the text, a short description,
what else the text depends on, recorded in the fingerprint, and optionally ``group``, a key of a
line). Every builtin is split the one way: by ``data.split`` at line starts, each cut moved on past
the lines whose ``group`` key is the key of the line before it, so lines of one key (adjacent in
the text) never straddle two splits; without ``group`` every line is a group of its own. A builtin
that must be split by some unit (``builtin:cmudict``: by headword, every pronunciation of a word in
one split) writes its units in a fixed shuffled order, their lines adjacent, and names the key;
its fingerprint stays the sha256 of the one text. A new kind of source is a
:class:`CorpusSource` subclass (``matches``, ``fingerprint``, ``open``, ``describe``) and one
instance in :data:`SOURCES`, placed before any source that would also match its specs. Nothing
else changes: :func:`fingerprint`, :func:`open_corpus` and the errors go through the table. A
sha256 is checked with :func:`check_sha256` only. Keep an existing source's fingerprint keys
stable: other keys rewrite data/corpus.json and rerun ``prepare``. The split names live in
:mod:`pipeline.data.splits` (re-exported here), so that consumers of prepared data do not depend
on this module.
"""
from __future__ import annotations

import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from pipeline.data import builtin_music, builtin_pairs
from pipeline.data.file_hashes import blocks, file_sha256, remembered_sha256, sha256_of
from pipeline.data.images import ImageSource
from pipeline.data.splits import SPLITS   # also imported from here by older code
from pipeline.data.text_blocks import BLOCK_BYTES, ScannedText, scan
from pipeline.errors import SeqlabError
from pipeline.io import atomic_write
from pipeline.paths import SNAPSHOTS



# --- the splits of an opened corpus ------------------------------------------------------------

@dataclass(frozen=True)
class Corpus:
    train: str
    valid: str
    test: str
    source: str
    hygiene: dict = field(default_factory=dict)   # what :func:`clean_text` changed, summed over the files

    def split(self, name: str) -> str:
        return getattr(self, name)


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


def _summed(counts: list[dict]) -> dict:
    return {k: sum(c[k] for c in counts) for k in counts[0]} if counts else {}


def _checked(file: ScannedText) -> ScannedText:
    if not file.has_text:
        raise SeqlabError(f"{file.where}: the corpus is empty")
    return file


def _line_before(file: ScannedText, pos: int) -> str:
    """The line that ends (with its newline) at ``pos``, without the newline; any length."""
    width = 4096
    while True:
        lo = max(0, pos - 1 - width)
        text = "".join(file.read(lo, pos - 1))
        nl = text.rfind("\n")
        if nl != -1 or lo == 0:
            return text[nl + 1:]
        width *= 2


def _group_start(file: ScannedText, pos: int, group: Callable[[str], str]) -> int:
    """The first line start at or after the line start ``pos`` whose line's ``group`` key differs
    from the line's before it (the end of the file if none): lines of one key stay in one split."""
    if pos <= 0 or pos >= file.chars:
        return pos
    key, width = group(_line_before(file, pos)), 4096
    while True:
        end = min(file.chars, pos + width)
        *lines, tail = "".join(file.read(pos, end)).split("\n")    # tail: after the last newline
        at = pos
        for line in lines:
            if group(line) != key:
                return at
            at += len(line) + 1
        if end == file.chars:
            return at if tail and group(tail) != key else end
        width *= 2


def split_file(file: ScannedText, fractions: list[float], where: str,
               group: Callable[[str], str] | None = None) -> dict[str, SplitText]:
    """Cut a file by character fractions, each cut moved forward to the next line start (and on to
    the next change of ``group``, a key of a line without its newline, when given)."""
    total, cuts = file.chars, []
    acc = 0.0
    for frac in fractions[:2]:
        acc += frac
        pos = int(round(acc * total))
        nl = file.next_line_start(max(pos - 1, 0))
        if nl is not None and group is not None:
            nl = _group_start(file, nl, group)
        cuts.append(max(pos if nl is None else nl, cuts[-1] if cuts else 0))
    bounds = [0, *cuts, total]
    parts = {name: SplitText(name, file, bounds[i], bounds[i + 1]) for i, name in enumerate(SPLITS)}
    for name, part in parts.items():
        if not file.has_text_in(part.start, part.end):
            raise SeqlabError(f"{where}: corpus too short for data.split={fractions}: the {name} split "
                              f"would be empty ({total} characters in all)")
    return parts


def _split_one_file(file: ScannedText, fractions: list[float], where: str, source: str,
                    group: Callable[[str], str] | None = None) -> CorpusText:
    """A single text (a builtin, a download, a file) cut into the three splits by ``data.split``."""
    file = _checked(file)
    return CorpusText(split_file(file, fractions, where, group), source, file.hygiene)


# --- sha256: the one check against an expected digest (hashing lives in pipeline.data.file_hashes) ---

def sha256_matches(actual: str, expected: str) -> bool:
    """Whether the hex digest ``actual`` is the ``expected`` one (written in either case)."""
    return actual == expected.lower()


def check_sha256(where: str, actual: str, expected: str, consequence: str = "") -> None:
    """Raise unless ``actual`` is ``expected``; the error names ``where`` (a file or URL) and both
    digests, so that a user can tell a corrupted download from a wrong pin. ``consequence``: what
    was done about it, appended to the message."""
    if not sha256_matches(actual, expected):
        raise SeqlabError(f"data.corpus: {where}: sha256 mismatch: expected {expected}, got {actual}{consequence}")


def _download(url: str, sha256: str, dest_dir: Path) -> Path:
    """Download once into ``dest_dir``, streamed to disk and hashed on the way (any size); a file
    whose bytes do not match the pin is never kept."""
    name = url.rstrip("/").rsplit("/", 1)[-1] or "corpus.txt"
    dest = dest_dir / f"{sha256[:12]}-{name}"
    if dest.exists() and sha256_matches(file_sha256(dest), sha256):
        return dest

    def written(blocks: Iterable[bytes], out: BinaryIO) -> Iterator[bytes]:
        for block in blocks:
            out.write(block)
            yield block

    def fetch(tmp: Path) -> None:
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as out:
                got = sha256_of(written(blocks(r), out))
        except OSError as e:
            raise SeqlabError(f"data.corpus: could not download {url}: {e}") from None
        check_sha256(url, got, sha256, "; nothing was saved")
    atomic_write(dest, fetch)
    return dest


# --- the sources --------------------------------------------------------------------------------

class CorpusSource(ABC):
    """One kind of ``data.corpus``: how to recognise its specs, fingerprint their content and open
    their splits. An instance in :data:`SOURCES` is all a new kind needs (see the module docstring)."""

    @abstractmethod
    def matches(self, spec: str, root: Path) -> bool:
        """Whether ``spec`` is of this kind (a prefix, or a path under ``root`` that exists)."""

    @abstractmethod
    def fingerprint(self, spec: str, sha256: str | None, root: Path, stats: dict) -> dict[str, str]:
        """What the text is, as ``{name: sha256 or version}`` (the ``files`` of data/corpus.json):
        cheap enough to run at every repro (``stats``: see :func:`~pipeline.data.file_hashes.remembered_sha256`)."""

    @abstractmethod
    def open(self, spec: str, fractions: list[float], sha256: str | None, root: Path,
             block_bytes: int) -> CorpusText:
        """The three splits, streamed (every file scanned once, checked and indexed)."""

    @abstractmethod
    def describe(self) -> str:
        """What such a spec is, in a few words (the error for a spec that no source takes lists them)."""


@dataclass(frozen=True)
class Builtin:
    """A builtin corpus: a function making its text offline, a short description, what else the
    text depends on (recorded in its fingerprint beside the text's sha256), and the key of a line
    (without its newline) that a split keeps together (None: every line on its own)."""
    text: Callable[[], str]
    about: str
    pins: Callable[[], dict[str, str]] = dict
    group: Callable[[str], str] | None = None
    notation: str | None = None     # a music notation ("abc": pipeline.generation.music checks its samples)


# The reference documentation of one CPython release, as its ``pydoc_data.topics`` holds it (79 topics
# joined in name order): a snapshot in the repository, so that the default corpus is the same text
# whichever Python patch release runs the pipeline (each release edits these pages).
PYTHON_DOCS_RELEASE = "3.11.7"
PYTHON_DOCS_SNAPSHOT = SNAPSHOTS / f"python-docs-{PYTHON_DOCS_RELEASE}.txt.gz"


def _builtin_python_docs() -> str:
    """The English text of the Python reference documentation of CPython :data:`PYTHON_DOCS_RELEASE`."""
    import gzip
    return gzip.decompress(PYTHON_DOCS_SNAPSHOT.read_bytes()).decode("utf-8")


def _python_docs_release() -> dict[str, str]:
    return {"python": PYTHON_DOCS_RELEASE}


# spec -> builtin: a new builtin corpus is one entry here
BUILTIN_TEXTS: dict[str, Builtin] = {
    "builtin:python-docs": Builtin(_builtin_python_docs, "the Python reference documentation, from CPython",
                                   _python_docs_release),
    "builtin:cmudict": Builtin(builtin_pairs.cmudict_text,
                               "English words -> their phonemes (the CMU Pronouncing Dictionary), split by headword",
                               builtin_pairs.cmudict_pins, group=builtin_pairs.headword),
    "builtin:dates": Builtin(builtin_pairs.dates_text,
                             "dates as 20 locales write them -> ISO 8601 (CLDR, through Babel)",
                             builtin_pairs.dates_pins),
    "builtin:abc-folk": Builtin(builtin_music.abc_folk_text,
                                "O'Neill's Irish folk tunes in ABC notation (music21's corpus), one tune a line",
                                builtin_music.abc_folk_pins, notation="abc"),
}
BUILTINS = tuple(BUILTIN_TEXTS)    # the builtin specs, as older code imports them


class BuiltinSource(CorpusSource):
    """``builtin:NAME``: a text of :data:`BUILTIN_TEXTS`, split by ``data.split`` (keeping its groups)."""

    def matches(self, spec: str, root: Path) -> bool:
        return spec.startswith("builtin:")

    def _builtin(self, spec: str) -> Builtin:
        try:
            return BUILTIN_TEXTS[spec]
        except KeyError:
            raise SeqlabError(f"data.corpus: unknown builtin {spec!r}; available: {', '.join(BUILTIN_TEXTS)}") from None

    def fingerprint(self, spec, sha256, root, stats):
        b = self._builtin(spec)
        return {spec: sha256_of([b.text().encode("utf-8")]), **b.pins()}

    def open(self, spec, fractions, sha256, root, block_bytes):
        b = self._builtin(spec)
        file = scan(spec, data=b.text().encode("utf-8"), block_bytes=block_bytes)
        return _split_one_file(file, fractions, spec, spec, b.group)

    def describe(self) -> str:
        return f"a builtin ({', '.join(BUILTIN_TEXTS)})"


class UrlSource(CorpusSource):
    """``https://...``: pinned by ``data.sha256`` (its fingerprint, so nothing is fetched to
    fingerprint it), downloaded once and checked, split by ``data.split``."""

    def matches(self, spec: str, root: Path) -> bool:
        return spec.startswith("https://")

    @staticmethod
    def _pin(sha256: str | None) -> str:
        if not sha256:
            raise SeqlabError("data.sha256: required when data.corpus is an https URL")
        return sha256

    def fingerprint(self, spec, sha256, root, stats):
        return {spec: self._pin(sha256).lower()}

    def open(self, spec, fractions, sha256, root, block_bytes):
        path = _download(spec, self._pin(sha256), root / "data" / "downloads")
        return _split_one_file(scan(spec, path, block_bytes=block_bytes), fractions, spec, spec)

    def describe(self) -> str:
        return "an https URL (with data.sha256)"


def _local_path(spec: str, root: Path) -> Path:
    return (root / spec) if not Path(spec).is_absolute() else Path(spec)


class FolderSource(CorpusSource):
    """A folder holding ``train.txt``, ``valid.txt`` and ``test.txt``: the splits as given."""

    def matches(self, spec: str, root: Path) -> bool:
        return "://" not in spec and _local_path(spec, root).is_dir()

    def fingerprint(self, spec, sha256, root, stats):
        path = _local_path(spec, root)
        return {f"{s}.txt": remembered_sha256(path / f"{s}.txt", stats) for s in SPLITS if (path / f"{s}.txt").is_file()}

    def open(self, spec, fractions, sha256, root, block_bytes):
        path = _local_path(spec, root)
        missing = [f"{s}.txt" for s in SPLITS if not (path / f"{s}.txt").is_file()]
        if missing:
            raise SeqlabError(f"{path}: a corpus folder needs train.txt, valid.txt and test.txt; "
                              f"missing {', '.join(missing)}")
        files = {s: _checked(scan(str(path / f"{s}.txt"), path / f"{s}.txt", block_bytes=block_bytes))
                 for s in SPLITS}
        splits = {s: SplitText(s, f, 0, f.chars) for s, f in files.items()}
        return CorpusText(splits, str(spec), _summed([f.hygiene for f in files.values()]))

    def describe(self) -> str:
        return "a folder (with train.txt, valid.txt and test.txt)"


class TextFileSource(CorpusSource):
    """A UTF-8 text file, split by ``data.split``."""

    def matches(self, spec: str, root: Path) -> bool:
        return "://" not in spec and _local_path(spec, root).is_file()

    def fingerprint(self, spec, sha256, root, stats):
        path = _local_path(spec, root)
        return {path.name: remembered_sha256(path, stats)}

    def open(self, spec, fractions, sha256, root, block_bytes):
        path = _local_path(spec, root)
        return _split_one_file(scan(str(path), path, block_bytes=block_bytes), fractions, str(path), str(spec))

    def describe(self) -> str:
        return "a text file"


# every kind of data.corpus, tried in order: a new kind is one entry here
# (an image corpus, first: a builtin or a folder of its own; prepared as images, see pipeline.data.images)
SOURCES: tuple[CorpusSource, ...] = (ImageSource(), BuiltinSource(), UrlSource(), FolderSource(), TextFileSource())


def source_for(spec: str, root: Path = Path(".")) -> CorpusSource:
    """The first source of :data:`SOURCES` that takes ``spec``; SeqlabError naming what would do."""
    for source in SOURCES:
        if source.matches(spec, root):
            return source
    if "://" in spec:
        raise SeqlabError(f"data.corpus: {spec!r}: only https:// URLs are supported")
    kinds = [s.describe() for s in SOURCES]
    raise SeqlabError(f"data.corpus: {spec!r} is neither {', '.join(kinds[:-1])} nor {kinds[-1]}")


# --- what other modules call --------------------------------------------------------------------

def fingerprint(spec: str, sha256: str | None = None, root: Path = Path("."), stats: dict | None = None) -> dict:
    """What the corpus ``spec`` holds, as ``{"source", "files": {name: sha256}}``: the builtin's text,
    a file's or a folder's three files' bytes, an URL's pinned sha256. ``stats``: see
    :func:`~pipeline.data.file_hashes.remembered_sha256` (updated in place). Errors like :func:`load_corpus`'s."""
    stats = {} if stats is None else stats
    return {"source": spec, "files": source_for(spec, root).fingerprint(spec, sha256, root, stats)}


def open_corpus(spec: str, fractions: list[float], sha256: str | None = None, root: Path = Path("."),
                block_bytes: int = BLOCK_BYTES) -> CorpusText:
    """Scan ``data.corpus`` (every file read once, checked and indexed) and say where each split lies."""
    return source_for(spec, root).open(spec, fractions, sha256, root, block_bytes)


def load_corpus(spec: str, fractions: list[float], sha256: str | None = None,
                root: Path = Path(".")) -> Corpus:
    """The splits as strings: for texts that fit in memory (tests, tools); the stages stream."""
    c = open_corpus(spec, fractions, sha256, root)
    return Corpus(*("".join(c.split(s).chunks()) for s in SPLITS), source=c.source, hygiene=c.hygiene)
