"""The recurrent encoder-decoder with additive attention (Keras): see :class:`AttentionRNN`."""
from __future__ import annotations

import keras
from keras import ops

from .fast_rnn import FastGRU
from .encoder_decoder import EncoderDecoder
from .layers import Dropout, embedding_initializer
from .sequence_model import PACKAGE
from .source import before, gather_rows, last_positions, pad_slots, source_length, source_mask


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionRNN(EncoderDecoder):
    """Embedding -> bidirectional GRU encoder (units // 2 each way) over the source positions;
    GRU decoder (units) over the marker and the target, started from Dense(tanh) of the encoder's
    final states; additive attention ``v . tanh(Wq h_t + Wk e_s)`` of each decoder state over the
    encoder states; Dense(units, tanh) of [h_t; context] -> Dense(V, float32).

    No recurrent layer takes a mask (a masked Keras RNN steps one cell at a time in a Python-level
    loop and leaves cuDNN): each runs whole rows of the fast layers of ``fast_rnn``, the backward
    encoder over each row's source reversed in place and the decoder over each row shifted to
    start at its marker, both by a per-row gather. Positions before the marker get the decoder's
    first output (they are never scored).

    Cache (fixed-size float32): the encoder states and their attention keys, (B, max_len, ·) each,
    the source length (B,), the decoder state (B, units). A call with a cache and more than one id
    starts an example (it encodes the source it holds); a call with one id is one decoder step.
    """

    fixed_cache = (0, 1, 2)      # the encoder states, their keys, the source length

    def __init__(self, cfg, vocab_size, max_len, marker_id=None, **kwargs):
        super().__init__(cfg, vocab_size, max_len, marker_id, name=kwargs.pop("name", "attention_rnn"), **kwargs)
        units = int(cfg.units)
        self.attention_units = int(cfg.attention_units) or units
        self.embedding = keras.layers.Embedding(vocab_size, cfg.embed_dim, name="embedding",
                                                embeddings_initializer=embedding_initializer(cfg.embed_init))
        self.drop = Dropout(cfg.dropout, name="dropout") if cfg.dropout > 0 else None
        self.encoder_forward = FastGRU(units // 2, return_sequences=True, name="encoder_forward")
        self.encoder_backward = FastGRU(units // 2, return_sequences=True, name="encoder_backward")
        self.bridge = keras.layers.Dense(units, activation="tanh", name="bridge")
        self.decoder = FastGRU(units, return_sequences=True, return_state=True, name="decoder")
        self.query = keras.layers.Dense(self.attention_units, use_bias=False, name="attention_query")
        self.key = keras.layers.Dense(self.attention_units, name="attention_key")
        self.score = keras.layers.Dense(1, use_bias=False, name="attention_score")
        self.attentional = keras.layers.Dense(units, activation="tanh", name="attentional")
        self.head = keras.layers.Dense(vocab_size, dtype="float32", name="logits")

    def embed(self, ids):
        return self.embedding(ids)

    def _dropout(self, x, training):
        return x if self.drop is None else self.drop(x, training=training)

    def encode(self, x, length, training=None):
        """Token vectors (B, T, E) and each row's source length -> encoder states (B, T, units),
        their attention keys (B, T, A), the decoder's initial state (B, units); states after the
        source are not meaningful (the attention never reads them)."""
        t = ops.arange(ops.shape(x)[1], dtype="int32")[None, :]
        last = ops.maximum(length - 1, 0)[:, None]
        forward = self.encoder_forward(x, training=training)              # causal: exact on the source
        flip = ops.where(t < length[:, None], last - t, t)                # reverses each row's source
        backward = gather_rows(self.encoder_backward(gather_rows(x, flip), training=training), flip)
        states = ops.concatenate([forward, backward], axis=-1)
        final = ops.concatenate([gather_rows(forward, last)[:, 0], backward[:, 0]], axis=-1)
        return states, self.key(states), self.bridge(final)

    def attend(self, h, keys, states, valid):
        """Additive attention of decoder states ``h`` (B, T, units) over ``states`` (B, S, units)
        with ``keys`` (B, S, A) where ``valid`` (B, S): (context (B, T, units), weights (B, T, S))."""
        q = self.query(h)
        e = self.score(ops.tanh(q[:, :, None, :] + ops.cast(keys, q.dtype)[:, None, :, :]))[..., 0]
        e = ops.where(valid[:, None, :], ops.cast(e, "float32"), -1e9)
        weights = ops.softmax(e, axis=-1)
        return ops.einsum("bts,bsu->btu", weights, ops.cast(states, "float32")), weights

    def _logits(self, h, context, training):
        out = self.attentional(ops.concatenate([h, ops.cast(context, h.dtype)], axis=-1))
        return self.head(self._dropout(out, training))

    def _forward(self, x, src, training=None, ends=None):
        """The whole example at once: logits, the decoder's states, the encoder's outputs.
        ``ends`` (B,): each row's length, where rows are right-padded (None: no padding)."""
        length = source_length(src)
        states, keys, init = self.encode(x, length, training)
        steps = ops.shape(x)[1]
        t = ops.arange(steps, dtype="int32")[None, :]
        last = (steps if ends is None else ends[:, None]) - 1
        shifted, _ = self.decoder(gather_rows(x, ops.minimum(t + length[:, None], last)),
                                  initial_state=[init], training=training)
        h = gather_rows(shifted, ops.maximum(t - length[:, None], 0))       # back to each row's positions
        context, weights = self.attend(h, keys, states, src)
        return self._logits(h, context, training), h, states, keys, weights, init

    def call_with_cache(self, ids, cache=None, held=None, training=None, embedded=None):
        """With a cache, a call with ``held`` 0 starts an example (it encodes the source it holds) and
        a later call continues the decoder; a single id is one decoder cell step."""
        x = self._dropout(self.embed(ids) if embedded is None else embedded, training)
        if cache is None:
            return self._forward(x, source_mask(ids, self.marker_id), training)[0], None
        if ids.shape[1] == 1:
            return self._step(x, cache)
        steps = ops.shape(ids)[1]
        return ops.cond(held > 0, lambda: self._continue(x, cache, training),
                        lambda: self._start(x, ids, ops.full((ops.shape(ids)[0],), steps, "int32"), training))

    def teacher_forced(self, source, source_lengths, target, training=None):
        """Training's forward of rows split at the marker (:meth:`EncoderDecoder.call`): the encoder
        over the source block only, the decoder over the target block only, the attention over
        (target x source) positions: the logits of :meth:`_forward` at the target positions."""
        sl = ops.cast(source_lengths, "int32")
        states, keys, init = self.encode(self._dropout(self.embed(source), training), sl, training)
        seq, _ = self.decoder(self._dropout(self.embed(target), training), initial_state=[init], training=training)
        context, _ = self.attend(seq, keys, states, before(sl, ops.shape(source)[1]))
        return self._logits(seq, context, training)

    def start_with_cache(self, source, source_lengths, target, target_lengths):
        """``(logits (B, V), cache)`` of prompts laid out by :func:`~.source.split_prompts`: the
        encoder over each row's source, the decoder over its target prefix only (the marker, for a
        source to transduce), rows of different lengths together."""
        sl, tl = ops.cast(source_lengths, "int32"), ops.cast(target_lengths, "int32")
        states, keys, init = self.encode(self.embed(source), sl)
        seq, _ = self.decoder(self.embed(target), initial_state=[init])
        h = last_positions(seq, ops.maximum(tl, 1))[:, None]
        context, _ = self.attend(h, keys, states, before(sl, ops.shape(source)[1]))
        state = ops.where((tl > 0)[:, None], h[:, 0], ops.cast(init, h.dtype))     # no marker yet: not started
        f32 = lambda t: ops.cast(t, "float32")          # noqa: E731
        return self._logits(h, context, None)[:, 0], (f32(pad_slots(states, self.max_len)),
                                                     f32(pad_slots(keys, self.max_len)), f32(sl), f32(state))

    def _start(self, x, ids, lengths, training):
        """Encode each row's source and run the decoder to the row's last id (``lengths``); a row
        with no marker yet holds the decoder's initial state (its next id starts the target)."""
        t = ops.arange(ops.shape(ids)[1], dtype="int32")[None, :]
        src = source_mask(ids, self.marker_id) & (t < lengths[:, None])
        logits, h, states, keys, _, init = self._forward(x, src, training, lengths)
        length = source_length(src)
        h = ops.where((lengths > length)[:, None], last_positions(h, lengths), ops.cast(init, h.dtype))
        f32 = lambda t: ops.cast(t, "float32")          # noqa: E731
        return logits, (f32(pad_slots(states, self.max_len)), f32(pad_slots(keys, self.max_len)),
                        f32(length), f32(h))

    def _continue(self, x, cache, training):
        states, keys, length, h = cache
        seq, last = self.decoder(x, initial_state=[ops.cast(h, x.dtype)], training=training)
        context, _ = self.attend(seq, keys, states, before(ops.cast(length, "int32"), self.max_len))
        return self._logits(seq, context, training), (states, keys, length, ops.cast(last, "float32"))

    def _step(self, x, cache):
        states, keys, length, h = cache
        (h,) = self.decoder.step_once(x, [ops.cast(h, x.dtype)])
        context, _ = self.attend(h[:, None, :], keys, states, before(ops.cast(length, "int32"), self.max_len))
        return self._logits(h[:, None, :], context, None), (states, keys, length, ops.cast(h, "float32"))

    def empty_cache(self, batch_size):
        units = int(self.cfg.units)
        return (ops.zeros((batch_size, self.max_len, units), "float32"),
                ops.zeros((batch_size, self.max_len, self.attention_units), "float32"),
                ops.zeros((batch_size,), "float32"), ops.zeros((batch_size, units), "float32"))

    def alignment(self, ids):
        """(B, T, T) attention weights of every position over the source positions (the lectures'
        alignment picture: rows after the marker are the target's)."""
        src = source_mask(ids, self.marker_id)
        return self._forward(self.embed(ids), src)[4]
