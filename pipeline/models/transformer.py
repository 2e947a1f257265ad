"""The Transformer family: a decoder-only (GPT-style, pre-LN) model with a key/value-cached stepper.

Attention is ``keras.ops.dot_product_attention`` (each backend's own kernel); ``dropout`` applies to
the embeddings and the residual branches. Scored with windows of the training context (learned
positions: T <= max_len).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.config.schema import spec

from .family import WINDOW, EmbeddingParams, Family, ParamError, matmul_weights
from .stepper import Stepper, bucket


@dataclass(frozen=True)
class TransformerParams(EmbeddingParams):
    """``units`` is the model width."""
    layers: int = field(default=2, metadata=spec(ge=1))
    heads: int = field(default=4, metadata=spec(ge=1))
    ff_dim: int = field(default=0, metadata=spec(ge=0))      # 0: 4 * units
    tie_embeddings: bool = False


class Transformer(Family):
    name = "transformer"
    params = TransformerParams
    protocol = WINDOW

    def check(self, cfg: TransformerParams) -> None:
        if cfg.units % cfg.heads:
            raise ParamError("units", f"{cfg.units} is not divisible by heads={cfg.heads}")

    def build(self, cfg, vocab_size: int, max_len: int):
        return build_transformer(cfg, vocab_size, max_len)

    def stepper(self, model, cfg, max_len: int):
        return TransformerStepper(model, cfg)

    def flops_per_token(self, model, cfg, context: int) -> float:
        """nanoGPT's estimate_mfu: 6 per weight plus attention, 12 * layers * width * context."""
        return 6.0 * matmul_weights(model) + 12.0 * cfg.layers * cfg.units * context


FAMILIES = (Transformer(),)


def _ff_dim(cfg) -> int:
    return int(cfg.ff_dim) if int(getattr(cfg, "ff_dim", 0) or 0) > 0 else 4 * int(cfg.units)


def build_transformer(cfg, vocab_size: int, max_len: int):
    """Token embedding (embed_dim) [-> Dense(units) if embed_dim != units] + learned positions
    (max_len) [-> Dropout] -> `cfg.layers` x DecoderBlock -> LayerNorm -> logits.

    Logits: Dense(V, float32), or with ``cfg.tie_embeddings`` the transposed token embedding
    (plus a bias, preceded by Dense(embed_dim) if embed_dim != units). Both embeddings use
    ``cfg.embed_init``. Inputs must have T <= max_len.
    Layer names: "embedding", "embed_proj", "positions", "embed_dropout", "block_{i}",
    "final_ln", "unembed_proj", "logits" (untied only).
    """
    import keras

    from .layers import DecoderBlock, PositionEmbedding, TokenEmbedding, embedding_initializer

    units, heads = int(cfg.units), int(cfg.heads)
    tie = bool(getattr(cfg, "tie_embeddings", False))
    init = embedding_initializer(cfg.embed_init)
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    if tie:
        embedding = TokenEmbedding(vocab_size, cfg.embed_dim, init, name="embedding")
    else:
        embedding = keras.layers.Embedding(vocab_size, cfg.embed_dim, embeddings_initializer=init,
                                           name="embedding")
    x = embedding(ids)
    if cfg.embed_dim != units:
        x = keras.layers.Dense(units, name="embed_proj")(x)
    x = PositionEmbedding(max_len, init, name="positions")(x)
    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout, name="embed_dropout")(x)
    for i in range(int(cfg.layers)):
        x = DecoderBlock(units, heads, _ff_dim(cfg), cfg.dropout, name=f"block_{i}")(x)[0]
    logits = _head(x, cfg, vocab_size, units, tie, embedding)
    return keras.Model(ids, logits, name="transformer_lm")


def _head(x, cfg, vocab_size, units, tie, embedding, model=None):
    import keras

    def layer(name, make):
        return model.get_layer(name) if model is not None else make()

    x = layer("final_ln", lambda: keras.layers.LayerNormalization(epsilon=1e-5, name="final_ln"))(x)
    if tie:
        if cfg.embed_dim != units:
            x = layer("unembed_proj", lambda: keras.layers.Dense(cfg.embed_dim, name="unembed_proj"))(x)
        return embedding(x, reverse=True)
    return layer("logits", lambda: keras.layers.Dense(vocab_size, dtype="float32", name="logits"))(x)


class _KVBuffer:
    """Host-side cache, (B, 2L, max_len, H, Dh) float32 (keys of layer i at 2i, values at
    2i+1), and how far it was written. Several states may share one buffer; a state that is
    behind ``length`` (an older state being reused) copies its prefix before writing
    (copy-on-branch), so states behave as immutable values."""

    def __init__(self, array, length):
        self.array, self.length = array, length


class KVState:
    """Transformer stepper state: ``length`` positions are held in ``buffer``."""

    def __init__(self, buffer: _KVBuffer | None, batch_size: int, length: int = 0):
        self.buffer, self.batch_size, self.length = buffer, batch_size, length


class TransformerStepper(Stepper):
    """Key/value-cached decoding: a call with T ids attends to the cached keys/values of the
    positions already held plus its own, returns their logits and a state holding T more.
    ``max_context`` = max_len (learned positions); a call that would exceed it raises
    ValueError, and the caller must re-prefill a window with a fresh state.

    The compiled step model takes (ids, past_len, cache[:, :, :S]) with S a power-of-two
    bucket >= past_len, and returns (logits, new keys/values (B, 2L, T, H, Dh)), which are
    written into the host cache.
    """

    def __init__(self, model, cfg, max_len: int | None = None):
        self.model, self.cfg = model, cfg
        self.max_context = int(max_len or model.get_layer("positions").max_len)
        self.num_layers = int(cfg.layers)
        self.heads = int(cfg.heads)
        self.head_dim = int(cfg.units) // self.heads
        import keras

        from .layers import CachedAttentionMask

        units = int(cfg.units)
        tie = bool(getattr(cfg, "tie_embeddings", False))
        ids = keras.Input(shape=(None,), dtype="int32", name="ids")
        start = keras.Input(shape=(), dtype="int32", name="past_len")
        cache = keras.Input(shape=(2 * self.num_layers, None, self.heads, self.head_dim), name="cache")
        mask = CachedAttentionMask(name="cache_mask")(ids, start, cache)
        embedding = model.get_layer("embedding")
        x = embedding(ids)
        if cfg.embed_dim != units:
            x = model.get_layer("embed_proj")(x)
        x = model.get_layer("positions")(x, start=start)
        new_kv = []
        for i in range(self.num_layers):
            x, k, v = model.get_layer(f"block_{i}")(x, past_k=cache[:, 2 * i], past_v=cache[:, 2 * i + 1],
                                                   past_len=start, attn_mask=mask)
            new_kv += [k, v]
        logits = _head(x, cfg, None, units, tie, embedding, model=model)
        self.step_model = keras.Model([ids, start, cache], [logits, keras.ops.stack(new_kv, axis=1)],
                                      name="transformer_lm_stepper")

    def initial_state(self, batch_size: int) -> KVState:
        return KVState(None, int(batch_size), 0)

    def _alloc(self, batch_size):
        shape = (batch_size, 2 * self.num_layers, self.max_context, self.heads, self.head_dim)
        return _KVBuffer(np.zeros(shape, np.float32), 0)

    def __call__(self, ids, state: KVState):
        ids = self._ids(ids)
        batch, steps = ids.shape
        n = state.length
        if batch != state.batch_size:
            raise ValueError(f"state is for batch {state.batch_size}, ids have batch {batch}")
        if n + steps > self.max_context:
            raise ValueError(f"transformer context exceeded: {n} cached + {steps} new > "
                             f"max_context {self.max_context}; re-prefill a window")
        buf = state.buffer
        if buf is None:
            buf = self._alloc(batch)
        elif buf.length > n:               # an older state is reused: do not clobber the newer one
            fresh = self._alloc(batch)
            fresh.array[:, :, :n] = buf.array[:, :, :n]
            buf = fresh
        s = bucket(n, self.max_context)
        logits, new_kv = self.step_model.predict_on_batch(
            [ids, np.full((batch,), n, np.int32), buf.array[:, :, :s]])
        buf.array[:, :, n:n + steps] = new_kv
        buf.length = n + steps
        return np.asarray(logits, dtype=np.float32), KVState(buf, batch, n + steps)

    def device_state(self, batch_size: int) -> tuple:
        """Keys then values of each block, (B, heads, max_context, head_dim) float32 each."""
        from keras import ops
        shape = (batch_size, self.heads, self.max_context, self.head_dim)
        return tuple(ops.zeros(shape, "float32") for _ in range(2 * self.num_layers))

    def device_step(self, ids, state, held):
        """The blocks' :meth:`~pipeline.models.layers.DecoderBlock.decode` over the fixed-size caches."""
        from keras import ops
        held = ops.cast(held, "int32")
        model, cfg = self.model, self.cfg
        embedding = model.get_layer("embedding")
        x = embedding(ids)
        if cfg.embed_dim != cfg.units:
            x = model.get_layer("embed_proj")(x)
        x = model.get_layer("positions")(x, start=ops.broadcast_to(held, (ids.shape[0],)))
        caches = []
        for i in range(self.num_layers):
            x, k, v = model.get_layer(f"block_{i}").decode(x, state[2 * i], state[2 * i + 1], held)
            caches += [k, v]
        tie = bool(getattr(cfg, "tie_embeddings", False))
        return _head(x, cfg, None, int(cfg.units), tie, embedding, model=model), tuple(caches)
