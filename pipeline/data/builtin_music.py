"""builtin:abc-folk: folk tunes in ABC notation, one tune a line, and the way back to music.

The text (:func:`abc_folk_text`) is made offline from the ABC files that music21 ships in its
corpus folder (read as text, found without importing music21; nothing is parsed to build it),
deterministically: no dict or set order, no ``hash()``, no :mod:`random`; the tunes are in sha256
order of their line (:func:`_order`), so a split of the text at line fractions is a random split by
tune. With music21 10.5.1 it is 1,837 lines, 460,400 characters (485,316 bytes: the one non-ASCII
character is :data:`LINE_BREAK`), built in about 0.05 s (cached per process all the same, since
``data.corpus`` asks for it twice).

Collection and licence. Only ``oneills1850`` is read: O'Neill's Music of Ireland (the "1850", Lyon &
Healy, Chicago, 1903: out of copyright), as transcribed to ABC by the volunteers of the O'Neill's
project (their names are in the dropped ``Z:`` fields: Norbert Paap, Henrik Norbeck, Bob Safranek,
John Chambers, ...). Its files hold no licence of their own; music21's ``corpus/license.txt`` covers
them: the corpus is "distributed with the permission of the encoders (and, where needed, the
composers or arrangers) and where permitted under United States copyright law", "to the best of
our knowledge, [each] piece of music in the corpus is either out of copyright in the United States
or is licensed for use, though there may be restrictions on commercial use". music21 itself is
BSD-3-Clause. The other folk collections are left out: ``essenFolksong`` (8,514 tunes) has a
licence that allows "non-commercial distribution and use of these files in music21" only (its
``license.txt``: "The legal status of the Essen folksong database is unclear"); ``ryansMammoth``
(1,059), ``airdsAirs`` (1,180), ``miscFolk`` (185) and ``nottingham-dataset`` (2) state no licence
beyond ``corpus/license.txt``, and ``miscFolk`` holds multi-voice tunes.

A line. A tune (from its ``X:`` line to the blank line that ends it, :func:`abc_tunes`) becomes one
line (:func:`normal_tune`): the header keeps ``M:`` (metre), ``L:`` (unit note length) and ``K:``
(key, last, as ABC requires); titles, composers, book, notes, sources, transcribers, rhythm names,
tempo, lyrics (``W:``/``w:``), ``%`` comments and every other field are dropped (so that a model
learns music, not titles), in the header and in the body, where a ``M:``/``L:``/``K:`` change is
kept. Tabs become spaces, trailing spaces and empty lines go, and the tune's lines are joined by
:data:`LINE_BREAK` (U+2424 SYMBOL FOR NEWLINE), so a line holds no tab or newline;
:func:`tune_abc` splits it back. Of the 2,009 tunes read (music21 10.5.1), 170 are left out as a
second transcription of a tune number kept before (the files overlap: 0626-0635 and 0626-0700, two
transcriptions of 732-758 and of 1116-1135, ...; the number is the ``B:`` field's, else ``X:``'s;
the first file in name order wins), which would otherwise put near-copies in train and valid; 2 as
longer than :data:`ABC_FOLK_MAX_CHARS` characters (the median line is 233, the 90th percentile
344); none is empty, multi-voice, or an exact duplicate (rules kept for other versions, counted
by :func:`abc_folk_tunes`).

Back to music: :func:`tune_abc` (a line as an ABC file's text), :func:`parses` (music21 reads it
to at least one note; every one of the 1,837 corpus tunes does, at about 0.06 s a tune),
:func:`write_tune` (``.abc`` always, ``.mid`` when it parses; the MIDI bytes are the same on every
run). music21 is lenient, so :func:`parses` is a low bar: it reads any note letters, skipping or
warning about the rest, which is why a ``K:`` field is required as well.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import io
import re
import warnings
from pathlib import Path
from typing import Iterator

from pipeline.data.packaged import package_folder
from pipeline.errors import SeqlabError

# U+2424 SYMBOL FOR NEWLINE: where a line of the tune ended. ABC is ASCII text, so no tune holds it
# (a tune that does is left out); :func:`tune_abc` splits a line back at it
LINE_BREAK = "\u2424"
# the collections read (folders of music21's corpus), in this order; see the module docstring for why
# the others are not
ABC_FOLK_COLLECTIONS = ("oneills1850",)
# a tune longer than this (characters of its one line, header included) is left out
ABC_FOLK_MAX_CHARS = 1000
# the header fields kept, in this order (K: last, as ABC requires); in the body, these are kept too
# (a change of metre, unit length or key mid-tune); every other field is dropped
KEPT_FIELDS = ("M", "L", "K")

_FIELD = re.compile(r"([A-Za-z+]):(.*)")
_NOTE = re.compile(r"[A-Ga-g]")
_NUMBER = re.compile(r"\d+")


def music21_corpus() -> Path:
    """The folder of music21's bundled corpus, found without importing music21."""
    return package_folder("music21", "builtin:abc-folk") / "corpus"


def abc_folk_pins() -> dict[str, str]:
    try:
        return {"music21": importlib.metadata.version("music21")}
    except importlib.metadata.PackageNotFoundError:
        raise SeqlabError("data.corpus: builtin:abc-folk needs the music21 package (pinned in requirements.txt)") from None


def tune_number(lines: list[str]) -> int | None:
    """The number of a tune in its book: the first number of its ``B:`` (book) field, else of its
    ``X:`` field (in O'Neill's files ``X:`` is the book's number but for a few typing slips, which
    ``B:`` gets right), else None."""
    for letter in ("B", "X"):
        for line in lines:
            if line.startswith(f"{letter}:"):
                number = _NUMBER.search(line)
                if number is not None:
                    return int(number.group())
    return None


def abc_tunes(text: str) -> Iterator[list[str]]:
    """The tunes of an ABC file's text, in file order: each from an ``X:`` line up to the first
    blank line (ABC's end of a tune) or the next ``X:``; text between tunes is skipped."""
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("X:"):
            if current:
                yield current
            current = [line]
        elif current is not None:
            if line.strip():
                current.append(line)
            else:
                yield current
                current = None
    if current:
        yield current


def normal_tune(lines: list[str]) -> tuple[str | None, str]:
    """``(line, "")``: a tune's lines as one corpus line, or ``(None, why)`` when it is left out.

    The header keeps ``M:``, ``L:`` and ``K:`` (the last of each, spaces around the value removed,
    in that order: ``K:`` last); the body keeps its music lines, ``%`` comments cut off, trailing
    spaces and lines left empty removed, tabs made spaces, and its ``M:``/``L:``/``K:`` field
    lines; other fields (titles, notes, lyrics, sources, ...) are dropped. The lines are joined by
    :data:`LINE_BREAK`. Why a tune is left out: ``"no K:"``, ``"voices"`` (a ``V:`` field: several
    voices in one tune), ``"no notes"``, ``"line break"`` (it holds :data:`LINE_BREAK`), ``"long"``
    (over :data:`ABC_FOLK_MAX_CHARS`)."""
    header: dict[str, str] = {}
    body: list[str] = []
    in_body = False
    for raw in lines:
        line = raw.split("%", 1)[0].replace("\t", " ").replace("\r", "").rstrip()
        if not line.strip():
            continue
        field = _FIELD.fullmatch(line) if not line.startswith("|") else None
        if (field is not None and field.group(1) == "V") or "[V:" in line:
            return None, "voices"
        if not in_body:
            if field is None:
                return None, "no K:"       # a music line in the header: the tune's K: is missing
            letter, value = field.group(1), field.group(2).strip()
            if letter in KEPT_FIELDS:
                header[letter] = value
            if letter == "K":
                in_body = True
            continue
        if field is not None:
            if field.group(1) in KEPT_FIELDS:
                body.append(f"{field.group(1)}:{field.group(2).strip()}")
            continue
        body.append(line)
    if not in_body:
        return None, "no K:"
    if not any(_NOTE.search(b) for b in body if not _FIELD.fullmatch(b)):
        return None, "no notes"
    out = [f"{k}:{header[k]}" for k in KEPT_FIELDS if k in header] + body
    if any(LINE_BREAK in b for b in out):
        return None, "line break"
    joined = LINE_BREAK.join(out)
    if len(joined) > ABC_FOLK_MAX_CHARS:
        return None, "long"
    return joined, ""


def _order(name: str, item: str) -> str:
    return hashlib.sha256(f"{name}:{item}".encode("utf-8")).hexdigest()


def abc_folk_tunes() -> tuple[list[str], dict[str, dict[str, int]]]:
    """The corpus lines (without newlines) in sha256 order, and per collection the count of tunes
    read, kept and left out by reason (``"same number"``: a second transcription of a tune number
    that an earlier file, in file-name order, already gave; ``"duplicate"``: the same line as a tune
    kept before; the others as :func:`normal_tune`)."""
    root = music21_corpus()
    seen: set[str] = set()
    kept: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    for collection in ABC_FOLK_COLLECTIONS:
        folder = root / collection
        files = sorted(folder.glob("*.abc"))
        if not files:
            raise SeqlabError(f"data.corpus: builtin:abc-folk found no ABC files in {folder} "
                              "(a music21 install without its corpus?)")
        count = counts.setdefault(collection, {"read": 0, "kept": 0})
        numbers: set[int] = set()
        for file in files:
            # ASCII files; latin-1 reads any byte, so a stray one cannot stop the build
            for tune in abc_tunes(file.read_text(encoding="latin-1")):
                count["read"] += 1
                number = tune_number(tune)
                if number is not None:
                    if number in numbers:
                        count["same number"] = count.get("same number", 0) + 1
                        continue
                    numbers.add(number)
                line, why = normal_tune(tune)
                if line is not None and line in seen:
                    why = "duplicate"
                if line is None or why:
                    count[why] = count.get(why, 0) + 1
                    continue
                seen.add(line)
                kept.append(line)
                count["kept"] += 1
    kept.sort(key=lambda t: _order("abc-folk", t))
    return kept, counts


@functools.cache
def abc_folk_text() -> str:
    """Every tune a line (see :func:`normal_tune`), each ending in a newline, in sha256 order."""
    return "".join(f"{t}\n" for t in abc_folk_tunes()[0])


# --- from a line back to music ---------------------------------------------------------------------

def tune_abc(line: str) -> str:
    """A corpus (or generated) line as an ABC tune text for a parser: ``X:1`` and ``T:`` headers,
    ``L:1/8`` when the line's header (before its first ``K:``) has neither an ``L:`` nor an ``M:``
    field (ABC's default unit length then, which music21 10 does not apply: it rejects every note
    of such a tune), then its lines
    (split at :data:`LINE_BREAK`; empty ones dropped, since a blank line would end the tune), each
    ending in a newline."""
    parts = [p.rstrip() for p in line.rstrip("\r\n").split(LINE_BREAK) if p.strip()]
    head = ["X:1", "T:generated"]
    header = parts[:next((i for i, p in enumerate(parts) if p.startswith("K:")), len(parts))]
    if not any(p.startswith(("L:", "M:")) for p in header):
        head.append("L:1/8")
    return "".join(f"{p}\n" for p in head + parts)


def _music21():
    try:
        import music21
    except ImportError:
        raise SeqlabError("builtin:abc-folk: reading a tune needs the music21 package (pinned in requirements.txt)") from None
    return music21


@contextlib.contextmanager
def _quiet():
    """music21's warnings (Python warnings and its own messages to stderr) silenced."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _score(line: str):
    """The music21 stream of a line, or None when it has no ``K:`` field or does not parse to a
    stream with a note."""
    music21 = _music21()
    if not any(p.strip().startswith("K:") for p in line.split(LINE_BREAK)):
        return None
    with _quiet():
        try:
            score = music21.converter.parseData(tune_abc(line), format="abc")
            if score is None or next(iter(score.recurse().notes), None) is None:
                return None
            return score
        except Exception:       # a parser on a generated text: any failure is "does not parse"
            return None


def parses(line: str) -> bool:
    """Whether the tune of ``line`` has a ``K:`` field line and music21 parses it to a stream with at
    least one note (quietly: music21's warnings are silenced). music21 is lenient: it reads any
    letters as notes, unknown symbols are skipped or read as C with a warning; without the ``K:``
    rule (ABC requires it to end the header) "hello world" would parse to two notes."""
    return _score(line) is not None


def write_tune(line: str, stem: Path) -> list[Path]:
    """``<stem>.abc`` (always) and ``<stem>.mid`` (when the tune parses, see :func:`parses`);
    the paths written. The MIDI file is music21's, which holds no date or other per-run data."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    abc = stem.with_name(stem.name + ".abc")
    abc.write_text(tune_abc(line), encoding="utf-8")
    written = [abc]
    score = _score(line)
    if score is not None:
        mid = stem.with_name(stem.name + ".mid")
        with _quiet():
            try:
                score.write("midi", fp=str(mid))
            except Exception:
                mid.unlink(missing_ok=True)
                return written
        written.append(mid)
    return written
