"""The compiled decoder (``pipeline.generation.compiled``) against the reference decoder and the maths.

The reference is ``decoding.generate`` on the steppers' host form. That the compiled decoder gives
every family's logits step by step and the reference's greedy output (sliding windows included)
is checked on every family by ``tests/test_family_conformance.py``; here: the same rows whatever
batch they share, and samples drawn from the same distribution (within a stated tolerance).
"""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras import ops  # noqa: E402

from pipeline.data.vocab_layout import BOS_ID  # noqa: E402
from pipeline.generation.device_sampling import (filter_scores, hash_uniform, numpy_hash_uniform,  # noqa: E402
                                                 sample_tokens)
from pipeline.generation.sampling import filter_logprobs  # noqa: E402
from tests.family_cases import VOCAB, built, case, decoder as compiled_decoder  # noqa: E402


def get(case_id):
    """(model, stepper, decoder) of a shared case (``tests/family_cases.py``)."""
    c = case(case_id)
    return built(c).model, built(c).stepper, compiled_decoder(c)


# a stream, a sliding window, prompts started whole (an encoder-decoder: each row's source encoded at once)
@pytest.mark.parametrize("name", ["lstm", "transformer", "seq2seq_transformer"])
def test_a_row_does_not_depend_on_its_batch(name):
    """Each row's output is a function of its prompt, settings and seed only: batched rows of
    different lengths and settings equal the same rows decoded alone, and streaming chunks add
    up to the whole."""
    _, _, decoder = get(name)
    rng = np.random.default_rng(5)
    prompts = [rng.integers(1, VOCAB, size=n) for n in (2, 7, 3)]
    settings = dict(temperature=[0.7, 1.0, 0.0], top_k=[0, 5, 0], top_p=[0.9, 1.0, 1.0], seeds=[1, 2, 3])
    budgets = [30, 12, 0]
    batched = decoder.generate(prompts, budgets, **settings)
    assert [len(r) for r in batched] == budgets
    for i, prompt in enumerate(prompts):
        alone = decoder.generate([prompt], budgets[i], **{k: v[i] for k, v in settings.items()})[0]
        np.testing.assert_array_equal(batched[i], alone)
    chunks = list(decoder.stream(prompts, budgets, **settings))
    assert len(chunks) > 2                                   # first_chunk=3, then 16 at a time
    for i in range(3):
        np.testing.assert_array_equal(np.concatenate([c[i] for c in chunks]), batched[i])
    again = decoder.generate(prompts, budgets, **settings)
    for a, b in zip(batched, again):
        np.testing.assert_array_equal(a, b)                  # seeded: reproducible
    other = decoder.generate(prompts[:1], 30, **{**{k: v[0] for k, v in settings.items()}, "seeds": 9})[0]
    assert not np.array_equal(other, batched[0])


def test_hash_uniforms_match_numpy_and_look_uniform():
    seeds = np.array([0, 1, 2 ** 32 - 1, 12345], np.uint32)
    counters = np.array([0, 7, 3, 2 ** 31], np.uint32)
    got = np.asarray(hash_uniform(ops.convert_to_tensor(seeds), ops.convert_to_tensor(counters), 1000))
    np.testing.assert_array_equal(got, numpy_hash_uniform(seeds, counters, 1000))
    u = numpy_hash_uniform(np.arange(200, dtype=np.uint32), np.zeros(200, np.uint32), 500).ravel()
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    hist = np.histogram(u, bins=10, range=(0, 1))[0] / u.size
    assert np.abs(hist - 0.1).max() < 0.005


SETTINGS = [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 4, 1.0), (1.0, 0, 0.8), (1.3, 6, 0.6), (0.5, 0, 0.3)]


@pytest.mark.parametrize("temperature,top_k,top_p", SETTINGS)
def test_filtered_sets_and_sampled_frequencies_match_the_reference_sampler(temperature, top_k, top_p):
    """Same kept set as ``filter_logprobs``; frequencies of 40,000 draws within total variation
    0.02 of its probabilities (the sampling error alone is about 0.005 here)."""
    rng = np.random.default_rng(int(temperature * 10) + top_k)
    logits = (rng.normal(size=VOCAB) * 2).astype(np.float32)
    logits[BOS_ID] = -np.inf
    want = filter_logprobs(logits, temperature, top_k, top_p)
    rows = 40_000
    batch = np.broadcast_to(logits, (rows, VOCAB))
    t, k, p = (ops.full((rows,), temperature), ops.full((rows,), top_k, dtype="int32"),
               ops.full((rows,), top_p))
    kept = np.isfinite(np.asarray(filter_scores(ops.convert_to_tensor(batch[:1]), t[:1], k[:1], p[:1])))[0]
    np.testing.assert_array_equal(kept, want > 0)
    draws = np.asarray(sample_tokens(ops.convert_to_tensor(batch), ops.full((rows,), 77, dtype="uint32"),
                                     ops.cast(ops.arange(rows), "uint32"), t, k, p))
    freq = np.bincount(draws, minlength=VOCAB) / rows
    assert 0.5 * np.abs(freq - want).sum() < 0.02, (freq.round(3), want.round(3))
    assert freq[want == 0].sum() == 0


def test_filtered_sets_keep_ties_at_the_cut_with_per_row_settings():
    """Rows with repeated scores, -inf entries and their own settings (row 0 with both filters
    off): each kept set holds the reference's set plus only tokens tied with a kept score."""
    rng = np.random.default_rng(3)
    rows = 64
    logits = np.round(rng.normal(size=(rows, VOCAB)) * 2, 0).astype(np.float32)    # many exact ties
    logits[:, BOS_ID] = -np.inf
    logits[::5, 7] = -np.inf
    temperature = rng.uniform(0.3, 1.5, rows).astype(np.float32)
    top_k = rng.integers(0, VOCAB + 2, rows).astype(np.int32)
    top_p = rng.uniform(0.05, 1.0, rows).astype(np.float32)
    top_k[0], top_p[0] = 0, 1.0
    kept = np.isfinite(np.asarray(filter_scores(*[ops.convert_to_tensor(a)
                                                  for a in (logits, temperature, top_k, top_p)])))
    assert kept[0].sum() == VOCAB - 2                        # settings off: every finite score kept
    for i in range(rows):
        want = filter_logprobs(logits[i], float(temperature[i]), int(top_k[i]), float(top_p[i])) > 0
        assert (kept[i] >= want).all()
        assert set(logits[i][kept[i] & ~want]) <= set(logits[i][want])


def test_sampled_continuations_follow_the_model_distribution():
    """End to end on a network: the first sampled token of 4,000 seeds, against the model's own
    top-p distribution for that position (total variation < 0.05)."""
    model, _, decoder = get("gru")
    prompt = np.array([3, 4, 5])
    rows = 4000
    out = decoder.generate([prompt] * rows, 1, temperature=0.9, top_p=0.9, seeds=np.arange(rows))
    first = np.array([r[0] for r in out])
    logits = np.array(model(np.array([[BOS_ID, 3, 4, 5]], np.int32)))[0, -1].astype(np.float64)
    logits[BOS_ID] = -np.inf
    want = filter_logprobs(logits, 0.9, 0, 0.9)
    freq = np.bincount(first, minlength=VOCAB) / rows
    assert 0.5 * np.abs(freq - want).sum() < 0.05, (freq.round(3), want.round(3))


def test_bos_is_never_drawn_and_bad_settings_are_refused():
    _, _, decoder = get("rnn")
    for temperature in (0.0, 1.0):
        out = decoder.generate([np.array([3])], 40, temperature=temperature, seeds=1)[0]
        assert not (out == BOS_ID).any()
    assert decoder.generate([np.array([3])], 0)[0].shape == (0,)
    for bad in (dict(temperature=-1.0), dict(top_p=0.0), dict(top_k=-2)):
        with pytest.raises(ValueError, match="sampler settings"):
            decoder.generate([np.array([3])], 4, **bad)
    with pytest.raises(ValueError, match="max_tokens"):
        decoder.generate([np.array([3])], -1)
