"""The conv family: a WaveNet-style dilated causal convolution with fast (cached) decoding.

Embedding -> Dense(units) -> one gated residual block per entry of ``dilations`` -> head. Scored
with windows of the training context, like the Transformer, although its stepper continues a
stream exactly (its state holds each block's last inputs).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config.schema import spec

from .family import WINDOW, EmbeddingParams, Family, ParamError


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
        from .conv_net import ConvLM
        return ConvLM(cfg, vocab_size, max_len).build_once()


FAMILIES = (Conv(),)

