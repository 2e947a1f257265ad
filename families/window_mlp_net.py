"""The network of the example family ``families.window_mlp``: see :class:`WindowMLPNet`."""
from __future__ import annotations

import keras

from pipeline.models.sequence_model import SequenceModel


@keras.saving.register_keras_serializable(package="seqlab_examples")
class WindowMLPNet(SequenceModel):
    """Embedding -> causal Conv1D of width ``context`` (H x + d), tanh [-> Dropout] -> Dense(V)
    [+ the direct connections W x, a causal Conv1D to V]. It keeps no cache (``cached`` False):
    its stepper recomputes a window of ``context + 1`` tokens, which is exact."""

    def __init__(self, cfg, vocab_size, max_len, **kwargs):
        super().__init__(cfg, vocab_size, max_len, name=kwargs.pop("name", "window_mlp_lm"), **kwargs)
        self.embedding = keras.layers.Embedding(vocab_size, cfg.embed_dim, name="embedding")
        # causal padding puts zeros before the stream start
        self.hidden = keras.layers.Conv1D(cfg.hidden, cfg.context, padding="causal", activation="tanh",
                                          name="hidden")
        self.drop = keras.layers.Dropout(cfg.dropout, name="dropout") if cfg.dropout > 0 else None
        self.out = keras.layers.Dense(vocab_size, dtype="float32", name="logits")
        self.direct = (keras.layers.Conv1D(vocab_size, cfg.context, padding="causal", use_bias=False,
                                           dtype="float32", name="direct") if cfg.direct else None)

    def embed(self, ids):
        return self.embedding(ids)

    def call_with_cache(self, ids, cache=None, held=None, training=None, embedded=None):
        if cache is not None:
            raise ValueError("WindowMLPNet keeps no cache; its stepper recomputes the window")
        x = self.embed(ids) if embedded is None else embedded
        h = self.hidden(x)
        if self.drop is not None:
            h = self.drop(h, training=training)
        logits = self.out(h)
        if self.direct is not None:
            logits = logits + self.direct(x)
        return logits, None
