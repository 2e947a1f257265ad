"""Model families: shapes, dtypes, causality, parameter counts, trainability, init, saving."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.errors import SeqlabError  # noqa: E402
from pipeline.models import build_model, count_parameters, make_stepper  # noqa: E402
from pipeline.models.conv import conv_dilations, receptive_field  # noqa: E402
from pipeline.models.catalog import builtin_families, parse_model  # noqa: E402
from pipeline.data.vocab_layout import BOS_ID  # noqa: E402
from tests.tiny_models import tiny_cfg  # noqa: E402

VOCAB = 23
MAX_LEN = 32


VARIANTS = {
    "rnn": tiny_cfg("rnn"),
    "lstm": tiny_cfg("lstm"),
    "gru": tiny_cfg("gru"),
    "conv": tiny_cfg("conv"),
    "conv_k3": tiny_cfg("conv", kernel_size=3, dilations=[1, 3]),
    "transformer": tiny_cfg("transformer"),
    "transformer_tied": tiny_cfg("transformer", tie_embeddings=True, embed_dim=16, units=16, ff_dim=24),
    "window_mlp": tiny_cfg("families.window_mlp:WindowMLP", context=4, hidden=16),
    "window_mlp_direct": tiny_cfg("families.window_mlp:WindowMLP", context=3, hidden=8, direct=True),
}

_MODELS = {}


def get_model(name):
    if name not in _MODELS:
        keras.utils.set_random_seed(1)
        _MODELS[name] = build_model(VARIANTS[name], VOCAB, MAX_LEN)
    return _MODELS[name]


def random_ids(rng, batch, length):
    ids = rng.integers(1, VOCAB, size=(batch, length)).astype(np.int32)
    ids[:, 0] = BOS_ID
    return ids


@pytest.mark.parametrize("name", list(VARIANTS))
def test_shape_dtype_and_parameter_count(name):
    model = get_model(name)
    ids = random_ids(np.random.default_rng(0), 3, 17)
    logits = np.asarray(model(ids, training=False))
    assert logits.shape == (3, 17, VOCAB)
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    n = count_parameters(model)
    assert isinstance(n, int) and n > 0
    assert n == model.count_params()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_causality(name):
    model = get_model(name)
    rng = np.random.default_rng(1)
    length = MAX_LEN if name.startswith("transformer") else 40
    ids = random_ids(rng, 2, length)
    base = np.asarray(model(ids, training=False))
    for t in (1, 9, length - 1):
        changed = ids.copy()
        changed[:, t:] = (changed[:, t:] + rng.integers(1, VOCAB - 1, size=changed[:, t:].shape)) % VOCAB
        out = np.asarray(model(changed, training=False))
        np.testing.assert_allclose(out[:, :t], base[:, :t], atol=1e-5, rtol=0)
        assert not np.allclose(out[:, t], base[:, t], atol=1e-5)   # position t does see its input


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "conv", "transformer", "transformer_tied", "window_mlp"])
def test_training_reduces_loss(name):
    keras.utils.set_random_seed(2)
    model = build_model(VARIANTS[name], VOCAB, MAX_LEN)
    pattern = np.array([3, 4, 5, 6, 7, 3, 5, 7], np.int32)
    stream = np.tile(pattern, 20)
    x = np.stack([np.concatenate([[BOS_ID], stream[i:i + 23]]) for i in range(8)]).astype(np.int32)
    y = np.stack([stream[i:i + 24] for i in range(8)]).astype(np.int32)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = [float(model.train_on_batch(x, y)) for _ in range(25)]   # loss before each update
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses


@pytest.mark.parametrize("family", ["lstm", "conv", "transformer"])
def test_embedding_init(family):
    vocab = 200
    for init, lo, hi in (("normal", 0.9, 1.1), ("default", 0.0, 0.06)):
        cfg = tiny_cfg(family, embed_init=init, embed_dim=64, units=64, **({"heads": 4} if family == "transformer" else {}))
        model = build_model(cfg, vocab, MAX_LEN)
        table = np.asarray(model.embedding.embeddings)
        assert table.shape == (vocab, 64)
        assert lo < table.std() < hi, (family, init, table.std())


@pytest.mark.parametrize("family", ["rnn", "lstm", "gru"])
def test_uniform_recurrent_init_is_pytorchs(family):
    units = 400
    bound = 1 / np.sqrt(units)
    model = build_model(tiny_cfg(family, units=units, layers=2, recurrent_init="uniform"), VOCAB, MAX_LEN)
    weights = [model.rnns[i].cell for i in range(2)]
    arrays = [np.asarray(w) for cell in weights for w in cell.weights] + \
             [np.asarray(w) for w in model.head.weights]
    for a in arrays:   # every recurrent weight and bias, the output kernel and bias: U(-1/sqrt(units), ...)
        assert np.abs(a).max() <= bound and a.std() > 0.7 * bound / np.sqrt(3), a.shape
    assert len({a.tobytes() for a in arrays}) == len(arrays)      # independent draws
    default = build_model(tiny_cfg(family, units=units, layers=2), VOCAB, MAX_LEN)
    if family == "lstm":                                           # Keras's forget-gate bias of 1 is gone
        assert np.allclose(np.asarray(default.rnns[0].cell.bias)[units:2 * units], 1.0)
        assert np.abs(np.asarray(weights[0].bias)[units:2 * units]).max() <= bound


def test_conv_dilations_and_receptive_field():
    cfg = tiny_cfg("conv", kernel_size=2, dilations=[1, 2, 4, 8, 1, 2, 4, 8])
    assert conv_dilations(cfg) == [1, 2, 4, 8, 1, 2, 4, 8]
    assert receptive_field(cfg) == 1 + 2 * 15
    assert receptive_field(tiny_cfg("conv", kernel_size=3, dilations=[1, 3])) == 1 + 2 * 4
    model = build_model(cfg, VOCAB, MAX_LEN)
    assert len(model.blocks) == 8
    with pytest.raises(ValueError):
        build_model(tiny_cfg("conv", dilations=[]), VOCAB, MAX_LEN)


def test_unknown_family_and_bad_heads():
    with pytest.raises(SeqlabError, match="did you mean 'lstm'"):
        tiny_cfg("lsmt")
    with pytest.raises(SeqlabError, match="not divisible by heads"):
        parse_model({"family": "transformer", "units": 18, "heads": 4}, "models.x")
    assert set(builtin_families()) == {"rnn", "lstm", "gru", "conv", "transformer"}


def test_mixed_precision_keeps_float32_logits():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        ids = random_ids(np.random.default_rng(3), 2, 9)
        for name in ("gru", "conv", "transformer_tied"):
            model = build_model(VARIANTS[name], VOCAB, MAX_LEN)
            logits = model(ids, training=False)
            assert keras.backend.standardize_dtype(logits.dtype) == "float32", name
            stepper = make_stepper(model, VARIANTS[name], MAX_LEN)
            out, _ = stepper(ids, stepper.initial_state(2))
            assert out.dtype == np.float32
            np.testing.assert_allclose(out, np.asarray(logits), atol=0.1)
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("name", ["lstm", "conv", "transformer_tied"])
def test_save_and_load(name, tmp_path):
    model = get_model(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    ids = random_ids(np.random.default_rng(4), 2, 11)
    np.testing.assert_allclose(np.asarray(loaded(ids)), np.asarray(model(ids)), atol=1e-6)
    stepper = make_stepper(loaded, VARIANTS[name], MAX_LEN)
    out, _ = stepper(ids, stepper.initial_state(2))
    np.testing.assert_allclose(out, np.asarray(model(ids)), atol=1e-4)
