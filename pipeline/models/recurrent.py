"""The recurrent families rnn, lstm and gru: stacks of SimpleRNN, LSTM or GRU (cuDNN-eligible).

The layers are the hoisted-projection subclasses of ``pipeline.models.fast_rnn`` (same weights,
same results as keras.layers.SimpleRNN/LSTM/GRU; faster on CPU, the stock cuDNN path on a GPU).
Scored as one stream: the state is carried across the whole split.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from pipeline.config.schema import spec

from .family import STREAM, EmbeddingParams, Family
from .stepper import ArrayStateStepper


@dataclass(frozen=True)
class RecurrentParams(EmbeddingParams):
    layers: int = field(default=2, metadata=spec(ge=1))
    recurrent_init: str = field(default="default", metadata=spec(choices=("default", "uniform")))


class Recurrent(Family):
    """One stack of recurrent layers; subclasses name the Keras layer and its state count."""
    params = RecurrentParams
    protocol = STREAM
    layer: ClassVar[str]          # the class in pipeline.models.fast_rnn
    states_per_layer: ClassVar[int] = 1
    forget_bias: ClassVar[bool] = False   # the LSTM's unit forget-gate bias under Keras's initialisers

    def build(self, cfg, vocab_size: int, max_len: int):
        return build_recurrent(self, cfg, vocab_size)

    def stepper(self, model, cfg, max_len: int):
        return RecurrentStepper(model, cfg, self.states_per_layer)

    def layer_class(self):
        from . import fast_rnn
        return getattr(fast_rnn, self.layer)


class RNN(Recurrent):
    name = "rnn"
    layer = "FastSimpleRNN"


class LSTM(Recurrent):
    name = "lstm"
    layer = "FastLSTM"
    states_per_layer = 2
    forget_bias = True
    xla_on_gpu = False      # keep the cuDNN kernel


class GRU(Recurrent):
    name = "gru"
    layer = "FastGRU"
    xla_on_gpu = False      # keep the cuDNN kernel


FAMILIES = (RNN(), LSTM(), GRU())


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


def build_recurrent(family: Recurrent, cfg, vocab_size: int):
    """Embedding -> `cfg.layers` x (RNN [-> Dropout]) -> Dense(V, float32).

    Layer names: "embedding", "rnn_{i}", "dropout_{i}", "logits". The RNN layers are built with
    return_state=True so that the stepper can reuse them with explicit initial/final states;
    initialisers follow ``cfg.recurrent_init`` (:func:`recurrent_layer_initializers`, :func:`output_initializers`); everything else
    is left at the defaults that keep the layers cuDNN-eligible
    (tanh/sigmoid, recurrent_dropout=0, unroll=False, use_bias=True, GRU reset_after=True).
    The layers are ``fast_rnn.FastSimpleRNN/FastLSTM/FastGRU``: the stock Keras weights and
    initialisers, the input projection hoisted out of the time loop and a hand-written backward
    pass on CPU, the stock (cuDNN) implementation where Keras would use cuDNN.
    """
    import keras

    from .layers import embedding_initializer

    cls = family.layer_class()
    if cfg.layers < 1:
        raise ValueError("recurrent models need layers >= 1")
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(vocab_size, cfg.embed_dim,
                               embeddings_initializer=embedding_initializer(cfg.embed_init),
                               name="embedding")(ids)
    for i in range(cfg.layers):
        x = cls(cfg.units, return_sequences=True, return_state=True, name=f"rnn_{i}",
                **recurrent_layer_initializers(cfg, family.forget_bias))(x)[0]
        if cfg.dropout > 0:
            x = keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}")(x)
    logits = keras.layers.Dense(vocab_size, dtype="float32", name="logits", **output_initializers(cfg))(x)
    return keras.Model(ids, logits, name=f"{family.name}_lm")


class RecurrentStepper(ArrayStateStepper):
    """Carries each layer's hidden (and cell) state across calls.

    State: one float32 array (B, S, units) with S = layers (rnn/gru) or 2*layers (lstm:
    h then c of each layer), layer by layer. Never mutated.
    """

    max_context = None

    def __init__(self, model, cfg, per_layer: int):
        import keras

        self.units = int(cfg.units)
        self.num_layers = int(cfg.layers)
        self.num_states = self.num_layers * per_layer
        ids = keras.Input(shape=(None,), dtype="int32", name="ids")
        states = keras.Input(shape=(self.num_states, self.units), name="states")
        x = model.get_layer("embedding")(ids)
        states_out = []
        for i in range(self.num_layers):
            init = [states[:, i * per_layer + j] for j in range(per_layer)]
            out = model.get_layer(f"rnn_{i}")(x, initial_state=init)
            x = out[0]
            states_out.extend(out[1:])
        # dropout layers are the identity at inference
        logits = model.get_layer("logits")(x)
        self.step_model = keras.Model([ids, states], [logits, keras.ops.stack(states_out, axis=1)],
                                      name=f"{model.name}_stepper")
        self.state_shape = (self.num_states, self.units)
        self.per_layer = per_layer
        self.model = model

    def device_state(self, batch_size: int) -> tuple:
        """One (B, units) tensor per layer state (h, or h then c), layer by layer."""
        from keras import ops
        return tuple(ops.zeros((batch_size, self.units), "float32") for _ in range(self.num_states))

    def device_step(self, ids, state, held):
        """A single step runs each layer's cell directly (``step_once``); longer inputs run the
        layers' sequence path."""
        model, per = self.model, self.per_layer
        x = model.get_layer("embedding")(ids)
        new = []
        for i in range(self.num_layers):
            layer, init = model.get_layer(f"rnn_{i}"), list(state[i * per:(i + 1) * per])
            if ids.shape[1] == 1:
                states = layer.step_once(x, init)
                x = states[0][:, None, :]
            else:
                out = layer(x, initial_state=init)
                x, states = out[0], out[1:]
            new.extend(states)
        return model.get_layer("logits")(x), tuple(new)
