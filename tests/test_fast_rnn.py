"""Hoisted-projection recurrent layers (pipeline.models.fast_rnn) against the stock Keras layers."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.models import fast_rnn, recurrent  # noqa: E402
from pipeline.models import build_model  # noqa: E402
from pipeline.models.fast_rnn import FastGRU, FastLSTM, FastSimpleRNN  # noqa: E402
from tests.tiny_models import tiny_cfg  # noqa: E402

B, T, IN, UNITS = 3, 9, 5, 8
PAIRS = {
    "lstm": (keras.layers.LSTM, FastLSTM, 2),
    "gru": (keras.layers.GRU, FastGRU, 1),
    "rnn": (keras.layers.SimpleRNN, FastSimpleRNN, 1),
}
tf_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="gradients via tf.GradientTape")


def _pair(family, **kwargs):
    """A stock layer with random (non-default) biases and a fast layer holding the same weights."""
    stock_cls, fast_cls, n_states = PAIRS[family]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, T, IN)).astype("float32")
    stock = stock_cls(UNITS, return_sequences=True, return_state=True, **kwargs)
    fast = fast_cls(UNITS, return_sequences=True, return_state=True, **kwargs)
    stock(x)
    fast(x)
    stock.set_weights([w + rng.normal(scale=0.3, size=w.shape).astype("float32") for w in stock.get_weights()])
    fast.set_weights(stock.get_weights())
    init = [rng.normal(size=(B, UNITS)).astype("float32") for _ in range(n_states)]
    return stock, fast, x, init


def _close(a, b, atol=1e-5):
    """Equal up to float32 rounding: a relu LSTM's cell grows to ~25, where the summation order of
    the hoisted matmul (x W + b, then + h U) against the stock one moves the last bits."""
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=atol, rtol=1e-5)


@pytest.fixture(params=[True, False], ids=["custom_backward", "autodiff"])
def custom_backward(request, monkeypatch):
    monkeypatch.setattr(fast_rnn._HoistedRNN, "custom_backward", request.param)
    return request.param


def _fast_path_calls(monkeypatch) -> list:
    """Records every call that took the hoisted path (it projects the inputs once per call)."""
    calls, original = [], fast_rnn._HoistedRNN._project
    monkeypatch.setattr(fast_rnn._HoistedRNN, "_project", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    return calls


@pytest.mark.parametrize("family", list(PAIRS))
def test_same_weights_layout(family):
    stock, fast, _, _ = _pair(family)
    assert [(w.name, tuple(w.shape)) for w in stock.weights] == [(w.name, tuple(w.shape)) for w in fast.weights]
    assert fast.get_config()["units"] == UNITS and type(fast).from_config(fast.get_config()).units == UNITS


@pytest.mark.parametrize("family", list(PAIRS))
def test_outputs_and_states_match(family, custom_backward, monkeypatch):
    stock, fast, x, init = _pair(family)
    cell_calls = []
    original = type(fast.cell).call
    monkeypatch.setattr(type(fast.cell), "call", lambda self, *a, **k: cell_calls.append(1) or original(self, *a, **k))
    fast_calls = _fast_path_calls(monkeypatch)
    fast_out = [fast(x, initial_state=state) for state in (None, init)]
    assert len(fast_calls) == 2     # the hoisted loop ran ...
    assert not cell_calls                                # ... and the per-step cell never did
    for state, out in zip((None, init), fast_out):
        _close(out, stock(x, initial_state=state))
    assert cell_calls                                    # (the stock layer steps its cell)
    # return_sequences=False, no return_state: last output only
    last = type(fast)(UNITS)
    last(x)
    last.set_weights(stock.get_weights())
    _close([last(x)], [stock(x)[0][:, -1]])


@tf_only
@pytest.mark.parametrize("family", list(PAIRS))
@pytest.mark.parametrize("jit,custom", [(False, True), (False, False), (True, True)],
                         ids=["graph-custom_backward", "graph-autodiff", "xla-custom_backward"])
def test_gradients_match(family, jit, custom, monkeypatch):
    import tensorflow as tf
    monkeypatch.setattr(fast_rnn._HoistedRNN, "custom_backward", custom)
    stock, fast, x, init = _pair(family)
    rng = np.random.default_rng(1)
    x, init = tf.constant(x), [tf.constant(s) for s in init]
    weights = [rng.normal(size=(B, T, UNITS)).astype("float32")] + \
              [rng.normal(size=(B, UNITS)).astype("float32") for _ in init]

    def loss_and_grads(layer):
        @tf.function(jit_compile=jit)
        def run():
            with tf.GradientTape() as tape:
                tape.watch([x] + init)
                out = layer(x, initial_state=init, training=True)
                loss = tf.add_n([tf.reduce_sum(o * w) for o, w in zip(out, weights)])
            return [loss] + tape.gradient(loss, [x] + init + layer.trainable_variables)
        return run()

    _close(loss_and_grads(fast), loss_and_grads(stock), atol=1e-4)


@tf_only
@pytest.mark.parametrize("family", list(PAIRS))
def test_unknown_length_and_dropout(family):
    """Time axis unknown at trace time (the stepper's case) and input dropout in training."""
    import tensorflow as tf
    stock, fast, x, init = _pair(family)
    spec = tf.TensorSpec((None, None, IN), tf.float32)
    run_fast = tf.function(lambda v: fast(v, initial_state=init), input_signature=[spec])
    _close(run_fast(x), stock(x, initial_state=init))

    stock_d, fast_d, x, _ = _pair(family, dropout=0.4, seed=11)
    _close(fast_d(x, training=True), stock_d(x, training=True))      # same seed: same masks
    assert not np.allclose(np.asarray(fast_d(x, training=True)[0]), np.asarray(fast_d(x)[0]))


@pytest.mark.parametrize("family,kwargs", [("gru", {"reset_after": False}), ("lstm", {"go_backwards": True}),
                                           ("rnn", {"unroll": True}), ("lstm", {"activation": "relu"})])
def test_other_settings_use_the_hoisted_loop(family, kwargs, monkeypatch):
    """Settings outside the hand-written backward pass still take the hoisted (autodiff) loop."""
    stock, fast, x, init = _pair(family, **kwargs)
    fast_calls = _fast_path_calls(monkeypatch)
    _close(fast(x, initial_state=init), stock(x, initial_state=init))
    assert len(fast_calls) == 1


@tf_only
def test_mixed_precision_gradients():
    import tensorflow as tf
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        for family in PAIRS:
            stock, fast, x, init = _pair(family)
            results = []
            for layer in (stock, fast):
                with tf.GradientTape() as tape:
                    out = layer(x, initial_state=init, training=True)
                    loss = tf.reduce_sum(tf.cast(out[0], "float32") ** 2)
                grads = tape.gradient(loss, layer.trainable_variables)
                assert all(g.dtype == "float32" for g in grads) and out[0].dtype == "bfloat16"
                results.append(grads)
            scale = max(float(np.max(np.abs(g))) for g in results[0])
            _close(results[1], results[0], atol=0.05 * scale)
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_defers_to_stock_where_cudnn_would_run(family, monkeypatch):
    stock, fast, x, init = _pair(family)
    monkeypatch.setattr(type(fast), "_cudnn_would_run", lambda self: True)
    fast_calls = _fast_path_calls(monkeypatch)
    _close(fast(x, initial_state=init), stock(x, initial_state=init))
    assert not fast_calls


@pytest.mark.parametrize("family", list(PAIRS))
def test_mask_falls_back_to_stock(family, monkeypatch):
    stock, fast, x, _ = _pair(family)
    mask = np.ones((B, T), bool)
    mask[:, -3:] = False
    fast_calls = _fast_path_calls(monkeypatch)
    _close(fast(x, mask=mask), stock(x, mask=mask))
    assert not fast_calls


@pytest.mark.parametrize("family", list(PAIRS))
def test_checkpoints_interchange_with_stock_model(family, monkeypatch):
    cfg = tiny_cfg(family, embed_dim=6, units=UNITS, layers=2, dropout=0.0, embed_init="default")
    fast_model = build_model(cfg, 11, T)
    assert isinstance(fast_model.rnns[0], PAIRS[family][1])
    monkeypatch.setattr(recurrent.Recurrent, "layer_class", lambda self: PAIRS[self.name][0])
    stock_model = build_model(cfg, 11, T)
    assert type(stock_model.rnns[0]) is PAIRS[family][0]
    fast_model.set_weights(stock_model.get_weights())
    ids = np.random.default_rng(2).integers(0, 11, (2, T)).astype("int32")
    _close([fast_model(ids)], [stock_model(ids)])
