"""Beam search (pipeline/generation/beam.py): width 1 is greedy decoding for every family, and a
beam wide enough to hold every hypothesis finds the best length-normalised output by brute force."""
import itertools

import numpy as np
import pytest

pytest.importorskip("keras")

from pipeline.data.vocab_layout import BOS_ID  # noqa: E402
from pipeline.generation.beam import BeamDecoder  # noqa: E402
from tests.family_cases import FAMILY_CASES, VOCAB, built, case, decoder, forward, random_ids  # noqa: E402

END = 7


# the kinds of state a beam reorders: a time-major queue (conv), a recomputed window (the user
# family), the encoder-decoders' caches (a recurrent state and key/value caches among them)
# (the Transformer encoder-decoder's case is slow: the recurrent one covers a batched start)
WIDTH_ONE = [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.name == "seq2seq_transformer" else [])
             for c in FAMILY_CASES if c.name in ("conv", "window_mlp", "seq2seq_rnn", "seq2seq_transformer")]


@pytest.mark.parametrize("c", WIDTH_ONE)
def test_a_beam_of_width_one_is_the_compiled_greedy_decoder(c):
    """Prompts of three lengths (each an example up to its marker for an encoder-decoder) and their
    outputs within the stepper's context (a beam does not slide a window)."""
    context = built(c).stepper.max_context or 99
    num = min(9, context - 3)
    rng = np.random.default_rng(2)
    prompts = [random_ids(rng, 1, min(n, context - 1 - num) + 1)[0, 1:] for n in (2, 4, 4, 6, 2)]
    search = BeamDecoder(built(c).stepper, VOCAB, END, width=1, max_tokens=num, batch_size=2, alpha=0.6)
    beam = search.decode(prompts)
    # a prefix model's three batches of different lengths: one compiled shape (each is an XLA compilation)
    if not built(c).stepper.ragged_start and hasattr(search._search, "experimental_get_tracing_count"):
        assert search._search.experimental_get_tracing_count() == 1
    greedy = decoder(c).generate(prompts, num, temperature=0.0)
    for got, want in zip(beam, greedy):
        stop = np.flatnonzero(want == END)
        np.testing.assert_array_equal(got, want[:stop[0]] if stop.size else want)


@pytest.mark.parametrize("case_id, alpha", [("gru", 1.0), pytest.param("gru", 0.0, marks=pytest.mark.slow),
                                            pytest.param("seq2seq_transformer", 1.0, marks=pytest.mark.slow)])
def test_a_beam_holding_every_hypothesis_finds_the_best_normalised_output(case_id, alpha):
    """Two tokens at most: every output is [END], [a, END] or [a, b] (unfinished); with VOCAB**2
    beams nothing is pruned, so the search returns the brute-force best of log p / lp(length)."""
    c = case(case_id)
    b = built(c)
    prompt = random_ids(np.random.default_rng(5), 1, 4)[0, 1:]
    (got,) = BeamDecoder(b.stepper, VOCAB, END, width=VOCAB * VOCAB, max_tokens=2, alpha=alpha,
                         batch_size=1).decode([prompt])
    lp = lambda n: ((5.0 + n) / 6.0) ** alpha          # noqa: E731
    base = np.concatenate([[BOS_ID], prompt])
    best, best_score = None, -np.inf
    for a, nxt in itertools.product(range(1, VOCAB), [None, *range(1, VOCAB)]):
        seq = [a] if nxt is None else [a, nxt]
        if (a == END) != (nxt is None) or (nxt is None and a != END):
            continue
        logits = forward(b.model, np.concatenate([base, seq[:-1]]))[0, len(base) - 1:]
        logits[:, BOS_ID] = -np.inf
        logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        score = sum(logp[i, t] for i, t in enumerate(seq)) / lp(len(seq))
        if score > best_score:
            best, best_score = [t for t in seq if t != END], score
    np.testing.assert_array_equal(got, best)


@pytest.mark.parametrize("case_id", ["seq2seq_rnn", pytest.param("seq2seq_transformer", marks=pytest.mark.slow)])
def test_a_beam_that_keeps_the_encoder_outputs_in_place_finds_the_same_outputs(case_id):
    """Not reordering the state entries a stepper declares fixed (``fixed_state``) changes no output."""
    import copy
    b = built(case(case_id))
    rng = np.random.default_rng(3)
    prompts = [random_ids(rng, 1, n)[0, 1:] for n in (3, 5, 3, 4)]
    plain = copy.copy(b.stepper)
    plain.fixed_state = ()
    assert b.stepper.fixed_state
    got, want = (BeamDecoder(s, VOCAB, END, width=3, max_tokens=6, batch_size=4, alpha=0.6).decode(prompts)
                 for s in (b.stepper, plain))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
