"""The TensorFlow side of the diagnostics: a network as a scorer, gradient flow over distance, attention.

TensorFlow-specific (a GradientTape on the token vectors), kept in this one module. The network
says what its token vectors are (``SequenceModel.embed``) and runs the rest of its forward pass
from them (``call_with_cache(..., embedded=e)``), so the gradient of the last position's loss
w.r.t. each input vector is one backward pass; attention weights are what the network reports
(``SequenceModel.attention_maps``). Nothing here knows a layer's name or a family.
"""
from __future__ import annotations

import numpy as np


def network_scorer(model, batch_size: int = 64):
    """``score(ctx, lengths, targets)`` of a causal Keras model: the log-prob at ``lengths - 1``."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def last(x, at, y):
        logits = tf.cast(model(x, training=False), tf.float32)
        picked = tf.gather(logits, at, batch_dims=1)
        return -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=picked)

    def score(ctx, lengths, targets):
        out = []
        for i in range(0, len(ctx), batch_size):
            n, y = lengths[i:i + batch_size], targets[i:i + batch_size]
            x = ctx[i:i + batch_size, :int(np.max(n))]   # short contexts run short (causal: the rest is padding)
            rows = len(x)
            if rows < batch_size:   # a full batch: pad the last one with repeats
                pad = batch_size - rows
                x, n, y = (np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) for a in (x, n, y))
            lp = last(tf.constant(x, tf.int32), tf.constant(np.asarray(n) - 1, tf.int32),
                      tf.constant(y, tf.int32)).numpy()
            out.append(lp[:rows])
        return np.concatenate(out).astype(np.float64)
    return score


def last_position_losses(model, ids, e, targets):
    """Loss (B,) at the last position of windows ``ids`` whose token vectors are ``e`` (B, T, D)."""
    import tensorflow as tf
    logits = tf.cast(model.call_with_cache(ids, embedded=e, training=False)[0], tf.float32)[:, -1]
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def gradient_norms(model, ctx: np.ndarray, targets: np.ndarray) -> np.ndarray | None:
    """Mean over rows of ‖∂ℓ_T/∂e_{T−k}‖ for k = 0 … T−1 (index k), ℓ_T the loss of ``targets``
    after the windows ``ctx`` (B, T), e the token vectors (``model.embed``); None when the network
    does not expose them (a model that is not a ``SequenceModel``)."""
    import tensorflow as tf

    from pipeline.models.sequence_model import SequenceModel
    if not isinstance(model, SequenceModel):
        return None

    @tf.function
    def norms(x, y):
        e = tf.cast(model.embed(x), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(e)
            total = tf.reduce_sum(last_position_losses(model, x, e, y))   # rows are independent
        return tf.norm(tape.gradient(total, e), axis=-1)

    g = norms(tf.constant(ctx, tf.int32), tf.constant(targets, tf.int32)).numpy().astype(np.float64)
    return g.mean(axis=0)[::-1].copy()


def attention_maps(model, ctx: np.ndarray) -> list[np.ndarray]:
    """Attention weights (B, heads, T, T) of every attention block on the windows ``ctx``, as the
    network reports them (``SequenceModel.attention_maps``); [] when it has none."""
    maps = getattr(model, "attention_maps", None)
    return [np.asarray(a, np.float64) for a in maps(ctx)] if maps is not None else []


def mean_attention_distance(probs: np.ndarray) -> np.ndarray:
    """(heads,): mean over rows and query positions of Σ_j p(i→j)·(i − j), in tokens."""
    t = probs.shape[-1]
    distance = np.arange(t)[:, None] - np.arange(t)[None, :]
    return (probs * np.maximum(distance, 0)).sum(-1).mean(axis=(0, 2))
