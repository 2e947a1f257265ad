"""Steppers of one family (the Transformer's sliding window, the example family's recomputed window),
stream scoring with segments and windows, sampling.

That every family's stepper equals its full forward pass, keeps its state as a value and scores a
stream exactly is checked on every family by ``tests/test_family_conformance.py``.
"""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.generation.decoding import generate  # noqa: E402
from pipeline.models import build_model, make_stepper  # noqa: E402
from pipeline.scoring.stream import log_softmax, stream_logprobs  # noqa: E402
from pipeline.data.vocab_layout import BOS_ID  # noqa: E402
from tests.family_cases import CASES, MAX_LEN, VOCAB, built, case, params  # noqa: E402
from tests.family_cases import forward as full_logits  # noqa: E402
from tests.tiny_models import tiny_cfg  # noqa: E402


def get(case_id):
    """(cfg, model, stepper) of a shared case (``tests/family_cases.py``)."""
    b = built(case(case_id))
    return b.cfg, b.model, b.stepper


def test_stream_logprobs_batched_segments():
    # conv: with warmup >= receptive field - 1 the segmented result is exact
    cfg, model, stepper = get("conv")
    n = 80
    stream = np.random.default_rng(6).integers(1, VOCAB, size=n)
    exact = stream_logprobs(stepper, stream, chunk=16)
    got = stream_logprobs(stepper, stream, chunk=16, batch_size=3, warmup=model.receptive_field - 1)
    np.testing.assert_allclose(got, exact, atol=1e-4)
    # rnn: approximate, but every position is scored and finite
    _, _, rnn = get("gru")
    got = stream_logprobs(rnn, stream, chunk=16, batch_size=4, warmup=8)
    assert got.shape == (n,) and np.all(np.isfinite(got)) and np.all(got <= 0)


def test_stream_logprobs_transformer_windows():
    _, model, stepper = get("transformer")
    n = 2 * MAX_LEN + 5
    stream = np.random.default_rng(7).integers(1, VOCAB, size=n)
    inputs = np.concatenate([[BOS_ID], stream[:-1]])
    got = stream_logprobs(stepper, stream, chunk=5, batch_size=2)
    assert got.shape == (n,)
    first = log_softmax(full_logits(model, inputs[:MAX_LEN]))[0]
    np.testing.assert_allclose(got[:MAX_LEN], first[np.arange(MAX_LEN), stream[:MAX_LEN]], atol=1e-4)
    for t in (MAX_LEN, MAX_LEN + 7, n - 1):      # each later token sees >= MAX_LEN/2 tokens of context
        scored = False
        for end in range(t + 1, min(n, t + 5) + 1):
            lp = log_softmax(full_logits(model, inputs[end - MAX_LEN:end]))[0]
            if abs(lp[MAX_LEN - 1 - (end - 1 - t), stream[t]] - got[t]) < 1e-4:
                scored = True
        assert scored, t


def test_generation_never_emits_bos_even_when_favoured():
    cfg = tiny_cfg("gru", embed_dim=10, embed_init="normal")
    model = build_model(cfg, VOCAB, MAX_LEN)
    head = model.head
    kernel, bias = head.get_weights()
    bias[BOS_ID] = 50.0
    head.set_weights([kernel, bias])
    stepper = make_stepper(model, cfg, MAX_LEN)
    for temperature in (0, 1.0):
        out = generate(stepper, np.array([3]), 20, np.random.default_rng(1), temperature=temperature)
        assert np.all(out != BOS_ID)
    assert generate(stepper, np.array([3]), 0, np.random.default_rng(1)).shape == (0,)


@pytest.mark.parametrize("case", params([c for c in CASES if c.family == "transformer"]))
def test_transformer_sliding_window_past_max_context(case):
    model, stepper = built(case).model, built(case).stepper
    assert stepper.max_context == MAX_LEN
    for prompt_len in (4, MAX_LEN + 3):           # the second prompt alone exceeds the context
        prompt = np.random.default_rng(8).integers(1, VOCAB, size=prompt_len)
        num = 2 * MAX_LEN
        out = generate(stepper, prompt, num, np.random.default_rng(0), temperature=0)
        assert out.shape == (num,) and np.all(out != BOS_ID)
        seq = [BOS_ID] + list(prompt) + list(out)
        keep = stepper.window_keep
        assert keep == MAX_LEN - MAX_LEN // 2     # a full window slides by half of it
        held = len(prompt) + 1 if prompt_len + 1 <= MAX_LEN else keep
        for i in range(num):                      # context held when out[i] was chosen
            end = len(prompt) + 1 + i
            logits = full_logits(model, seq[end - held:end])[0, -1]
            logits[BOS_ID] = -np.inf
            assert out[i] == np.argmax(logits), i
            held = held + 1 if held + 1 <= MAX_LEN else keep


def test_recompute_stepper_of_a_fixed_window_family_decodes_exactly():
    """The stepper (a recomputed window) of the example family: a window of context + 1 holds
    everything a prediction sees, so greedy decoding far past it equals the full forward pass."""
    cfg, model, stepper = get("window_mlp")
    assert stepper.max_context == cfg.context + 1 < MAX_LEN
    prompt = np.array([3, 4, 5, 6, 7, 8])
    greedy = generate(stepper, prompt, 3 * MAX_LEN, np.random.default_rng(0), temperature=0)
    seq = np.concatenate([[BOS_ID], prompt, greedy])
    logits = full_logits(model, seq[:-1])[0][len(prompt):]
    logits[:, BOS_ID] = -np.inf
    np.testing.assert_array_equal(greedy, np.argmax(logits, axis=-1))
