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
        from .recurrent_net import RecurrentLM
        return RecurrentLM(self.name, cfg, vocab_size, max_len).build_once()

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
