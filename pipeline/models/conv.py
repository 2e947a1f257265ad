"""The conv family: a WaveNet-style dilated causal convolution with fast (cached) decoding.

Embedding -> Dense(units) -> one gated residual block per entry of ``dilations`` -> head. Scored
with windows of the training context, like the Transformer, although its stepper continues a
stream exactly (its state holds each block's last inputs).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.config.schema import spec

from .family import WINDOW, EmbeddingParams, Family, ParamError
from .stepper import ArrayStateStepper


@dataclass(frozen=True)
class ConvParams(EmbeddingParams):
    """``units`` is the channel count of every block."""
    kernel_size: int = field(default=2, metadata=spec(ge=1))
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])   # one block each


class Conv(Family):
    name = "conv"
    params = ConvParams
    protocol = WINDOW

    def check(self, cfg: ConvParams) -> None:
        if not cfg.dilations or any(d < 1 for d in cfg.dilations):
            raise ParamError("dilations", "expected a non-empty list of integers >= 1")

    def build(self, cfg, vocab_size: int, max_len: int):
        return build_conv(cfg, vocab_size)

    def stepper(self, model, cfg, max_len: int):
        return ConvStepper(model, cfg)


FAMILIES = (Conv(),)


def conv_dilations(cfg) -> list[int]:
    """The dilation of every residual block: one block per entry of ``cfg.dilations``
    (``cfg.layers`` is ignored; write stacks out, e.g. [1,2,4,8,1,2,4,8])."""
    dilations = [int(d) for d in cfg.dilations]
    if not dilations or min(dilations) < 1:
        raise ValueError(f"conv model needs positive dilations, got {cfg.dilations!r}")
    return dilations


def receptive_field(cfg) -> int:
    """Number of input positions (the current one included) that one output depends on."""
    return 1 + sum((int(cfg.kernel_size) - 1) * d for d in conv_dilations(cfg))


def build_conv(cfg, vocab_size: int):
    """Embedding -> Dense(units) -> residual blocks (dilated causal conv, tanh*sigmoid gate,
    1x1 residual + skip) -> relu(sum of skips) -> Dense(units, relu) -> Dense(V, float32).

    Layer names: "embedding", "input_proj", "block_{i}", "skip_sum", "head_relu", "head",
    "dropout", "logits".
    """
    import keras

    from .layers import GatedResidualBlock, embedding_initializer

    if int(cfg.kernel_size) < 1:
        raise ValueError("conv kernel_size must be >= 1")
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(vocab_size, cfg.embed_dim,
                               embeddings_initializer=embedding_initializer(cfg.embed_init),
                               name="embedding")(ids)
    x = keras.layers.Dense(cfg.units, name="input_proj")(x)
    skips = []
    for i, d in enumerate(conv_dilations(cfg)):
        x, skip, _ = GatedResidualBlock(cfg.units, cfg.kernel_size, d, cfg.dropout, name=f"block_{i}")(x)
        skips.append(skip)
    logits = _head(skips, cfg, vocab_size)
    return keras.Model(ids, logits, name="conv_lm")


def _head(skips, cfg, vocab_size, model=None):
    import keras

    def layer(name, make):
        return model.get_layer(name) if model is not None else make()

    s = layer("skip_sum", lambda: keras.layers.Add(name="skip_sum"))(skips) if len(skips) > 1 else skips[0]
    s = layer("head_relu", lambda: keras.layers.ReLU(name="head_relu"))(s)
    s = layer("head", lambda: keras.layers.Dense(cfg.units, activation="relu", name="head"))(s)
    if cfg.dropout > 0 and model is None:
        s = keras.layers.Dropout(cfg.dropout, name="dropout")(s)
    return layer("logits", lambda: keras.layers.Dense(vocab_size, dtype="float32", name="logits"))(s)


class ConvStepper(ArrayStateStepper):
    """Fast WaveNet decoding: the state holds, for every block, its last (k-1)*d inputs
    (zeros at stream start, exactly the causal zero padding of the full model), so any chunk
    length continues the stream exactly and the state never grows: ``max_context`` is None.
    ``receptive_field`` is still exposed for callers that want it.

    State: one float32 array (B, sum of (k-1)*d over blocks, units), the blocks' buffers
    concatenated along axis 1 (one input/output for the compiled step). Never mutated.
    """

    max_context = None

    def __init__(self, model, cfg):
        import keras

        self.receptive_field = receptive_field(cfg)
        self.units = int(cfg.units)
        self.histories = [(int(cfg.kernel_size) - 1) * d for d in conv_dilations(cfg)]
        self.total = sum(self.histories)
        ids = keras.Input(shape=(None,), dtype="int32", name="ids")
        buffers = keras.Input(shape=(self.total, self.units), name="buffers")
        x = model.get_layer("embedding")(ids)
        x = model.get_layer("input_proj")(x)
        skips, new_buffers, offset = [], [], 0
        for i, h in enumerate(self.histories):
            block = model.get_layer(f"block_{i}")
            if h > 0:
                x, skip, new = block(x, buffer=buffers[:, offset:offset + h])
                new_buffers.append(new)
                offset += h
            else:
                x, skip, _ = block(x)
            skips.append(skip)
        logits = _head(skips, cfg, None, model=model)
        if not new_buffers:                      # kernel_size 1: nothing to carry
            new_buffers = [buffers]
        new = new_buffers[0] if len(new_buffers) == 1 else keras.ops.concatenate(new_buffers, axis=1)
        self.step_model = keras.Model([ids, buffers], [logits, new], name="conv_lm_stepper")
        self.state_shape = (self.total, self.units)
        self.model, self.cfg = model, cfg
        # the device buffer's layout: each block's first row, and per block with a history its
        # size h, first row, and the k-1 look-backs of its taps
        k = int(cfg.kernel_size)
        self._first_rows = np.cumsum([0] + self.histories)[:-1].astype(np.int32)
        live = [i for i, h in enumerate(self.histories) if h]
        self._sizes = np.array([self.histories[i] for i in live], np.int32)
        self._starts = self._first_rows[live]
        self._lags = np.array([[(k - 1 - j) * (self.histories[i] // (k - 1)) for j in range(k - 1)]
                               for i in live], np.int32).reshape(len(live), k - 1)

    def device_state(self, batch_size: int) -> tuple:
        """Every block's queue in one time-major buffer (sum of (k-1)*d, B, units): block i's
        input m in row offset_i + m mod h_i, zeros before the stream starts (see device_step)."""
        from keras import ops
        return (ops.zeros((max(self.total, 1), batch_size, self.units), "float32"),)

    def device_step(self, ids, state, held):
        """A single step reads every block's taps with one gather from the shared buffer and writes
        every block's input with one scatter after the last block. Per-block queues had a read
        beside each in-place write, which made XLA copy every queue on every step (29 copies in
        the compiled loop body of the default model, 1 now); here the scatter depends on the
        gathered taps, so the buffer is updated in place. Longer inputs run each block's
        buffered call on its rotated queue."""
        from keras import ops
        model, (buffer,) = self.model, state
        held = ops.cast(held, "int32")
        k = int(self.cfg.kernel_size)
        x = model.get_layer("input_proj")(model.get_layer("embedding")(ids))
        steps = ids.shape[1]
        size, start = self._sizes, self._starts
        live = len(size) > 0
        if steps == 1 and live:   # the rows as vectors of constants: one index computation, not one per tap
            rows = start[:, None] + ops.mod(held - self._lags + size[:, None], size[:, None])
            taps = ops.take(buffer, ops.reshape(rows, (-1,)), axis=0)
            taps = ops.transpose(taps, (1, 0, 2))[:, :, None, :]                             # (B, n, 1, C)
        skips, inputs, tap = [], [], 0
        for i, h in enumerate(self.histories):
            block = model.get_layer(f"block_{i}")
            if not h:
                x, skip, _ = block(x)
            elif steps == 1:
                inputs.append(x[:, 0])
                x, skip = block.step_taps(x, [taps[:, tap + j] for j in range(k - 1)])
                tap += k - 1
            else:
                first = int(self._first_rows[i])
                queue = ops.transpose(buffer[first:first + h], (1, 0, 2))
                x, skip, queue = block.step_queue(x, queue, held)
                inputs.append(ops.transpose(queue, (1, 0, 2)))
            skips.append(skip)
        logits = _head(skips, self.cfg, None, model=model)
        if not live:
            return logits, (buffer,)
        if steps == 1:
            rows = (start + ops.mod(held, size))[:, None]
            buffer = ops.scatter_update(buffer, rows, ops.cast(ops.stack(inputs), "float32"))
        else:
            buffer = ops.concatenate(inputs, axis=0)
        return logits, (buffer,)
