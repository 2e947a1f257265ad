"""The conv family's network (Keras): see :class:`ConvLM`."""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .layers import Dropout, GatedResidualBlock, embedding_initializer
from .sequence_model import PACKAGE, SequenceModel


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvLM(SequenceModel):
    """WaveNet: Embedding -> Dense(units) -> residual blocks (dilated causal conv, tanh*sigmoid gate,
    1x1 residual + skip) -> relu(sum of skips) -> Dense(units, relu) -> Dense(V, float32).

    The cache holds every block's last (k-1)*d inputs (zeros at stream start, exactly the causal
    zero padding of the plain forward), so any chunk length continues the stream exactly and the
    cache never grows: ``max_context`` is None. It is one time-major buffer
    (sum of (k-1)*d, B, units): block i's input m in row offset_i + m mod h_i. A single step
    reads every block's taps with one gather and writes every block's input with one scatter
    after the last block (per-block queues, each read beside its in-place write, made XLA copy
    every queue on every step: 29 copies in the compiled loop body of the default model, 1 now);
    longer inputs run each block's buffered call on its rotated queue.
    """

    cached = True

    def __init__(self, cfg, vocab_size, max_len, **kwargs):
        super().__init__(cfg, vocab_size, max_len, name=kwargs.pop("name", "conv_lm"), **kwargs)
        if int(cfg.kernel_size) < 1:
            raise ValueError("conv kernel_size must be >= 1")
        if not cfg.dilations or min(int(d) for d in cfg.dilations) < 1:
            raise ValueError(f"conv model needs positive dilations, got {cfg.dilations!r}")
        self.embedding = keras.layers.Embedding(vocab_size, cfg.embed_dim, name="embedding",
                                                embeddings_initializer=embedding_initializer(cfg.embed_init))
        self.input_proj = keras.layers.Dense(cfg.units, name="input_proj")
        self.blocks = [GatedResidualBlock(cfg.units, cfg.kernel_size, d, cfg.dropout, name=f"block_{i}")
                       for i, d in enumerate(int(d) for d in cfg.dilations)]   # cfg.layers is ignored
        self.skip_sum = keras.layers.Add(name="skip_sum") if len(self.blocks) > 1 else None
        self.head_relu = keras.layers.ReLU(name="head_relu")
        self.head = keras.layers.Dense(cfg.units, activation="relu", name="head")
        self.head_drop = Dropout(cfg.dropout, name="head_dropout") if cfg.dropout > 0 else None
        self.logits = keras.layers.Dense(vocab_size, dtype="float32", name="logits")
        self._layout(int(cfg.kernel_size), [b.history for b in self.blocks])
        # input positions (the current one included) that one output depends on: 1 + sum (k-1)*d
        self.receptive_field = 1 + self.total

    def _layout(self, k, histories):
        """The cache buffer's layout: each block's first row, and per block with a history its
        size h, first row, and the k-1 look-backs of its taps (constants, computed once)."""
        self.histories, self.total = histories, sum(histories)
        self._first_rows = np.cumsum([0] + histories)[:-1].astype(np.int32)
        live = [i for i, h in enumerate(histories) if h]
        self._sizes = np.array([histories[i] for i in live], np.int32)
        self._starts = self._first_rows[live]
        self._lags = np.array([[(k - 1 - j) * (histories[i] // (k - 1)) for j in range(k - 1)]
                               for i in live], np.int32).reshape(len(live), k - 1)

    def embed(self, ids):
        return self.embedding(ids)

    cache_batch_axis = 1    # the queue is time-major: (slots, B, units)

    def empty_cache(self, batch_size):
        return (ops.zeros((max(self.total, 1), batch_size, self.cfg.units), "float32"),)

    def call_with_cache(self, ids, cache=None, held=None, training=None, embedded=None):
        x = self.input_proj(self.embed(ids) if embedded is None else embedded)
        if cache is None:
            skips = []
            for block in self.blocks:
                x, skip, _ = block(x, training=training)
                skips.append(skip)
            return self._head(skips, training), None
        return self._cached(x, cache[0], held)

    def _head(self, skips, training=None):
        s = self.skip_sum(skips) if self.skip_sum is not None else skips[0]
        s = self.head(self.head_relu(s))
        if self.head_drop is not None:
            s = self.head_drop(s, training=training)
        return self.logits(s)

    def _cached(self, x, buffer, held):
        k, steps = int(self.cfg.kernel_size), x.shape[1]
        size, start = self._sizes, self._starts
        live = len(size) > 0
        if steps == 1 and live:   # the rows as vectors of constants: one index computation, not one per tap
            rows = start[:, None] + ops.mod(held - self._lags + size[:, None], size[:, None])
            taps = ops.take(buffer, ops.reshape(rows, (-1,)), axis=0)
            taps = ops.transpose(taps, (1, 0, 2))[:, :, None, :]                             # (B, n, 1, C)
        skips, inputs, tap = [], [], 0
        for i, (block, h) in enumerate(zip(self.blocks, self.histories)):
            if not h:
                x, skip, _ = block(x)
            elif steps == 1:
                inputs.append(x[:, 0])
                x, skip = block.step_taps(x, [taps[:, tap + j] for j in range(k - 1)])
                tap += k - 1
            else:
                first = int(self._first_rows[i])
                queue = ops.transpose(buffer[first:first + h, :, :], (1, 0, 2))
                x, skip, queue = block.step_queue(x, queue, held)
                inputs.append(ops.transpose(queue, (1, 0, 2)))
            skips.append(skip)
        logits = self._head(skips)
        if not live:
            return logits, (buffer,)
        if steps == 1:
            rows = (start + ops.mod(held, size))[:, None]
            buffer = ops.scatter_update(buffer, rows, ops.cast(ops.stack(inputs), "float32"))
        else:
            buffer = ops.concatenate(inputs, axis=0)
        return logits, (buffer,)
