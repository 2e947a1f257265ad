"""The recurrent families rnn, lstm and gru: stacks of SimpleRNN, LSTM or GRU (cuDNN-eligible).

The layers are the hoisted-projection subclasses of ``pipeline.models.fast_rnn`` (same weights,
same results as keras.layers.SimpleRNN/LSTM/GRU; faster on CPU, the stock cuDNN path on a GPU).
Scored as one stream: the state is carried across the whole split.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


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
        return RecurrentLM(self, cfg, vocab_size, max_len).build_once()

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
