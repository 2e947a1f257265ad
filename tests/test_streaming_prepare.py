"""Streaming prepare gives what encoding each split whole gives, in bounded memory.

The reference is the obvious in-memory computation: the splits as strings (``load_corpus``), the
vocabulary learnt on the whole training string, each split encoded in one call, and
:func:`data_hash` over those arrays. Tiny read blocks force hundreds of pieces.
"""
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import prepare as prepare_mod
from pipeline.data.corpus import SPLITS, load_corpus, open_corpus
from pipeline.data.counting import Counts
from pipeline.data.prepare import prepare, prepare_corpus
from pipeline.data.prepared import data_hash, load_prepared
from pipeline.data.text_blocks import scan
from pipeline.data.tokenizers import learn_tokenizer
from pipeline.errors import SeqlabError
from tests.conftest import ROOT

SHARED = ROOT.parent / "shared" / "corpora"


def _reference(spec: str, kind: str, vocab_size: int, split=(0.9, 0.05, 0.05), lowercase=False):
    c = load_corpus(spec, list(split))
    tok = learn_tokenizer(kind, c.train, vocab_size, lowercase)
    ids = {s: tok.encode(c.split(s)) for s in SPLITS}
    return tok, ids, data_hash(ids, tok)


def _check_same(tmp_path, spec, kind, vocab_size, block, lowercase=False):
    tok, ids, h = _reference(spec, kind, vocab_size, lowercase=lowercase)
    corpus = open_corpus(spec, [0.9, 0.05, 0.05], block_bytes=block)
    stats = prepare(corpus, tmp_path / "prepared", kind, vocab_size, lowercase, memory_mb=64)
    got = load_prepared(tmp_path / "prepared")
    assert got.tokenizer.tokens == tok.tokens
    for s in SPLITS:
        np.testing.assert_array_equal(got.ids[s], ids[s])
        assert stats["splits"][s]["tokens"] == len(ids[s])
    assert stats["data_hash"] == h
    return stats


@pytest.mark.parametrize("kind, vocab", [("char", 200), ("word", 3000)])
def test_streamed_equals_whole_on_the_builtin_corpus(tmp_path, kind, vocab):
    _check_same(tmp_path, "builtin:python-docs", kind, vocab, block=4096)


def test_streamed_wordpiece_equals_whole(tmp_path):
    """On 80 KB of the builtin text (the wordpiece learner is slow), with 2 KiB blocks."""
    path = tmp_path / "docs.txt"
    path.write_text(load_corpus("builtin:python-docs", [0.9, 0.05, 0.05]).train[:80_000], encoding="utf-8")
    _check_same(tmp_path, str(path), "wordpiece", 500, block=2048)


def test_streamed_equals_whole_with_crlf_bom_and_lowercase(tmp_path):
    lines = "".join(f"Line {i} ÉTÉ of the ΣΟΦΙΑΣ corpus\r\n" + ("\n" if i % 7 == 0 else "") for i in range(400))
    path = tmp_path / "c.txt"
    path.write_bytes(b"\xef\xbb\xbf" + lines.encode() + b"old mac\rend")   # no final newline
    for kind in ("char", "word"):
        stats = _check_same(tmp_path / kind, str(path), kind, 100, block=97, lowercase=True)
        assert stats["cleaning"] == {"bom_removed": 1, "crlf_line_ends": 400, "cr_line_ends": 1}


@pytest.mark.parametrize("name", ["wikitext-2", "tinyshakespeare/input.txt"])
def test_streamed_equals_whole_on_the_shared_corpora(tmp_path, name):
    spec = SHARED / name
    if not spec.exists():
        pytest.skip(f"{spec} is not here (shared corpora are optional)")
    kind, vocab = ("word", 40_000) if name == "wikitext-2" else ("char", 100)
    _check_same(tmp_path, str(spec), kind, vocab, block=1 << 20)


def test_a_control_character_deep_in_the_file_is_placed_exactly(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("ok line\n" * 500 + "bad \x07 here\n" + "ok\n" * 10, encoding="utf-8")
    with pytest.raises(SeqlabError) as e:
        open_corpus(str(path), [0.8, 0.1, 0.1], block_bytes=50)
    assert str(e.value).startswith(f"{path}: control character U+0007 at line 501, column 5 "
                                   f"(character offset {500 * 8 + 4})")


def test_bad_utf8_deep_in_the_file_names_the_byte_offset(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"fine\n" * 300 + b"caf\xe9\n")
    with pytest.raises(SeqlabError, match=r"not valid UTF-8 at byte offset 1503 \(byte 0xe9\)"):
        scan(str(path), path, block_bytes=64)


def test_word_counts_spilled_to_disk_rank_like_a_counter(tmp_path):
    rng = np.random.default_rng(0)
    words = [f"w{int(i)}" for i in rng.zipf(1.3, 20_000) % 3000]
    counts = Counts(max_types=50, tmp_dir=tmp_path)
    for i in range(0, len(words), 700):
        counts.update(words[i:i + 700])
    assert counts._runs, "the test must make the counter spill"
    counts.pop("w1")
    expect = collections.Counter(words)
    expect.pop("w1")
    ranked = sorted(expect, key=lambda w: (-expect[w], w))
    assert counts.top(333) == ranked[:333]
    for k in (1, 10, 5000):
        again = Counts(max_types=50, tmp_dir=tmp_path)
        again.update(words)
        again.pop("w1")
        assert again.top(k) == ranked[:k]
    assert not any(tmp_path.iterdir()), "run files are removed"


def test_a_failed_prepare_leaves_the_old_folder_and_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    prepare_corpus("builtin:python-docs", out, tokenizer="char", vocab_size=200)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*a, **k):
        raise SeqlabError("disk on fire")
    monkeypatch.setattr(prepare_mod, "finish_hash", broken)
    with pytest.raises(SeqlabError, match="disk on fire"):
        prepare_corpus("builtin:python-docs", out, tokenizer="word", vocab_size=200)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


@pytest.mark.slow
def test_prepare_peak_memory_stays_within_the_budget(tmp_path):
    """A 200 MB corpus (38M tokens; the in-memory prepare needed ~7 GB for it) prepared with a 256 MB
    budget: the child's peak RSS stays under TensorFlow's own footprint plus the budget."""
    words = [f"w{i}" for i in range(20_000)]
    rng = np.random.default_rng(1)
    with open(tmp_path / "big.txt", "w", encoding="utf-8") as f:
        for _ in range(200):
            ids = rng.integers(0, len(words), 180_000)
            f.write("\n".join(" ".join(words[j] for j in ids[i:i + 12]) for i in range(0, len(ids), 12)) + "\n")
    code = ("import resource, json, sys; from pathlib import Path; import tensorflow, tensorflow_text\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "from pipeline.data.prepare import prepare_corpus\n"
            "s = prepare_corpus(sys.argv[1], Path(sys.argv[2]), tokenizer='word', vocab_size=30000, memory_mb=256)\n"
            "print(json.dumps({'base_mb': base / 1024, 'peak_mb': resource.getrusage(resource.RUSAGE_SELF)"
            ".ru_maxrss / 1024, 'tokens': s['splits']['train']['tokens']}))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.txt"), str(tmp_path / "prepared")],
                         cwd=ROOT, capture_output=True, text=True, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["tokens"] > 30_000_000
    assert r["peak_mb"] - r["base_mb"] < 256 + 128, r
