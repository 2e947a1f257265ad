"""builtin:abc-folk (pipeline.data.builtin_music): the text of one tune a line, and the way back from
a line to ABC that music21 parses and to a MIDI file."""
import hashlib
import re

import pytest

from pipeline.data import builtin_music as bm

# 1,837 tunes with music21 10.5.1 (2,009 read, 170 second transcriptions of a number, 2 long)
MIN_TUNES = 1_800
JUNK = "zz((((]]]"                   # rests and brackets only: music21 reads it to no note
# the sha256 of the text with the music21 version it was measured with: a change that makes the text
# depend on the machine or the run, or a new music21 corpus, changes it
ABC_FOLK = ("10.5.1", "896930375262892b668acf6c886501c4c6fae9c40288adb87bbd837a124f2153")
BROKEN = f"M:4/4{bm.LINE_BREAK}K:C{bm.LINE_BREAK}[[[[a"   # music21 raises: a chord never closed


@pytest.fixture(scope="module")
def lines():
    return bm.abc_folk_text().splitlines(keepends=True)


def test_text_is_deterministic_and_one_tune_a_line(lines):
    bm.abc_folk_text.cache_clear()
    first = bm.abc_folk_text()
    bm.abc_folk_text.cache_clear()
    assert bm.abc_folk_text() == first                 # built twice, not the cached object
    assert "".join(lines) == first
    assert len(lines) >= MIN_TUNES
    assert len(set(lines)) == len(lines)               # no duplicates
    for line in lines:
        assert line.endswith("\n") and line.count("\n") == 1
        assert "\t" not in line and "\r" not in line
        assert len(line) - 1 <= bm.ABC_FOLK_MAX_CHARS
        fields = [p for p in line[:-1].split(bm.LINE_BREAK) if re.match(r"[A-Za-z]:", p)]
        assert any(f.startswith("K:") for f in fields)
        assert not any(f[0] not in bm.KEPT_FIELDS for f in fields), line   # no X:, T:, N:, W:, ...
        assert "%" not in line
    # the order is sha256 of the line, not the files' order
    keys = [hashlib.sha256(f"abc-folk:{t[:-1]}".encode()).hexdigest() for t in lines]
    assert keys == sorted(keys)
    if bm.abc_folk_pins()["music21"] == ABC_FOLK[0]:
        assert hashlib.sha256(first.encode("utf-8")).hexdigest() == ABC_FOLK[1]


def test_counts_and_pins():
    kept, counts = bm.abc_folk_tunes()
    one = counts["oneills1850"]
    assert one["kept"] == len(kept)
    assert one["read"] == sum(one.values()) - one["read"]     # every tune read is kept or counted out
    assert one["same number"] > 0
    import music21
    assert bm.abc_folk_pins() == {"music21": music21.__version__}


def test_normal_tune_keeps_music_only():
    tune = ["X: 12", "T: A Title", "C: Someone", "M: 6/8", "N: slow % a note", "L: 1/8", "Z: typed",
            "K: G", "% a comment", "ga\tb|cde % trailing", "W: words", "w: syl-la-ble", "M:3/4", "d2e|]"]
    line, why = bm.normal_tune(tune)
    assert why == ""
    assert line.split(bm.LINE_BREAK) == ["M:6/8", "L:1/8", "K:G", "ga b|cde", "M:3/4", "d2e|]"]
    assert bm.normal_tune(["X:1", "M:4/4", "K:C", "V:1", "abc"]) == (None, "voices")
    assert bm.normal_tune(["X:1", "M:4/4", "abc"]) == (None, "no K:")
    assert bm.normal_tune(["X:1", "M:4/4", "K:C", "z4|x4|"]) == (None, "no notes")
    assert bm.normal_tune(["X:1", "K:C", "a" * bm.ABC_FOLK_MAX_CHARS]) == (None, "long")


def test_tunes_split_at_blank_lines_and_x():
    text = "header text\n\nX:1\nT:a\nK:C\nabc\n\nfree text\nX:2\nK:D\ndef\nX:3\nK:E\nefg\n"
    assert list(bm.abc_tunes(text)) == [["X:1", "T:a", "K:C", "abc"], ["X:2", "K:D", "def"],
                                         ["X:3", "K:E", "efg"]]
    assert bm.tune_number(["X: 800", "B:O'Neill's 700"]) == 700      # B: over a mistyped X:
    assert bm.tune_number(["X: 800", "B:O'Neill's Music of Ireland"]) == 800


def test_round_trip_parses(lines):
    for line in lines[:5]:
        abc = bm.tune_abc(line)
        assert abc.startswith("X:1\n") and bm.LINE_BREAK not in abc and "\n\n" not in abc
        assert bm.parses(line)
    assert not bm.parses(JUNK)
    assert not bm.parses(BROKEN)
    assert not bm.parses("hello world")                # music21 reads "e", "d" as notes; no K:
    assert bm.parses(f"K:C{bm.LINE_BREAK}abc")         # no L:, no M:: ABC's 1/8 is added


def test_broken_line_raises_in_music21_and_parses_swallows_it():
    import music21
    with pytest.raises(Exception):
        music21.converter.parseData(bm.tune_abc(BROKEN), format="abc")
    assert bm.parses(BROKEN) is False


def test_parses_is_quiet(capfd):
    # music21 writes "abcFormat: WARNING: Could not get pitch information from note: r2" to stderr
    assert bm.parses(f"M:4/4{bm.LINE_BREAK}K:C{bm.LINE_BREAK}a r2 b")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_write_tune(lines, tmp_path):
    written = bm.write_tune(lines[0], tmp_path / "sub" / "tune.1")
    assert written == [tmp_path / "sub" / "tune.1.abc", tmp_path / "sub" / "tune.1.mid"]
    assert written[0].read_text(encoding="utf-8") == bm.tune_abc(lines[0])
    midi = written[1].read_bytes()
    assert midi[:4] == b"MThd"
    again = bm.write_tune(lines[0], tmp_path / "again")
    assert again[1].read_bytes() == midi                # deterministic
    assert bm.write_tune(JUNK, tmp_path / "junk") == [tmp_path / "junk.abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.abc", "again.mid", "junk.abc", "sub"]


class _Tunes:
    """A sampler (``stream``, as pipeline.generation.text wants it) answering row i with ``tunes[i % 2]``."""

    def __init__(self, tokenizer, tunes):
        self.ids = [tokenizer.encode(t) for t in tunes]
        self.seen = None

    def stream(self, prompts, max_tokens, *, temperature, top_k, top_p, seeds):
        self.seen = (len(prompts), list(seeds))
        yield [self.ids[i % 2] for i in range(len(prompts))]


def test_sampled_tunes_are_checked_exported_and_reported(lines, tmp_path):
    """The evaluate stage's music outputs: every sampled tune as ABC, a MIDI file for each that music21
    parses, and the fraction that parse as a metric, which the comparison table shows."""
    from types import SimpleNamespace

    from pipeline.config.params import GenerateParams
    from pipeline.data.tokenizers import learn_tokenizer
    from pipeline.generation.music import TUNES, music_results
    from pipeline.reporting import comparison_markdown
    tok = learn_tokenizer("char", "".join(lines[:50]) + BROKEN, 200)
    sampler = _Tunes(tok, [lines[0], BROKEN + "\n"])
    data = SimpleNamespace(stats={"notation": "abc"})
    metrics, section, files = music_results(sampler, tok, data, GenerateParams(seed=3), tmp_path / "m")
    assert sampler.seen == (TUNES, list(range(3, 3 + TUNES)))
    assert metrics == {"sample_parse_rate": 0.5, "sample_midi_rate": 0.5}
    assert "10 of 20 parse with music21 (50%), 10 export to MIDI" in section
    assert sorted(p.name for p in files if p.suffix == ".mid") == [f"tune_{i:02d}.mid" for i in range(0, TUNES, 2)]
    assert len([p for p in files if p.suffix == ".abc"]) == TUNES and all(p.exists() for p in files)
    assert (tmp_path / "m" / "tune_00.abc").read_text().startswith("X:1")
    assert music_results(sampler, tok, SimpleNamespace(stats={}), GenerateParams(), tmp_path / "t") == ({}, "", [])
    stats = {"source": "builtin:abc-folk", "tokenizer": "char", "vocab_size": 90, "data_hash": "h"}
    assert "| 50% | 50% |" in comparison_markdown([{"model": "m", "test_bpc": 1.0, **metrics}], stats)
