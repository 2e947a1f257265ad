"""The budgeted n-gram build writes the very file of the in-memory ``KneserNeyLM.fit``.

Tiny ``chunk``/``block`` sizes force what a large corpus does under a small budget: many sorted
runs merged from disk, ids assigned by merge joins, adjusted counts and gathers block by block,
contexts spanning chunks. Identical bytes mean the KenLM parity tests of ``fit`` hold for it too.
"""
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from pipeline.models import ngram_external
from pipeline.models.ngram import KneserNeyLM
from pipeline.models.ngram_external import build_kneser_ney

WIKITEXT2 = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "wikitext-2"
SIZES = [(None, None), (97, 13), (1000, 5), (7, 300), (3, 2)]


def _same_file(tmp_path, tokens, V, N, boundary, chunk, block, **kw) -> bool:
    KneserNeyLM.fit(tokens, V, N, boundary_id=boundary).save(tmp_path / "fit.npz")
    build_kneser_ney(tokens, V, N, tmp_path / "ext.npz", boundary_id=boundary, chunk=chunk, block=block,
                     tmp_dir=tmp_path, **kw)
    return (tmp_path / "fit.npz").read_bytes() == (tmp_path / "ext.npz").read_bytes()


@pytest.mark.parametrize("seed", range(12))
def test_identical_to_fit_under_any_chunking(tmp_path, seed):
    rng = np.random.default_rng(seed)
    V, N = int(rng.integers(2, 12)), int(rng.integers(1, 8))
    boundary = None if seed % 2 else int(rng.integers(1, V))
    tokens = rng.integers(1, V, int(rng.integers(0, 600)))
    for chunk, block in SIZES[: 3 if seed > 3 else 5]:
        assert _same_file(tmp_path, tokens, V, N, boundary, chunk, block), (chunk, block)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "temporary files left"


def test_a_context_longer_than_a_chunk(tmp_path):
    """One context followed by many distinct words: its entries span several chunks."""
    tokens = np.array([t for w in range(2, 200) for t in (1, w)])
    assert _same_file(tmp_path, tokens, 200, 2, None, chunk=16, block=8)


@pytest.mark.skipif(not WIKITEXT2.is_dir(), reason="shared corpora not found")
def test_wikitext2_word_5gram_identical_with_a_small_budget(tmp_path):
    words = (WIKITEXT2 / "train.txt").read_text(encoding="utf-8").split("\n")[:-1]
    vocab: dict[str, int] = {"<eol>": 2}
    ids = []
    for line in words[:8000]:
        ids.extend(vocab.setdefault(w, len(vocab) + 2) for w in line.split())
        ids.append(2)
    tokens = np.array(ids)
    assert _same_file(tmp_path, tokens, len(vocab) + 3, 5, 2, chunk=50_000, block=20_000)


def test_failure_leaves_no_model_and_no_temporary_files(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(ngram_external, "write_model_file", broken)
    with pytest.raises(OSError, match="disk full"):
        build_kneser_ney(np.arange(1, 50) % 7 + 1, 8, 3, tmp_path / "m.npz", tmp_dir=tmp_path, chunk=10, block=10)
    assert list(tmp_path.iterdir()) == []


def test_bad_ids_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 5\)"):
        build_kneser_ney(np.array([1, 7]), 5, 3, tmp_path / "m.npz", tmp_dir=tmp_path)
    with pytest.raises(ValueError, match="BOS_ID"):
        build_kneser_ney(np.array([1, 0, 2]), 5, 3, tmp_path / "m.npz", tmp_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_working_memory_follows_the_budget_not_the_corpus(tmp_path):
    """1M tokens with a 4 MB budget: numpy's traced peak stays a few budgets, while fit's working
    set is some 200 bytes per token (200 MB here)."""
    rng = np.random.default_rng(0)
    tokens = rng.zipf(1.2, 1_000_000) % 5000 + 1
    np.save(tmp_path / "train.npy", tokens.astype(np.int32))
    ids = np.load(tmp_path / "train.npy", mmap_mode="r")
    del tokens
    tracemalloc.start()
    try:
        build_kneser_ney(ids, 5001, 4, tmp_path / "m.npz", memory_mb=4, tmp_dir=tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"peak {peak / 2**20:.1f} MB"
    lm = KneserNeyLM.load(tmp_path / "m.npz", mmap=True)
    assert isinstance(lm._keys[4], np.memmap) and lm.num_ngrams[4] > 500_000


def test_memory_mapped_members_are_aligned_and_searched_in_place(tmp_path):
    """Every member's data starts at a multiple of 64 bytes in the file, for the in-memory writer
    and the external build alike: NumPy searches an unaligned map only after copying all of it."""
    tokens = np.random.default_rng(4).integers(1, 9, 3000)
    KneserNeyLM.fit(tokens, 9, 4).save(tmp_path / "fit.npz")
    build_kneser_ney(tokens, 9, 4, tmp_path / "built.npz", tmp_dir=tmp_path)
    for name in ("fit.npz", "built.npz"):
        lm = KneserNeyLM.load(tmp_path / name, mmap=True)
        arrays = [*lm._keys.values(), *lm._logp.values(), *lm._logb.values()]
        assert len(arrays) == 3 + 4 + 3
        for a in arrays:
            assert isinstance(a, np.memmap) and a.offset % 64 == 0 and a.flags.aligned, (name, a.offset)
        with np.load(tmp_path / name, allow_pickle=False) as z:      # still a plain .npz
            np.testing.assert_array_equal(z["keys_4"], lm._keys[4])


def test_progress_reports_an_eta(tmp_path, capsys):
    build_kneser_ney(np.arange(3000) % 11 + 1, 12, 3, tmp_path / "m.npz", tmp_dir=tmp_path, progress=True,
                     chunk=500, block=100)
    err = capsys.readouterr().err
    assert "[ngram] stream: 3,000 tokens" in err and "distinct n-grams" in err


def test_memory_mapped_model_and_pieces_score_like_the_whole(tmp_path):
    rng = np.random.default_rng(3)
    tokens = rng.integers(1, 9, 4000)
    lm = KneserNeyLM.fit(tokens, 9, 4, boundary_id=3)
    lm.save(tmp_path / "m.npz")
    mapped = KneserNeyLM.load(tmp_path / "m.npz", mmap=True)
    test = rng.integers(1, 9, 2500)
    whole = lm.logprobs(test)
    np.testing.assert_array_equal(mapped.logprobs(test), whole)
    np.testing.assert_array_equal(np.concatenate(list(mapped.logprob_pieces(test, 101))), whole)
