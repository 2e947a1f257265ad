"""The recurrent families' network (Keras): see :class:`RecurrentLM`."""
from __future__ import annotations

import keras

from .layers import embedding_initializer
from .recurrent import FAMILIES, output_initializers, recurrent_layer_initializers
from .sequence_model import PACKAGE, SequenceModel


@keras.saving.register_keras_serializable(package=PACKAGE)
class RecurrentLM(SequenceModel):
    """Embedding -> ``cfg.layers`` x (RNN [-> Dropout]) -> Dense(V, float32); the cache is each
    layer's hidden (and cell) state, (B, units) each, layer by layer (h then c for the LSTM).

    The RNN layers are ``fast_rnn.FastSimpleRNN/FastLSTM/FastGRU``: the stock Keras weights
    and initialisers, the input projection hoisted out of the time loop and a hand-written
    backward pass on CPU, the stock (cuDNN) implementation where Keras would use cuDNN; they
    keep the defaults that make them cuDNN-eligible (tanh/sigmoid, recurrent_dropout=0,
    unroll=False, use_bias=True, GRU reset_after=True). Initialisers follow
    ``cfg.recurrent_init`` (:func:`recurrent_layer_initializers`, :func:`output_initializers`).
    """

    cached = True

    def __init__(self, family_name, cfg, vocab_size, max_len, **kwargs):
        super().__init__(cfg, vocab_size, max_len, name=kwargs.pop("name", f"{family_name}_lm"), **kwargs)
        family = {f.name: f for f in FAMILIES}[family_name]
        cls = family.layer_class()
        self.per_layer = family.states_per_layer
        self.embedding = keras.layers.Embedding(vocab_size, cfg.embed_dim, name="embedding",
                                                embeddings_initializer=embedding_initializer(cfg.embed_init))
        self.rnns, self.drops = [], []
        for i in range(cfg.layers):
            self.rnns.append(cls(cfg.units, return_sequences=True, return_state=True, name=f"rnn_{i}",
                                 **recurrent_layer_initializers(cfg, family.forget_bias)))
            if cfg.dropout > 0:
                self.drops.append(keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}"))
        self.head = keras.layers.Dense(vocab_size, dtype="float32", name="logits", **output_initializers(cfg))

    def get_config(self):
        return {"family_name": self.cfg.family, **super().get_config()}

    def embed(self, ids):
        return self.embedding(ids)

    def call_with_cache(self, ids, cache=None, held=None, training=None, embedded=None):
        """A single step with a cache runs each layer's cell directly (``step_once``, the
        compiled decoder's hot path); otherwise each layer runs its sequence path."""
        x = self.embed(ids) if embedded is None else embedded
        per, new = self.per_layer, []
        for i, rnn in enumerate(self.rnns):
            if cache is None:
                out = rnn(x, training=training)
                x = out[0]
            else:
                init = list(cache[i * per:(i + 1) * per])
                if ids.shape[1] == 1:
                    states = rnn.step_once(x, init)
                    x = states[0][:, None, :]
                else:
                    out = rnn(x, initial_state=init, training=training)
                    x, states = out[0], out[1:]
                new.extend(states)
            if self.drops:
                x = self.drops[i](x, training=training)
        return self.head(x), (None if cache is None else tuple(new))

    def empty_cache(self, batch_size):
        from keras import ops
        return tuple(ops.zeros((batch_size, self.cfg.units), "float32")
                     for _ in range(len(self.rnns) * self.per_layer))

