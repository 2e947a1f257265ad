"""The recurrent families rnn, lstm and gru: stacks of SimpleRNN, LSTM or GRU (cuDNN-eligible).

The layers are the hoisted-projection subclasses of ``pipeline.models.fast_rnn`` (same weights,
same results as keras.layers.SimpleRNN/LSTM/GRU; faster on CPU, the stock cuDNN path on a GPU).
Scored as one stream: the state is carried across the whole split.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


from pipeline.config.schema import spec

from .family import STREAM, EmbeddingParams, Family, ParamError


@dataclass(frozen=True)
class RecurrentParams(EmbeddingParams):
    """``dropout`` applies between the layers and to the last layer's output; with
    ``embed_dropout`` on the token vectors too, every non-recurrent connection is dropped out
    (Zaremba et al. 2014). ``recurrent_dropout`` is variational dropout on the state (one mask per
    sequence, Gal & Ghahramani 2016); it leaves the hoisted loop and cuDNN for Keras's stock one.
    ``tie_embeddings`` makes the output layer the embedding table transposed (Press & Wolf 2017;
    Inan et al. 2017)."""
    layers: int = field(default=2, metadata=spec(ge=1))
    recurrent_init: str = field(default="default", metadata=spec(choices=("default", "uniform")))
    embed_dropout: float = field(default=0.0, metadata=spec(ge=0, lt=1))
    recurrent_dropout: float = field(default=0.0, metadata=spec(ge=0, lt=1))
    tie_embeddings: bool = False


class Recurrent(Family):
    """One stack of recurrent layers; subclasses name the Keras layer and its state count."""
    params = RecurrentParams
    protocol = STREAM
    layer: ClassVar[str]          # the class in pipeline.models.fast_rnn
    states_per_layer: ClassVar[int] = 1
    forget_bias: ClassVar[bool] = False   # the LSTM's unit forget-gate bias under Keras's initialisers

    def check(self, cfg) -> None:
        if cfg.tie_embeddings and cfg.embed_dim != cfg.units:
            raise ParamError("tie_embeddings", f"the output layer reads the last layer's {cfg.units} units through "
                             f"the embedding table of width {cfg.embed_dim}: expected embed_dim == units")

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
