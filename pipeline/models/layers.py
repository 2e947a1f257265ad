"""Custom Keras 3 layers shared by the model families (backend-agnostic: keras.ops only).

Every layer here is registered for ``.keras`` serialisation under the package "seqlab", so a
model saved with ``model.save(path)`` loads with ``keras.models.load_model(path)`` once
``pipeline.models`` is imported.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

PACKAGE = "seqlab"


def embedding_initializer(embed_init: str):
    """"default" = Keras's uniform(-0.05, 0.05); "normal" = N(0, 1) like torch.nn.Embedding."""
    if embed_init == "default":
        return "uniform"
    if embed_init == "normal":
        return keras.initializers.RandomNormal(mean=0.0, stddev=1.0)
    raise ValueError(f"unknown embed_init {embed_init!r}; expected 'default' or 'normal'")


@keras.saving.register_keras_serializable(package=PACKAGE)
class Dropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` with its mask drawn as ``uniform >= rate``, by Philox on TensorFlow.

    Keras's TensorFlow random ops leave TensorFlow to pick the algorithm (``auto_select``) from a
    seed known only at run time; compiled by XLA on a CPU that draw costs about 210 ms per million
    numbers against 5 ms with Philox named (2-core Xeon), and made the recurrent
    encoder-decoder's training step 2.7x slower at dropout 0.2. Other backends draw with
    ``keras.random.uniform``. The mask has the same law (each element kept with probability
    1 - rate, scaled by 1 / (1 - rate)) from the layer's own seed generator, so a run stays
    reproducible.
    """

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        shape = ops.shape(inputs) if self.noise_shape is None else self._get_concrete_noise_shape(inputs)
        keep = self._uniform(shape) >= self.rate
        return ops.where(keep, inputs * ops.cast(1.0 / (1.0 - self.rate), inputs.dtype), ops.zeros_like(inputs))

    def _uniform(self, shape):
        if keras.backend.backend() != "tensorflow":
            return keras.random.uniform(shape, seed=self.seed_generator)
        import tensorflow as tf
        seed = tf.cast(tf.math.floormod(self.seed_generator.next(), tf.int32.max - 1), tf.int32)  # as Keras casts it
        return tf.random.stateless_uniform(shape, seed=seed, alg="philox")

    def _get_concrete_noise_shape(self, inputs):
        concrete = ops.shape(inputs)
        return tuple(c if n is None else n for n, c in zip(self.noise_shape, concrete))


@keras.saving.register_keras_serializable(package=PACKAGE)
class TokenEmbedding(keras.layers.Layer):
    """Token embedding that can also be applied in reverse as a tied output projection.

    ``layer(ids)`` -> (B, T, D) vectors; ``layer(h, reverse=True)`` -> float32 logits
    ``h @ E^T + b`` (computed in float32 so mixed precision keeps logits in float32).
    """

    def __init__(self, vocab_size, dim, embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.dim = int(dim)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            shape=(self.vocab_size, self.dim), initializer=self.embeddings_initializer,
            name="embeddings")
        self.output_bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros",
                                           name="output_bias")
        self.built = True

    def call(self, inputs, reverse=False):
        if reverse:
            h = ops.cast(inputs, "float32")
            table = ops.cast(self.embeddings, "float32")
            return ops.matmul(h, ops.transpose(table)) + ops.cast(self.output_bias, "float32")
        ids = ops.cast(inputs, "int32")
        return ops.take(ops.cast(self.embeddings, self.compute_dtype), ids, axis=0)

    def compute_output_spec(self, inputs, reverse=False):
        if reverse:
            return keras.KerasTensor(tuple(inputs.shape[:-1]) + (self.vocab_size,), dtype="float32")
        return keras.KerasTensor(tuple(inputs.shape) + (self.dim,), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, dim=self.dim,
                      embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer))
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute positions added to (B, T, D) inputs.

    ``start`` (B,) int32 is the absolute position of the first of the T inputs (KV-cached
    decoding); None means 0. Positions must stay below ``max_len``.
    """

    def __init__(self, max_len, embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        self.max_len = int(max_len)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        self.position_embeddings = self.add_weight(
            shape=(self.max_len, input_shape[-1]), initializer=self.embeddings_initializer,
            name="position_embeddings")
        self.built = True

    def call(self, inputs, start=None, positions=None):
        """``positions`` (B, T) int32, when given, are each input's own position (an
        encoder-decoder's target counts from its marker) and ``start`` is ignored."""
        table = ops.cast(self.position_embeddings, inputs.dtype)
        if positions is not None:
            return inputs + ops.take(table, ops.cast(positions, "int32"), axis=0)
        length = ops.shape(inputs)[1]
        positions = ops.arange(length, dtype="int32")
        if start is None:
            return inputs + ops.take(table, positions, axis=0)[None]
        positions = ops.cast(start, "int32")[:, None] + positions[None, :]
        return inputs + ops.take(table, positions, axis=0)

    def compute_output_spec(self, inputs, start=None, positions=None):
        return keras.KerasTensor(inputs.shape, dtype=inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(max_len=self.max_len,
                      embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer))
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class DecoderBlock(keras.layers.Layer):
    """Pre-LN causal self-attention + GELU feed-forward block.

    Attention is ``keras.ops.dot_product_attention``, so that every backend runs its own kernel
    for it (PyTorch's scaled_dot_product_attention; on a GPU, JAX's cuDNN attention where dtype
    and shapes allow it; TensorFlow: XLA einsums). It has no dropout on the attention weights:
    ``dropout`` applies to the attention output and the feed-forward output (the residual
    branches).

    ``block(x)`` is the plain causal forward over (B, T, D); :meth:`decode` continues a sequence
    held in fixed-size key/value caches (the model's ``call_with_cache``).
    """

    def __init__(self, units, heads, ff_dim, dropout=0.0, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        if units % heads:
            raise ValueError(f"transformer width {units} is not divisible by heads={heads}")
        self.units, self.heads, self.ff_dim = int(units), int(heads), int(ff_dim)
        self.head_dim = self.units // self.heads
        self.dropout, self.epsilon = float(dropout), float(epsilon)
        self.ln1 = keras.layers.LayerNormalization(epsilon=epsilon, name="ln1", dtype=self.dtype_policy)
        self.qkv = keras.layers.Dense(3 * self.units, name="qkv", dtype=self.dtype_policy)
        self.attn_out = keras.layers.Dense(self.units, name="attn_out", dtype=self.dtype_policy)
        self.ln2 = keras.layers.LayerNormalization(epsilon=epsilon, name="ln2", dtype=self.dtype_policy)
        self.ff_in = keras.layers.Dense(self.ff_dim, activation="gelu", name="ff_in", dtype=self.dtype_policy)
        self.ff_out = keras.layers.Dense(self.units, name="ff_out", dtype=self.dtype_policy)
        self.drop = Dropout(self.dropout) if self.dropout > 0 else None

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.ln1.build(shape)
        self.qkv.build(shape)
        self.attn_out.build(shape[:-1] + (self.units,))
        self.ln2.build(shape)
        self.ff_in.build(shape)
        self.ff_out.build(shape[:-1] + (self.ff_dim,))
        self.built = True

    def _heads(self, t, length):
        # (B, T, D) -> (B, T, H, Dh), the layout of keras.ops.dot_product_attention
        return ops.reshape(t, (-1, length, self.heads, self.head_dim))

    def call(self, x, training=None):
        length = ops.shape(x)[1]
        h = self.ln1(x)
        q, k, v = (self._heads(t, length) for t in ops.split(self.qkv(h), 3, axis=-1))
        att = ops.dot_product_attention(q, k, v, is_causal=True)
        att = self.attn_out(ops.reshape(att, (-1, length, self.units)))
        if self.drop is not None:
            att = self.drop(att, training=training)
        x = x + att
        ff = self.ff_out(self.ff_in(self.ln2(x)))
        if self.drop is not None:
            ff = self.drop(ff, training=training)
        return x + ff

    def attention(self, x):
        """(B, heads, T, T) causal softmax weights of this block on its input ``x``: the weights
        that ``keras.ops.dot_product_attention`` applies in :meth:`call` (scale 1/sqrt(head_dim))."""
        length = x.shape[1]
        q, k, _ = (self._heads(t, length) for t in ops.split(self.qkv(self.ln1(x)), 3, axis=-1))
        scores = ops.einsum("bqhd,bkhd->bhqk", ops.cast(q, "float32"), ops.cast(k, "float32"))
        scores = scores / float(np.sqrt(self.head_dim))
        causal = np.tril(np.ones((length, length), bool))
        return ops.softmax(ops.where(causal, scores, -1e9), axis=-1)

    def decode(self, x, keys, values, held):
        """Cached decoding on the device: ``x`` (B, T, D) holds positions held..held+T-1.

        ``keys``/``values`` (B, H, S, Dh) are this block's fixed-size caches (slots < ``held``
        valid, ``held`` a scalar int32 tensor). The new keys/values are written at ``held`` first
        (an in-place dynamic update under XLA), then each query attends to slots <= its
        position: one pass over the cache in its own layout, no concatenation or transpose of
        it. Returns ``(y, keys, values)``; equal to :meth:`call` over the whole sequence.
        """
        length, slots = ops.shape(x)[1], keys.shape[2]   # length: a tensor where traced unknown
        h = self.ln1(x)
        q, k, v = (ops.transpose(self._heads(t, length), (0, 2, 1, 3)) for t in ops.split(self.qkv(h), 3, axis=-1))
        keys = ops.slice_update(keys, (0, 0, held, 0), ops.cast(k, keys.dtype))
        values = ops.slice_update(values, (0, 0, held, 0), ops.cast(v, values.dtype))
        scores = ops.einsum("bhtd,bhsd->bhts", ops.cast(q, "float32"), keys) * (self.head_dim ** -0.5)
        visible = ops.arange(slots, dtype="int32")[None, :] <= held + ops.arange(length, dtype="int32")[:, None]
        scores = ops.where(visible[None, None], scores, ops.full_like(scores, -1e30))
        att = ops.einsum("bhts,bhsd->bhtd", ops.softmax(scores, axis=-1), values)
        att = ops.reshape(ops.transpose(ops.cast(att, x.dtype), (0, 2, 1, 3)), (-1, length, self.units))
        x = x + self.attn_out(att)
        return x + self.ff_out(self.ff_in(self.ln2(x))), keys, values

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, heads=self.heads, ff_dim=self.ff_dim,
                      dropout=self.dropout, epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatedResidualBlock(keras.layers.Layer):
    """WaveNet residual block: dilated causal conv -> tanh * sigmoid gate -> 1x1 residual + skip.

    The dilated causal convolution (kernel (k, C, 2C), tap j looks back (k-1-j)*d steps, the
    same layout as keras.layers.Conv1D) is computed as one matmul over the k shifted copies of
    the input, which is faster on CPU than a dilated conv and lets decoding carry the needed
    past inputs explicitly:

    Always returns ``(x + res, skip, new_buffer)`` (same structure on every call, as Keras
    requires of a layer shared by two functional models): new_buffer (B, (k-1)*d, C) float32
    holds the block's last (k-1)*d inputs.
    ``block(x)``: the plain forward with zero (causal) left padding;
    ``block(x, buffer=b)``: b (B, (k-1)*d, C) holds the block's previous (k-1)*d inputs (zeros
    at stream start), so stepping chunk by chunk is exact for any chunk length.
    """

    def __init__(self, channels, kernel_size, dilation, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.kernel_size, self.dilation = int(channels), int(kernel_size), int(dilation)
        self.dropout = float(dropout)
        self.history = (self.kernel_size - 1) * self.dilation
        self.res_skip = keras.layers.Dense(2 * self.channels, name="res_skip", dtype=self.dtype_policy)
        self.drop = Dropout(self.dropout) if self.dropout > 0 else None
        # made here, not in build: every initialiser draws its seed when it is made, so a model's
        # weights depend on the order its layers are made in, never on when they are built
        self.kernel_initializer = keras.initializers.GlorotUniform()

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(self.kernel_size, self.channels, 2 * self.channels),
            initializer=self.kernel_initializer, name="kernel")
        self.bias = self.add_weight(shape=(2 * self.channels,), initializer="zeros", name="bias")
        self.res_skip.build(tuple(input_shape[:-1]) + (self.channels,))
        self.built = True

    def _dilated(self, padded):
        # padded: (B, history + T, C) -> (B, T, 2C)
        k, d, h = self.kernel_size, self.dilation, self.history
        return self._product([padded[:, j * d: (j * d - h) or None, :] for j in range(k)])

    def _product(self, taps):
        """The k taps (oldest first), each (B, T, C) -> (B, T, 2C): one matmul over their concatenation."""
        stacked = taps[0] if len(taps) == 1 else ops.concatenate(taps, axis=-1)
        kernel = ops.reshape(ops.cast(self.kernel, stacked.dtype), (self.kernel_size * self.channels, 2 * self.channels))
        return ops.matmul(stacked, kernel) + ops.cast(self.bias, stacked.dtype)

    def call(self, x, buffer=None, training=None):
        h = self.history
        if buffer is None:
            padded = ops.pad(x, ((0, 0), (h, 0), (0, 0))) if h else x
        else:
            padded = ops.concatenate([ops.cast(buffer, x.dtype), x], axis=1) if h else x
        z = self._dilated(padded)
        a, b = ops.split(z, 2, axis=-1)
        g = ops.tanh(a) * ops.sigmoid(b)
        if self.drop is not None:
            g = self.drop(g, training=training)
        res, skip = ops.split(self.res_skip(g), 2, axis=-1)
        y = x + res
        new_buffer = padded[:, -h:, :] if h else padded[:, :0, :]
        return y, skip, ops.cast(new_buffer, "float32")

    def step_queue(self, x, queue, held):
        """Decoding on the device with a queue: ``queue`` (B, h, C) float32 holds the block's last
        h = (k-1)*d inputs with input m in slot m mod h (zeros before the stream starts), ``held``
        (scalar int32) is the number of inputs so far. A single step (x (B, 1, C)) reads its taps
        and overwrites the oldest slot in place, O(C) instead of shifting the whole history;
        longer inputs go through the buffered :meth:`call`. Returns ``(y, skip, queue)``."""
        h = self.history
        if x.shape[1] != 1:
            def rotate(buf, start):   # out[i] = buf[(i + start) mod h], a dynamic slice of buf twice over
                batch = -1 if buf.shape[0] is None else buf.shape[0]   # -1: a batch traced unknown
                return ops.slice(ops.concatenate([buf, buf], axis=1), (0, start, 0), (batch, h, self.channels))
            y, skip, buffer = self.call(x, buffer=rotate(queue, ops.mod(held, h)))
            steps = x.shape[1] if x.shape[1] is not None else ops.size(x[0, :, 0])   # traced: dynamic
            return y, skip, rotate(buffer, ops.mod(h - ops.mod(held + steps, h), h))
        k, d = self.kernel_size, self.dilation
        taps = [ops.take(queue, ops.mod(held - (k - 1 - j) * d + h, h), axis=1)[:, None, :] for j in range(k - 1)]
        y, skip = self.step_taps(x, taps)
        return y, skip, ops.slice_update(queue, (0, ops.mod(held, h), 0), ops.cast(x, queue.dtype))

    def step_taps(self, x, taps):
        """One step (x (B, 1, C)) from its k-1 past inputs ``taps`` (each (B, 1, C), oldest first,
        tap j looking back (k-1-j)*d steps), however the caller keeps them: ``(y, skip)``."""
        z = self._product([ops.cast(t, x.dtype) for t in taps] + [x])
        a, b = ops.split(z, 2, axis=-1)
        res, skip = ops.split(self.res_skip(ops.tanh(a) * ops.sigmoid(b)), 2, axis=-1)
        return x + res, skip

    def compute_output_spec(self, x, buffer=None, training=None):
        y = keras.KerasTensor(x.shape, dtype=self.compute_dtype)
        skip = keras.KerasTensor(x.shape, dtype=self.compute_dtype)
        return y, skip, keras.KerasTensor((x.shape[0], self.history, self.channels), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, kernel_size=self.kernel_size,
                      dilation=self.dilation, dropout=self.dropout)
        return config
