"""The TensorFlow side of the diagnostics: a network as a scorer, gradient flow over distance, attention.

TensorFlow-specific (a GradientTape on the embedding output), kept in this one module. Every
built-in family names its first layer ``embedding``; the network is split there into the lookup and
the rest, so the gradient of the last position's loss w.r.t. each input embedding is one backward
pass. Attention is read from the network's attention blocks, found by layer type (never a family
name).
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


def split_at_embedding(model):
    """(embedding layer, rest: embedding output -> logits), or None when the graph cannot be cut there
    (no layer named ``embedding``, or one whose weights the head reuses, as tied embeddings do)."""
    import keras
    try:
        emb = model.get_layer("embedding")
        head = keras.Model(emb._inbound_nodes[0].output_tensors[0], model.outputs[0])
    except ValueError:
        return None
    return emb, head


def last_position_losses(head, e, targets):
    """Loss (B,) at the last position of windows whose embeddings are ``e`` (B, T, D)."""
    import tensorflow as tf
    logits = tf.cast(head(e, training=False), tf.float32)[:, -1]
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def gradient_norms(model, ctx: np.ndarray, targets: np.ndarray) -> np.ndarray | None:
    """Mean over rows of ‖∂ℓ_T/∂e_{T−k}‖ for k = 0 … T−1 (index k), ℓ_T the loss of ``targets``
    after the windows ``ctx`` (B, T); None when the network has no separable embedding."""
    import tensorflow as tf
    parts = split_at_embedding(model)
    if parts is None:
        return None
    emb, head = parts

    @tf.function
    def norms(x, y):
        e = tf.cast(emb(x), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(e)
            total = tf.reduce_sum(last_position_losses(head, e, y))   # rows are independent
        return tf.norm(tape.gradient(total, e), axis=-1)

    g = norms(tf.constant(ctx, tf.int32), tf.constant(targets, tf.int32)).numpy().astype(np.float64)
    return g.mean(axis=0)[::-1].copy()


def attention_layers(model) -> list:
    """The model's self-attention blocks (by layer type, ``pipeline.models.layers.DecoderBlock``)."""
    from pipeline.models.layers import DecoderBlock
    return [layer for layer in model.layers if isinstance(layer, DecoderBlock)]


def block_attention(block, x):
    """(B, heads, T, T) causal softmax weights of ``block`` on its input ``x``: the weights that
    ``keras.ops.dot_product_attention`` applies inside the block (scale 1/sqrt(head_dim))."""
    from keras import ops
    length = x.shape[1]
    q, k, _ = (block._heads(t, length) for t in ops.split(block.qkv(block.ln1(x)), 3, axis=-1))
    scores = ops.einsum("bqhd,bkhd->bhqk", ops.cast(q, "float32"), ops.cast(k, "float32"))
    scores = scores / float(np.sqrt(block.head_dim))
    causal = np.tril(np.ones((length, length), bool))
    return ops.softmax(ops.where(causal, scores, -1e9), axis=-1)


def attention_maps(model, ctx: np.ndarray) -> list[np.ndarray]:
    """Attention weights (B, heads, T, T) of every attention block on the windows ``ctx``; [] when
    the network has none."""
    import keras
    blocks = attention_layers(model)
    if not blocks:
        return []
    inputs = keras.Model(model.inputs[0], [block.input for block in blocks])(ctx, training=False)
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    return [np.asarray(block_attention(block, x), np.float64) for block, x in zip(blocks, inputs)]


def mean_attention_distance(probs: np.ndarray) -> np.ndarray:
    """(heads,): mean over rows and query positions of Σ_j p(i→j)·(i − j), in tokens."""
    t = probs.shape[-1]
    distance = np.arange(t)[:, None] - np.arange(t)[None, :]
    return (probs * np.maximum(distance, 0)).sum(-1).mean(axis=(0, 2))
