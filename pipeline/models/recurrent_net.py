"""The recurrent families' network (Keras): see :class:`RecurrentLM`."""
from __future__ import annotations

import keras
import numpy as np

from .layers import Dropout, TokenEmbedding, embedding_initializer
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

    def __init__(self, family, cfg, vocab_size, max_len, **kwargs):
        """``family``: the ``pipeline.models.recurrent.Recurrent`` that builds it (its layer class,
        states per layer and forget-gate bias)."""
        super().__init__(cfg, vocab_size, max_len, name=kwargs.pop("name", f"{family.name}_lm"), **kwargs)
        cls = family.layer_class()
        self.per_layer = family.states_per_layer
        self.tied = bool(getattr(cfg, "tie_embeddings", False))
        if self.tied:   # one table read both ways, U(-0.1, 0.1) as PyTorch's word_language_model ties it
            self.embedding = TokenEmbedding(vocab_size, cfg.embed_dim, _uniform(0.1), name="embedding")
        else:
            self.embedding = keras.layers.Embedding(vocab_size, cfg.embed_dim, name="embedding",
                                                    embeddings_initializer=embedding_initializer(cfg.embed_init))
        embed_dropout = getattr(cfg, "embed_dropout", 0.0)
        self.embed_drop = Dropout(embed_dropout, name="embed_dropout") if embed_dropout > 0 else None
        recurrent_dropout = getattr(cfg, "recurrent_dropout", 0.0)
        extra = {"recurrent_dropout": recurrent_dropout} if recurrent_dropout > 0 else {}
        self.rnns, self.drops = [], []
        for i in range(cfg.layers):
            self.rnns.append(cls(cfg.units, return_sequences=True, return_state=True, name=f"rnn_{i}",
                                 **recurrent_layer_initializers(cfg, family.forget_bias), **extra))
            if cfg.dropout > 0:
                self.drops.append(Dropout(cfg.dropout, name=f"dropout_{i}"))
        self.head = None if self.tied else keras.layers.Dense(vocab_size, dtype="float32", name="logits",
                                                              **output_initializers(cfg))

    def embed(self, ids):
        return self.embedding(ids)

    def call_with_cache(self, ids, cache=None, held=None, training=None, embedded=None):
        """A single step with a cache runs each layer's cell directly (``step_once``, the
        compiled decoder's hot path); otherwise each layer runs its sequence path."""
        x = self.embed(ids) if embedded is None else embedded
        if self.embed_drop is not None:
            x = self.embed_drop(x, training=training)
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
        logits = self.embedding(x, reverse=True) if self.tied else self.head(x)
        return logits, (None if cache is None else tuple(new))

    def lookup_tables(self) -> list:
        """A tied table is also the output layer's matrix, applied once per token (FLOPs)."""
        return [] if self.tied else super().lookup_tables()

    def empty_cache(self, batch_size):
        from keras import ops
        return tuple(ops.zeros((batch_size, self.cfg.units), "float32")
                     for _ in range(len(self.rnns) * self.per_layer))


def _uniform(bound: float):
    import keras
    return keras.initializers.RandomUniform(-bound, bound)


def _uniform_bound(cfg) -> float | None:
    """1/sqrt(units) for ``recurrent_init: uniform``, None for Keras's initialisers."""
    if cfg.recurrent_init == "default":
        return None
    if cfg.recurrent_init != "uniform":
        raise ValueError(f"unknown recurrent_init {cfg.recurrent_init!r}; expected 'default' or 'uniform'")
    return 1.0 / float(np.sqrt(cfg.units))


def recurrent_layer_initializers(cfg, forget_bias: bool = False) -> dict:
    """Initialiser arguments of one recurrent layer, by ``cfg.recurrent_init`` (new objects each call).

    "default": Keras's (Glorot-uniform input kernels, orthogonal recurrent kernels, zero biases,
    the LSTM's forget-gate bias at 1; Glorot-uniform output layer). "uniform": PyTorch's
    (``nn.RNN``/``nn.LSTM``/``nn.GRU``: every weight and bias from U(-1/sqrt(units), 1/sqrt(units)),
    no forget-gate bias; ``nn.Linear``: U(-1/sqrt(fan_in), 1/sqrt(fan_in))). On the reference
    LSTM (512 x2, Tiny Shakespeare) "uniform" learns faster per step (README, ``lstm-5min``).
    """
    bound = _uniform_bound(cfg)
    if bound is None:
        return {}
    rnn = {"kernel_initializer": _uniform(bound), "recurrent_initializer": _uniform(bound),
           "bias_initializer": _uniform(bound)}
    if forget_bias:
        rnn["unit_forget_bias"] = False
    return rnn


def output_initializers(cfg) -> dict:
    """Initialiser arguments of the output Dense (fan_in = units), by ``cfg.recurrent_init``."""
    bound = _uniform_bound(cfg)
    return {} if bound is None else {"kernel_initializer": _uniform(bound), "bias_initializer": _uniform(bound)}
