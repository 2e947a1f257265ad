"""What every model family must do, checked on every case of ``tests/family_cases.py``.

Every built-in family of the catalog, the example family from the user's own code and their
variants: float32 logits (B, T, V), also under mixed precision; causality; the stepper's host form
equal to the full forward pass (however the sequence is cut into calls, within its
``max_context``), its state a value, its device form equal to its host form; stream scoring equal
to the full forward pass; the compiled decoder equal to the reference decoder; a saved network
that loads back with identical logits; the served text generator on a saved network. A family
registered in the catalog gets all of it with no edit here.
"""
from types import SimpleNamespace

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras import ops  # noqa: E402

from pipeline.data.vocab_layout import BOS_ID  # noqa: E402
from pipeline.generation.decoding import generate  # noqa: E402
from pipeline.models import build_model, make_stepper  # noqa: E402
from pipeline.models.catalog import get_family  # noqa: E402
from pipeline.models.family import STREAM  # noqa: E402
from pipeline.scoring.stream import log_softmax, stream_logprobs  # noqa: E402
from tests.family_cases import (CASES, FAMILY_CASES, MAX_LEN, SEED, VOCAB, built, decoder,  # noqa: E402
                                forward, params, random_ids)

ALL = params(CASES)
TEXT = "The quick brown fox jumps over the lazy dog\n" * 5     # its 17 most frequent characters: VOCAB


def spans(sizes):
    """[(start, end)] of consecutive calls of the given sizes."""
    out, t = [], 0
    for size in sizes:
        out.append((t, t + size))
        t += size
    return out


def uneven(n):
    """Call sizes 1, 7, 3, 1, 12, 1, 7, ... adding up to n (the last one cut)."""
    sizes, pattern = [], (1, 7, 3, 1, 12)
    while sum(sizes) < n:
        sizes.append(min(pattern[len(sizes) % len(pattern)], n - sum(sizes)))
    return sizes


def step_through(stepper, ids, sizes):
    state, pieces = stepper.initial_state(ids.shape[0]), []
    for a, b in spans(sizes):
        logits, state = stepper(ids[:, a:b], state)
        assert logits.shape == (ids.shape[0], b - a, VOCAB) and logits.dtype == np.float32
        pieces.append(logits)
    return np.concatenate(pieces, axis=1), state


# ---- the network ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL)
def test_logits_are_float32_batch_time_vocab(case):
    model = built(case).model
    ids = random_ids(np.random.default_rng(0), 3, 17)
    logits = model(ids, training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    logits = np.asarray(logits)
    assert logits.shape == (3, 17, VOCAB) and np.all(np.isfinite(logits))
    assert np.asarray(model(ids[:, :1], training=False)).shape == (3, 1, VOCAB)


@pytest.mark.parametrize("case", params(FAMILY_CASES))
def test_mixed_precision_keeps_float32_logits(case):
    """Under a mixed global policy (``train.precision: auto`` on a GPU) the body computes in bfloat16
    and the logits stay float32, in the full forward pass and in the stepper."""
    if not get_family(case.family).mixed_precision:
        pytest.skip(f"family {case.name} always trains in float32")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(case.cfg, VOCAB, MAX_LEN, case.marker, case.image)
        ids = random_ids(np.random.default_rng(3), 2, 5)
        logits = model(ids, training=False)
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
        stepper = make_stepper(model, case.cfg, MAX_LEN)
        out, _ = stepper(ids, stepper.initial_state(2))
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, np.asarray(logits), atol=0.1)
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("case", ALL)
def test_causality(case):
    """logits[:, :t+1] depend on ids[:, :t+1] only.

    Every id after t is replaced by another, so any path from a later position to an earlier
    logit changes that logit and fails the first assertion: attention without its causal mask, a
    convolution padded on both sides ("same") or shifted by one, a recurrent layer run backwards
    or bidirectionally. The second assertion checks that the replacement reaches the network:
    logits[:, t+1] see ids[:, t+1], which all changed. An encoder-decoder owes it on its target
    only (t from its marker on): it reads the whole source at every target position.
    """
    model = built(case).model
    rng = np.random.default_rng(1)
    ids = random_ids(rng, 2, MAX_LEN)
    base = forward(model, ids)
    for t in (max(case.source, t) for t in (0, 8, MAX_LEN - 2)):
        changed = ids.copy()
        changed[:, t + 1:] = (ids[:, t + 1:] + rng.integers(1, VOCAB, size=ids[:, t + 1:].shape)) % VOCAB
        assert (changed[:, t + 1:] != ids[:, t + 1:]).all()
        out = forward(model, changed)
        np.testing.assert_allclose(out[:, :t + 1], base[:, :t + 1], atol=1e-5, rtol=0)
        for row in range(2 if t + 1 < case.live else 0):
            assert not np.allclose(out[row, t + 1], base[row, t + 1], atol=1e-5), (t, row)


# ---- the stepper ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL)
def test_stepper_logits_equal_the_full_forward(case):
    """A prefill then one token per call, and uneven calls, give the full forward pass's logits:
    over the stepper's whole ``max_context``, or, for an unbounded stepper (a stream), far past
    the training context. A bounded stepper refuses to hold more than ``max_context``."""
    model, stepper = built(case).model, built(case).stepper
    context = stepper.max_context
    assert context is None or 2 <= context <= MAX_LEN
    if get_family(case.family).protocol == STREAM:       # scored with one state carried across a split
        assert context is None
    n = context or 2 * MAX_LEN + 6
    ids = random_ids(np.random.default_rng(0), 2, n)
    full = forward(model, ids)
    prefill = min(5, n // 2)
    one_by_one, _ = step_through(stepper, ids, [prefill] + [1] * (n - prefill))
    np.testing.assert_allclose(one_by_one, full, atol=1e-4, rtol=0)
    first = case.source + 1                  # an encoder-decoder's first call holds its source
    chunked, state = step_through(stepper, ids, uneven(n) if first == 1 else [first] + uneven(n - first))
    np.testing.assert_allclose(chunked, full, atol=1e-4, rtol=0)
    if context is not None:
        with pytest.raises(ValueError, match="re-prefill"):
            stepper(ids[:, :1], state)                                   # a full state
        with pytest.raises(ValueError, match="re-prefill"):
            stepper(random_ids(np.random.default_rng(1), 1, context + 1), stepper.initial_state(1))


@pytest.mark.parametrize("case", ALL)
def test_stepper_state_is_a_value(case):
    """A state can be continued several times: continuing it does not change it (a branch from an
    older state, the same call twice, the newer state after the branch)."""
    model, stepper = built(case).model, built(case).stepper
    n = min(12, stepper.max_context or 12)
    a = n // 2
    m = a + (n - a) // 2
    ids = random_ids(np.random.default_rng(3), 1, n)
    other = ids.copy()
    other[:, a:] = 1 + ids[:, a:] % (VOCAB - 1)                        # differs from `ids` after a
    _, older = stepper(ids[:, :a], stepper.initial_state(1))
    first, newer = stepper(ids[:, a:m], older)
    branch, _ = stepper(other[:, a:], older)
    again, _ = stepper(ids[:, a:m], older)
    rest, _ = stepper(ids[:, m:], newer)
    np.testing.assert_allclose(branch, forward(model, other)[:, a:], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(again, first)
    np.testing.assert_allclose(np.concatenate([first, rest], axis=1), forward(model, ids)[:, a:], atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", ALL)
def test_device_step_logits_equal_the_host_stepper(case):
    """The device form (``device_state`` / ``device_step``) gives the host form's logits for a
    prefill, a chunk and single steps. Run eagerly here: the compiled decoder's test below runs it
    compiled (XLA), on every case too."""
    stepper = built(case).stepper
    n = min(9, stepper.max_context or 9)
    ids = ops.convert_to_tensor(random_ids(np.random.default_rng(3), 2, n))
    sizes = [n // 3, n // 3] + [1] * (n - 2 * (n // 3))                 # 3, 3, 1, 1, 1 (bounded: 1, 1, 1, 1)
    state, got = stepper.device_state(2), []
    for a, b in spans(sizes):
        logits, state = stepper.device_step(ids[:, a:b], state, ops.convert_to_tensor(a, "int32"))
        got.append(np.asarray(logits))
    want, _ = step_through(stepper, np.asarray(ids), sizes)
    got = np.concatenate(got, axis=1)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("case", ALL)
def test_stream_scoring_equals_the_full_forward(case):
    """``stream_logprobs`` (the scoring of a split) of a stream that fits the stepper's context:
    log p(x_t | BOS, x_<t) of one full forward pass, fed in chunks of 7."""
    model, stepper = built(case).model, built(case).stepper
    n = (stepper.max_context or 61) - 1
    stream = random_ids(np.random.default_rng(5), 1, n + 1)[0, 1:]
    lp = log_softmax(forward(model, np.concatenate([[BOS_ID], stream[:-1]])))[0]
    got = stream_logprobs(stepper, stream, chunk=7)
    assert got.shape == (n,)
    np.testing.assert_allclose(got, lp[np.arange(n), stream], atol=1e-4)


# ---- decoding ------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL)
def test_compiled_greedy_decoding_equals_the_reference_decoder(case):
    """Prompts of 1, 5 and MAX_LEN + 6 tokens (the last exceeds any window), 3 * MAX_LEN greedy
    tokens (windowed families slide): the compiled decoder emits the reference decoder's tokens.
    While the sequence fits one window, the reference's tokens are the argmax of the full forward."""
    b = built(case)
    rng = np.random.default_rng(4)
    prompts = [random_ids(rng, 1, n + 1)[0, 1:] for n in (max(1, case.source), 5, MAX_LEN + 6)]
    num = 3 * MAX_LEN
    got = decoder(case).generate(prompts, num, temperature=0.0)
    want = [generate(b.stepper, p, num, np.random.default_rng(0), temperature=0.0) for p in prompts]
    for row, ref in zip(got, want):
        assert row.dtype == np.int32 and row.shape == (num,)
        np.testing.assert_array_equal(row, ref)
        assert not (row == BOS_ID).any()
    seq = np.concatenate([[BOS_ID], prompts[0], want[0]])
    fits = min(len(seq) - 1, b.stepper.max_context or len(seq))      # positions of one window
    logits = forward(b.model, seq[:fits])[0, len(prompts[0]):]
    logits[:, BOS_ID] = -np.inf
    np.testing.assert_array_equal(want[0][:len(logits)], np.argmax(logits, axis=-1))


# ---- saved and served ----------------------------------------------------------------------------

_SAVED = {}


@pytest.fixture(scope="module")
def vocab_json(tmp_path_factory):
    """A char vocabulary of VOCAB tokens, so that the cached networks can serve it."""
    from pipeline.data.tokenizers import learn_tokenizer
    tok = learn_tokenizer("char", TEXT, VOCAB)
    assert tok.vocab_size == VOCAB
    path = tmp_path_factory.mktemp("vocab") / "vocab.json"
    tok.save(path)
    return path


def saved(case, tmp_path_factory):
    """The folder of ``case``'s network saved by ``save_network`` (once per process)."""
    from pipeline.models.network import save_network
    if case.id not in _SAVED:
        folder = tmp_path_factory.mktemp(f"net-{case.id}")
        save_network(folder, built(case).model, case.cfg, MAX_LEN, VOCAB)
        _SAVED[case.id] = folder
    return _SAVED[case.id]


@pytest.mark.parametrize("case", ALL)
def test_saved_network_loads_with_identical_logits(case, tmp_path_factory, tmp_path):
    """``save_network`` / ``load_network`` (evaluation, generation, serving) and a whole-model
    ``.keras`` file (the logged Keras model) give back the same network. The weights loaded into
    a fresh build are drawn from another seed first, so a load that kept them would show."""
    from pipeline.models.network import load_network
    b = built(case)
    ids = random_ids(np.random.default_rng(4), 2, 11)
    want = forward(b.model, ids)
    keras.utils.set_random_seed(SEED + 1)
    net = load_network(saved(case, tmp_path_factory))
    assert (net.cfg, net.seq_len, net.vocab_size) == (case.cfg, MAX_LEN, VOCAB)
    assert type(net.model) is type(b.model) and net.model.count_params() == b.model.count_params()
    np.testing.assert_array_equal(forward(net.model, ids), want)
    stepper = net.stepper()                      # (one call: each new shape is one more trace)
    assert stepper.max_context == b.stepper.max_context
    n = min(11, stepper.max_context or 11)
    out, _ = stepper(ids[:, :n], stepper.initial_state(2))
    np.testing.assert_allclose(out, want[:, :n], atol=1e-4, rtol=0)

    path = tmp_path / "model.keras"
    b.model.save(path)
    keras.utils.set_random_seed(SEED + 2)
    np.testing.assert_array_equal(forward(keras.models.load_model(path), ids), want)


@pytest.mark.parametrize("case", params(FAMILY_CASES))   # the variants' networks: saved and loaded above
def test_served_generator_on_a_saved_network(case, tmp_path_factory, vocab_json):
    """The pyfunc served by ``mlflow models serve``, loaded from a saved folder and its vocabulary:
    text for a prompt, the same for the same seed (in one request and across requests), another
    for another seed, and greedy text that is the reference decoder's on the original network."""
    from pipeline.data.tokenizers import load_tokenizer
    from pipeline.tracking.pyfunc import TextGenerator
    generator = TextGenerator()
    generator.load_context(SimpleNamespace(artifacts={"network": str(saved(case, tmp_path_factory)),
                                                      "vocab": str(vocab_json)}))
    request = {"prompt": ["The "] * 4, "seed": [7, 8, 7, 0], "temperature": [1.0, 1.0, 1.0, 0.0]}
    texts = list(generator.predict(None, request, params={"max_tokens": 12})["text"])
    assert all(isinstance(t, str) and t for t in texts), texts
    assert texts[0] == texts[2] and texts[0] != texts[1], texts
    assert list(generator.predict(None, request, params={"max_tokens": 12})["text"]) == texts
    tok = load_tokenizer(vocab_json)
    greedy = generate(built(case).stepper, tok.encode("The "), 12, np.random.default_rng(0), temperature=0.0)
    assert texts[3] == tok.decode(greedy)
