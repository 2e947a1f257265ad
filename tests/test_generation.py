"""Steppers (cached / stateful decoding), stream scoring and sampling."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.generation.decoding import generate  # noqa: E402
from pipeline.models import build_model, make_stepper  # noqa: E402
from pipeline.models.conv import receptive_field  # noqa: E402
from pipeline.scoring.stream import stream_logprobs  # noqa: E402
from pipeline.data.vocab_layout import BOS_ID  # noqa: E402
from tests.tiny_models import tiny_cfg as shared_tiny_cfg  # noqa: E402

VOCAB = 19
MAX_LEN = 24          # transformer positions (kept small so the sliding window is exercised)


def tiny_cfg(family, **overrides):
    return shared_tiny_cfg(family, **{"embed_dim": 10, "embed_init": "normal", **overrides})


VARIANTS = {
    "rnn": tiny_cfg("rnn"),
    "lstm": tiny_cfg("lstm"),
    "gru": tiny_cfg("gru"),
    "conv": tiny_cfg("conv"),
    "conv_k3": tiny_cfg("conv", kernel_size=3, dilations=[1, 2]),
    "transformer": tiny_cfg("transformer"),
    "transformer_tied": tiny_cfg("transformer", tie_embeddings=True, embed_dim=8),
}
UNBOUNDED = ["rnn", "lstm", "gru", "conv", "conv_k3"]

_CACHE = {}


def get(name):
    """(cfg, model, stepper), built once per module."""
    if name not in _CACHE:
        keras.utils.set_random_seed(5)
        cfg = VARIANTS[name]
        model = build_model(cfg, VOCAB, MAX_LEN)
        _CACHE[name] = (cfg, model, make_stepper(model, cfg, MAX_LEN))
    return _CACHE[name]


def full_logits(model, ids):
    ids = np.asarray(ids, np.int32)
    return np.array(model(ids.reshape(1, -1) if ids.ndim == 1 else ids, training=False))


def log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def random_ids(rng, batch, length):
    ids = rng.integers(1, VOCAB, size=(batch, length)).astype(np.int32)
    ids[:, 0] = BOS_ID
    return ids


@pytest.mark.parametrize("name", list(VARIANTS))
def test_stepping_matches_full_forward(name):
    cfg, model, stepper = get(name)
    rng = np.random.default_rng(0)
    ids = random_ids(rng, 2, MAX_LEN)
    full = full_logits(model, ids)
    expected_context = MAX_LEN if cfg.family == "transformer" else None
    assert stepper.max_context == expected_context
    # prefill 5, then one token at a time
    state = stepper.initial_state(2)
    pieces = []
    logits, state = stepper(ids[:, :5], state)
    pieces.append(logits)
    for t in range(5, MAX_LEN):
        logits, state = stepper(ids[:, t:t + 1], state)
        assert logits.shape == (2, 1, VOCAB) and logits.dtype == np.float32
        pieces.append(logits)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-4, rtol=0)
    # uneven chunks
    state = stepper.initial_state(2)
    pieces, t = [], 0
    for size in (1, 7, 3, 1, 12):
        logits, state = stepper(ids[:, t:t + size], state)
        pieces.append(logits)
        t += size
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", UNBOUNDED)
def test_unbounded_steppers_continue_past_training_length(name):
    _, model, stepper = get(name)
    ids = random_ids(np.random.default_rng(1), 1, 70)
    full = full_logits(model, ids)
    state = stepper.initial_state(1)
    pieces = []
    for start in range(0, 70, 16):
        logits, state = stepper(ids[:, start:start + 16], state)
        pieces.append(logits)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-4, rtol=0)


def test_recurrent_and_conv_states_are_not_mutated():
    for name in ("lstm", "conv"):
        _, _, stepper = get(name)
        ids = random_ids(np.random.default_rng(2), 1, 10)
        _, state = stepper(ids[:, :6], stepper.initial_state(1))
        a, _ = stepper(ids[:, 6:], state)
        b, _ = stepper(ids[:, 6:], state)
        np.testing.assert_array_equal(a, b)


def test_transformer_state_reuse_copies_on_branch():
    _, model, stepper = get("transformer")
    ids = random_ids(np.random.default_rng(3), 1, 12)
    _, s6 = stepper(ids[:, :6], stepper.initial_state(1))
    _, s9 = stepper(ids[:, 6:9], s6)
    other = ids.copy()
    other[:, 6:] = (other[:, 6:] + 1) % VOCAB
    branch, _ = stepper(other[:, 6:], s6)                 # reuse the older state
    np.testing.assert_allclose(branch, full_logits(model, other)[:, 6:], atol=1e-4)
    cont, _ = stepper(ids[:, 9:], s9)                      # the newer state is intact
    np.testing.assert_allclose(cont, full_logits(model, ids)[:, 9:], atol=1e-4)
    with pytest.raises(ValueError):
        stepper(random_ids(np.random.default_rng(4), 1, MAX_LEN + 1), stepper.initial_state(1))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_stream_logprobs_matches_full_sequence(name):
    _, model, stepper = get(name)
    n = MAX_LEN - 1 if name.startswith("transformer") else 60
    stream = np.random.default_rng(5).integers(1, VOCAB, size=n)
    lp = log_softmax(full_logits(model, np.concatenate([[BOS_ID], stream[:-1]])))[0]
    expected = lp[np.arange(n), stream]
    got = stream_logprobs(stepper, stream, chunk=7)
    assert got.shape == (n,)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_stream_logprobs_batched_segments():
    # conv: with warmup >= receptive field - 1 the segmented result is exact
    cfg, model, stepper = get("conv")
    n = 80
    stream = np.random.default_rng(6).integers(1, VOCAB, size=n)
    exact = stream_logprobs(stepper, stream, chunk=16)
    got = stream_logprobs(stepper, stream, chunk=16, batch_size=3, warmup=receptive_field(cfg) - 1)
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


@pytest.mark.parametrize("name", list(VARIANTS))
def test_generation_deterministic_greedy_and_no_bos(name):
    _, model, stepper = get(name)
    prompt = np.array([3, 4, 5])
    a = generate(stepper, prompt, 12, np.random.default_rng(42), temperature=1.0)
    b = generate(stepper, prompt, 12, np.random.default_rng(42), temperature=1.0)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (12,) and np.all(a != BOS_ID) and np.all((0 <= a) & (a < VOCAB))
    c = generate(stepper, prompt, 12, np.random.default_rng(42), temperature=0.8, top_k=5, top_p=0.9)
    assert np.all(c != BOS_ID)
    greedy = generate(stepper, prompt, 10, np.random.default_rng(0), temperature=0)
    seq = np.concatenate([[BOS_ID], prompt, greedy])
    logits = full_logits(model, seq[:-1])[0][len(prompt):]
    logits[:, BOS_ID] = -np.inf
    np.testing.assert_array_equal(greedy, np.argmax(logits, axis=-1))


def test_generation_never_emits_bos_even_when_favoured():
    cfg = tiny_cfg("gru")
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


@pytest.mark.parametrize("name", ["transformer", "transformer_tied"])
def test_transformer_sliding_window_past_max_context(name):
    _, model, stepper = get(name)
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
    """The default stepper (a recomputed window) of the example family: a window of context + 1
    holds everything a prediction sees, so greedy decoding far past it equals the full forward pass."""
    cfg = shared_tiny_cfg("families.window_mlp:WindowMLP", context=4, hidden=16)
    keras.utils.set_random_seed(6)
    model = build_model(cfg, VOCAB, MAX_LEN)
    stepper = make_stepper(model, cfg, MAX_LEN)
    assert stepper.max_context == cfg.context + 1
    ids = random_ids(np.random.default_rng(9), 2, 5)
    state = stepper.initial_state(2)
    first, state = stepper(ids[:, :3], state)
    second, state = stepper(ids[:, 3:], state)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), full_logits(model, ids), atol=1e-5)
    with pytest.raises(ValueError, match="re-prefill"):
        stepper(ids[:, :1], state)
    prompt = np.array([3, 4, 5, 6, 7, 8])
    greedy = generate(stepper, prompt, 3 * MAX_LEN, np.random.default_rng(0), temperature=0)
    seq = np.concatenate([[BOS_ID], prompt, greedy])
    logits = full_logits(model, seq[:-1])[0][len(prompt):]
    logits[:, BOS_ID] = -np.inf
    np.testing.assert_array_equal(greedy, np.argmax(logits, axis=-1))
