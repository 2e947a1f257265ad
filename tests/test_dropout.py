"""seqlab's Dropout (pipeline/models/layers.py): the law of keras.layers.Dropout, drawn by Philox on
TensorFlow (Keras's own draw leaves the algorithm to run time, which XLA on a CPU makes ~100x slower)."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.models.layers import Dropout  # noqa: E402


@pytest.mark.parametrize("jit", [False, True])
def test_dropout_keeps_one_minus_rate_scaled_and_is_seeded(jit):
    import tensorflow as tf
    x = np.random.default_rng(0).uniform(1.0, 2.0, (64, 16, 64)).astype(np.float32)
    layer = Dropout(0.3, seed=7)
    call = tf.function(lambda t: layer(t, training=True), jit_compile=jit)
    a, b = np.asarray(call(x)), np.asarray(call(x))
    kept = a != 0
    assert abs(kept.mean() - 0.7) < 0.01                       # 65,536 draws: 5 standard errors
    np.testing.assert_allclose(a[kept], x[kept] / 0.7, rtol=1e-6)
    assert not np.array_equal(kept, b != 0)                     # a fresh mask at every call
    again = Dropout(0.3, seed=7)
    np.testing.assert_array_equal(np.asarray(tf.function(lambda t: again(t, training=True), jit_compile=jit)(x)), a)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)


def test_noise_shape_shares_the_mask_along_its_none_axes():
    x = np.ones((4, 8, 16), np.float32)
    out = np.asarray(Dropout(0.5, noise_shape=(None, 1, None), seed=1)(x, training=True))
    assert (out == out[:, :1, :]).all() and 0 < (out != 0).mean() < 1
