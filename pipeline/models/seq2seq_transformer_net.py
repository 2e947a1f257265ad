"""The Transformer encoder-decoder (Keras): see :class:`EncoderDecoderTransformer`."""
from __future__ import annotations

import keras
from keras import ops

from .encoder_decoder import EncoderDecoder
from .layers import Dropout, PositionEmbedding, embedding_initializer
from .sequence_model import PACKAGE
from .source import (before, gather_positions, last_positions, pad_slots, source_length, source_mask,
                     write_rows)


def masked_attention(q, k, v, visible):
    """Softmax attention, q (B, H, T, D) over k, v (B, H, S, D) where ``visible`` (B, 1, T, S):
    (output (B, H, T, D) float32, weights (B, H, T, S)). A query with no visible key gets the
    mean of the values (its row is never scored)."""
    scores = ops.einsum("bhtd,bhsd->bhts", ops.cast(q, "float32"), ops.cast(k, "float32")) * (q.shape[-1] ** -0.5)
    if scores.shape[-1] == 1:        # one key (a start's lone marker): its weight is 1, visible or not
        weights = ops.ones_like(scores)
    else:
        weights = ops.softmax(ops.where(visible, scores, -1e30), axis=-1)
    return ops.einsum("bhts,bhsd->bhtd", weights, ops.cast(v, "float32")), weights


class _Attention(keras.layers.Layer):
    """Multi-head projections: ``heads(x, n)`` splits n projections (B, T, n*U) into n (B, H, T, Dh)."""

    def __init__(self, units, heads, **kwargs):
        super().__init__(**kwargs)
        self.units, self.heads, self.head_dim = int(units), int(heads), int(units) // int(heads)

    def split(self, t, n):
        b, length = ops.shape(t)[0], ops.shape(t)[1]
        t = ops.reshape(t, (b, length, n, self.heads, self.head_dim))
        return [ops.transpose(t[:, :, i], (0, 2, 1, 3)) for i in range(n)]

    def merge(self, t, dtype):
        b, length = ops.shape(t)[0], ops.shape(t)[2]
        return ops.reshape(ops.transpose(ops.cast(t, dtype), (0, 2, 1, 3)), (b, length, self.units))


@keras.saving.register_keras_serializable(package=PACKAGE)
class EncoderBlock(_Attention):
    """Pre-LN self-attention over the visible (source) positions + GELU feed-forward."""

    def __init__(self, units, heads, ff_dim, dropout=0.0, **kwargs):
        super().__init__(units, heads, **kwargs)
        self.ff_dim, self.dropout = int(ff_dim), float(dropout)
        self.ln1 = keras.layers.LayerNormalization(epsilon=1e-5, name="ln1")
        self.qkv = keras.layers.Dense(3 * self.units, name="qkv")
        self.out = keras.layers.Dense(self.units, name="attn_out")
        self.ln2 = keras.layers.LayerNormalization(epsilon=1e-5, name="ln2")
        self.ff_in = keras.layers.Dense(self.ff_dim, activation="gelu", name="ff_in")
        self.ff_out = keras.layers.Dense(self.units, name="ff_out")
        self.drop = Dropout(self.dropout) if self.dropout > 0 else None

    def _drop(self, x, training):
        return x if self.drop is None else self.drop(x, training=training)

    def call(self, x, visible, training=None):
        q, k, v = self.split(self.qkv(self.ln1(x)), 3)
        att, _ = masked_attention(q, k, v, visible)
        x = x + self._drop(self.out(self.merge(att, x.dtype)), training)
        return x + self._drop(self.ff_out(self.ff_in(self.ln2(x))), training)

    def get_config(self):
        return super().get_config() | {"units": self.units, "heads": self.heads, "ff_dim": self.ff_dim,
                                       "dropout": self.dropout}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CrossDecoderBlock(EncoderBlock):
    """Pre-LN causal self-attention over the target, cross-attention to the encoder, feed-forward.

    ``call`` is the whole example at once; :meth:`decode` continues the target from fixed-size
    caches (self keys/values written in place at ``held``, cross keys/values made once per example).
    """

    def __init__(self, units, heads, ff_dim, dropout=0.0, **kwargs):
        super().__init__(units, heads, ff_dim, dropout, **kwargs)
        self.ln_cross = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_cross")
        self.cross_q = keras.layers.Dense(self.units, name="cross_q")
        self.cross_kv = keras.layers.Dense(2 * self.units, name="cross_kv")
        self.cross_out = keras.layers.Dense(self.units, name="cross_out")

    def cross_keys(self, memory):
        """The encoder output's cross-attention keys and values, (B, H, S, Dh) each."""
        return self.split(self.cross_kv(memory), 2)

    def _rest(self, x, ck, cv, cross_visible, training):
        q = self.split(self.cross_q(self.ln_cross(x)), 1)[0]
        att, weights = masked_attention(q, ck, cv, cross_visible)
        x = x + self._drop(self.cross_out(self.merge(att, x.dtype)), training)
        return x + self._drop(self.ff_out(self.ff_in(self.ln2(x))), training), weights

    def call(self, x, memory, self_visible, cross_visible, training=None):
        return self.forward(x, memory, self_visible, cross_visible, training)[0]

    def forward(self, x, memory, self_visible, cross_visible, training=None, cross=None):
        """:meth:`call`, also returning its self keys and values (B, H, T, Dh) and its (B, H, T, S)
        cross-attention weights; ``cross``: the memory's :meth:`cross_keys`, when already made."""
        q, k, v = self.split(self.qkv(self.ln1(x)), 3)
        att, _ = masked_attention(q, k, v, self_visible)
        x = x + self._drop(self.out(self.merge(att, x.dtype)), training)
        ck, cv = self.cross_keys(memory) if cross is None else cross
        out, weights = self._rest(x, ck, cv, cross_visible, training)
        return out, k, v, weights

    def decode(self, x, keys, values, ck, cv, slots, self_visible, cross_visible):
        """Continue from the caches: the new positions' keys and values are written at ``slots``
        (B, T) of each row (its target positions), then attended to with the cached ones."""
        q, k, v = self.split(self.qkv(self.ln1(x)), 3)
        keys, values = write_rows(keys, k, slots), write_rows(values, v, slots)
        att, _ = masked_attention(q, keys, values, self_visible)
        x = x + self.out(self.merge(att, x.dtype))
        return self._rest(x, ck, cv, cross_visible, None)[0], keys, values


@keras.saving.register_keras_serializable(package=PACKAGE)
class EncoderDecoderTransformer(EncoderDecoder):
    """Token embedding [-> Dense(units)] shared by both sides; encoder: learned positions from the
    example's start -> ``layers`` x EncoderBlock (self-attention among source positions) ->
    LayerNorm; decoder: learned positions from the marker -> ``layers`` x CrossDecoderBlock (causal
    among target positions, cross-attention to the source) -> LayerNorm -> Dense(V, float32).

    Cache (fixed-size float32): per decoder block its self keys and values, slot p holding target
    position p (counted from the marker), and its cross keys and values over the source slots,
    (B, heads, max_len, head_dim) each; then each row's source length and target positions held
    (B,) each. A call with ``held`` 0 starts an example (it encodes the source it holds); later
    calls continue the target. Every row keeps its own positions, so :meth:`start_with_cache`
    starts rows whose prompts have different lengths in one call.
    """


    def __init__(self, cfg, vocab_size, max_len, marker_id=None, **kwargs):
        super().__init__(cfg, vocab_size, max_len, marker_id, name=kwargs.pop("name", "encoder_decoder_transformer"),
                         **kwargs)
        units, embed_dim = int(cfg.units), int(cfg.embed_dim)
        self.heads, self.head_dim = int(cfg.heads), units // int(cfg.heads)
        init = embedding_initializer(cfg.embed_init)
        self.embedding = keras.layers.Embedding(vocab_size, embed_dim, embeddings_initializer=init, name="embedding")
        self.embed_proj = keras.layers.Dense(units, name="embed_proj") if embed_dim != units else None
        self.source_positions = PositionEmbedding(max_len, init, name="source_positions")
        self.target_positions = PositionEmbedding(max_len, init, name="target_positions")
        self.drop = Dropout(cfg.dropout, name="embed_dropout") if cfg.dropout > 0 else None
        ff_dim = int(cfg.ff_dim) or 4 * units
        self.encoder = [EncoderBlock(units, self.heads, ff_dim, cfg.dropout, name=f"encoder_{i}")
                        for i in range(int(cfg.layers))]
        self.encoder_ln = keras.layers.LayerNormalization(epsilon=1e-5, name="encoder_ln")
        self.decoder = [CrossDecoderBlock(units, self.heads, ff_dim, cfg.dropout, name=f"decoder_{i}")
                        for i in range(int(cfg.layers))]
        self.final_ln = keras.layers.LayerNormalization(epsilon=1e-5, name="final_ln")
        self.logits = keras.layers.Dense(vocab_size, dtype="float32", name="logits")

    @property
    def fixed_cache(self) -> tuple:
        """Each block's cross keys and values, the source length."""
        return tuple(j for i in range(len(self.decoder)) for j in (4 * i + 2, 4 * i + 3)) + (4 * len(self.decoder),)

    def embed(self, ids):
        return self.embedding(ids)

    def _inputs(self, x, training):
        x = x if self.embed_proj is None else self.embed_proj(x)
        return x if self.drop is None else self.drop(x, training=training)

    def _target_inputs(self, x, positions, training):
        """Decoder inputs: the vectors plus the embeddings of their target ``positions`` (B, T),
        counted from the marker (positions before it, never scored, read the first)."""
        x = self.target_positions(x, positions=ops.clip(positions, 0, self.max_len - 1))
        return x if self.drop is None else self.drop(x, training=training)

    def encode(self, x, src, training=None):
        """(B, T, U) inputs and the source mask -> the encoder's output (B, T, U)."""
        h = self.source_positions(x)
        h = h if self.drop is None else self.drop(h, training=training)
        visible = (src[:, None, :] & src[:, :, None])[:, None]
        for block in self.encoder:
            h = block(h, visible, training=training)
        return self.encoder_ln(h)

    def _masks(self, src):
        """Self-attention (causal, target keys only; a source position sees itself alone, so that
        its unscored row is the same however the example is cut into calls) and cross-attention
        (source keys) visibility."""
        steps = ops.shape(src)[1]
        keys, queries = ops.arange(steps)[None, :], ops.arange(steps)[:, None]
        target = ops.logical_not(src)
        own = (keys <= queries)[None] & target[:, None, :] | (keys == queries)[None]
        return own[:, None], ops.broadcast_to(src[:, None, :], (ops.shape(src)[0], steps, steps))[:, None]

    def _full(self, x, src, training=None):
        """The whole example at once: (decoder output (B, T, U), per block its self keys and values
        (B, H, T, Dh), the last block's (B, H, T, T) cross-attention weights, the encoder output)."""
        memory = self.encode(x, src, training)
        steps = ops.shape(x)[1]
        h = self._target_inputs(x, ops.arange(steps, dtype="int32")[None, :] - source_length(src)[:, None], training)
        self_visible, cross_visible = self._masks(src)
        kv, weights = [], None
        for block in self.decoder:
            h, k, v, weights = block.forward(h, memory, self_visible, cross_visible, training)
            kv.append((k, v))
        return h, kv, weights, memory

    def call_with_cache(self, ids, cache=None, held=None, training=None, embedded=None):
        x = self._inputs(self.embed(ids) if embedded is None else embedded, training)
        if cache is None:
            return self.logits(self.final_ln(self._full(x, source_mask(ids, self.marker_id), training)[0])), None
        if ids.shape[1] == 1:
            return self._decode(x, cache)
        steps = ops.shape(ids)[1]
        return ops.cond(held > 0, lambda: self._decode(x, cache),
                        lambda: self._start(x, ids, ops.full((ops.shape(ids)[0],), steps, "int32")))

    def teacher_forced(self, source, source_lengths, target, training=None):
        """Training's forward of rows split at the marker (:meth:`EncoderDecoder.call`): the encoder
        over the source block only, the decoder over the target block only (causal), cross-attention
        over (target x source) positions: the logits of :meth:`_full` at the target positions."""
        sl = ops.cast(source_lengths, "int32")
        width, steps, batch = ops.shape(source)[1], ops.shape(target)[1], ops.shape(target)[0]
        valid = before(sl, width)
        memory = self.encode(self._inputs(self.embed(source), training), valid, training)
        t = ops.arange(steps, dtype="int32")
        h = self._target_inputs(self._inputs(self.embed(target), training),
                                ops.broadcast_to(t[None, :], (batch, steps)), training)
        self_visible = (t[None, :] <= t[:, None])[None, None]
        cross_visible = ops.broadcast_to(valid[:, None, None, :], (batch, 1, steps, width))
        for block in self.decoder:
            h = block(h, memory, self_visible, cross_visible, training=training)
        return self.logits(self.final_ln(h))

    def start_with_cache(self, source, source_lengths, target, target_lengths):
        """``(logits (B, V), cache)`` of prompts laid out by :func:`~.source.split_prompts`: the
        encoder over each row's source, the decoder over its target prefix only (the marker, for a
        source to transduce), rows of different lengths together."""
        sl, tl = ops.cast(source_lengths, "int32"), ops.cast(target_lengths, "int32")
        width, steps = ops.shape(source)[1], ops.shape(target)[1]
        memory = self.encode(self._inputs(self.embed(source), None), before(sl, width))
        t = ops.arange(steps, dtype="int32")
        h = self._target_inputs(self._inputs(self.embed(target), None),
                                ops.broadcast_to(t[None, :], (ops.shape(target)[0], steps)), None)
        self_visible = (t[None, :] <= t[:, None])[None, None]
        cross_visible = ops.broadcast_to(before(sl, width)[:, None, None, :], (ops.shape(target)[0], 1, steps, width))
        cache = []
        for block in self.decoder:         # cross keys and values of the source's own width, then padded
            cross = block.cross_keys(memory)
            h, k, v, _ = block.forward(h, memory, self_visible, cross_visible, cross=cross)
            cache += [ops.cast(pad_slots(t, self.max_len, axis=2), "float32") for t in (k, v, *cross)]
        logits = self.logits(self.final_ln(last_positions(h, ops.maximum(tl, 1))[:, None]))[:, 0]
        return logits, tuple(cache) + (ops.cast(sl, "float32"), ops.cast(tl, "float32"))

    def _start(self, x, ids, lengths):
        """Encode each row's source, run the decoder over the whole prompt and keep each row's
        target keys and values (positions marker .. length - 1) in a fresh cache."""
        t = ops.arange(ops.shape(ids)[1], dtype="int32")[None, :]
        src = source_mask(ids, self.marker_id) & (t < lengths[:, None])
        h, kv, _, memory = self._full(x, src, None)
        length = source_length(src)
        memory = pad_slots(memory, self.max_len)
        slots = length[:, None] + ops.arange(self.max_len, dtype="int32")[None, :]   # target position p at slot p
        cache = []
        for block, (k, v) in zip(self.decoder, kv):
            ck, cv = block.cross_keys(memory)
            cache += [ops.cast(gather_positions(k, slots), "float32"), ops.cast(gather_positions(v, slots), "float32"),
                      ops.cast(ck, "float32"), ops.cast(cv, "float32")]
        held = ops.maximum(lengths - length, 0)
        return self.logits(self.final_ln(h)), tuple(cache) + (ops.cast(length, "float32"), ops.cast(held, "float32"))

    def _decode(self, x, cache):
        """Continue each row's target from its own position (the cache's last entry)."""
        length, held = ops.cast(cache[-2], "int32"), ops.cast(cache[-1], "int32")
        steps = ops.shape(x)[1]
        query = held[:, None] + ops.arange(steps, dtype="int32")[None, :]          # (B, T) target positions
        h = self._target_inputs(x, query, None)
        slots = ops.arange(self.max_len, dtype="int32")
        self_visible = (slots[None, None, :] <= query[:, :, None])[:, None]
        cross_visible = ops.broadcast_to((slots[None, :] < length[:, None])[:, None, :],
                                         (ops.shape(x)[0], steps, self.max_len))[:, None]
        new = []
        for i, block in enumerate(self.decoder):
            keys, values, ck, cv = cache[4 * i:4 * i + 4]
            h, keys, values = block.decode(h, keys, values, ck, cv, query, self_visible, cross_visible)
            new += [keys, values, ck, cv]
        return self.logits(self.final_ln(h)), tuple(new) + (cache[-2], ops.cast(held + steps, "float32"))

    def empty_cache(self, batch_size):
        shape = (batch_size, self.heads, self.max_len, self.head_dim)
        return tuple(ops.zeros(shape, "float32") for _ in range(4 * len(self.decoder))) + (
            ops.zeros((batch_size,), "float32"), ops.zeros((batch_size,), "float32"))

    def alignment(self, ids):
        """(B, T, T) cross-attention weights of every position over the source positions, averaged
        over the last decoder block's heads (rows after the marker are the target's)."""
        return ops.mean(self._full(self._inputs(self.embed(ids), None), source_mask(ids, self.marker_id))[2], axis=1)
