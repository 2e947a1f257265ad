"""The Transformer family's network (Keras): see :class:`TransformerLM`."""
from __future__ import annotations

import keras
from keras import ops

from .layers import DecoderBlock, Dropout, PositionEmbedding, TokenEmbedding, embedding_initializer
from .sequence_model import PACKAGE, SequenceModel


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerLM(SequenceModel):
    """Token embedding (embed_dim) [-> Dense(units) if embed_dim != units] + learned positions
    (max_len) [-> Dropout] -> ``cfg.layers`` x DecoderBlock -> LayerNorm -> logits.

    Logits: Dense(V, float32), or with ``cfg.tie_embeddings`` the transposed token embedding (plus
    a bias, preceded by Dense(embed_dim) if embed_dim != units). Both embeddings use
    ``cfg.embed_init``. Inputs must have T <= max_len (``max_context``). The cache is each
    block's keys then values, (B, heads, max_len, head_dim) float32 each, written in place.
    """

    cached = True

    def __init__(self, cfg, vocab_size, max_len, **kwargs):
        super().__init__(cfg, vocab_size, max_len, name=kwargs.pop("name", "transformer_lm"), **kwargs)
        units, embed_dim = int(cfg.units), int(cfg.embed_dim)
        self.tied = bool(getattr(cfg, "tie_embeddings", False))
        self.heads, self.head_dim = int(cfg.heads), units // int(cfg.heads)
        init = embedding_initializer(cfg.embed_init)
        if self.tied:
            self.embedding = TokenEmbedding(vocab_size, embed_dim, init, name="embedding")
        else:
            self.embedding = keras.layers.Embedding(vocab_size, embed_dim, embeddings_initializer=init,
                                                    name="embedding")
        self.embed_proj = keras.layers.Dense(units, name="embed_proj") if embed_dim != units else None
        self.positions = PositionEmbedding(max_len, init, name="positions")
        self.embed_drop = Dropout(cfg.dropout, name="embed_dropout") if cfg.dropout > 0 else None
        ff_dim = int(cfg.ff_dim) if int(getattr(cfg, "ff_dim", 0) or 0) > 0 else 4 * units
        self.blocks = [DecoderBlock(units, self.heads, ff_dim, cfg.dropout, name=f"block_{i}")
                       for i in range(int(cfg.layers))]
        self.final_ln = keras.layers.LayerNormalization(epsilon=1e-5, name="final_ln")
        if self.tied:
            self.unembed_proj = keras.layers.Dense(embed_dim, name="unembed_proj") if embed_dim != units else None
        else:
            self.logits = keras.layers.Dense(vocab_size, dtype="float32", name="logits")

    @property
    def max_context(self) -> int:
        return self.max_len

    def embed(self, ids):
        return self.embedding(ids)

    def block_input(self, x, start=None, training=None):
        """Token vectors -> the first block's input: [projection], positions from ``start``, [dropout]."""
        if self.embed_proj is not None:
            x = self.embed_proj(x)
        x = self.positions(x, start=start)
        if self.embed_drop is not None:
            x = self.embed_drop(x, training=training)
        return x

    def _head(self, x):
        x = self.final_ln(x)
        if not self.tied:
            return self.logits(x)
        if self.unembed_proj is not None:
            x = self.unembed_proj(x)
        return self.embedding(x, reverse=True)

    def call_with_cache(self, ids, cache=None, held=None, training=None, embedded=None):
        x = self.embed(ids) if embedded is None else embedded
        if cache is None:
            x = self.block_input(x, training=training)
            for block in self.blocks:
                x = block(x, training=training)
            return self._head(x), None
        x = self.block_input(x, start=ops.broadcast_to(held, (ops.shape(ids)[0],)))
        new = []
        for i, block in enumerate(self.blocks):
            x, k, v = block.decode(x, cache[2 * i], cache[2 * i + 1], held)
            new += [k, v]
        return self._head(x), tuple(new)

    def empty_cache(self, batch_size):
        shape = (batch_size, self.heads, self.max_len, self.head_dim)
        return tuple(ops.zeros(shape, "float32") for _ in range(2 * len(self.blocks)))

    def attention_maps(self, ids) -> list:
        x = self.block_input(self.embed(ids))
        maps = []
        for block in self.blocks:
            maps.append(block.attention(x))
            x = block(x)
        return maps
