"""The Transformer family: a decoder-only (GPT-style, pre-LN) model with a key/value-cached stepper.

Attention is ``keras.ops.dot_product_attention`` (each backend's own kernel); ``dropout`` applies to
the embeddings and the residual branches. Scored with windows of the training context (learned
positions: T <= max_len).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config.schema import spec

from .family import WINDOW, EmbeddingParams, Family, ParamError, matmul_weights


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
        from .transformer_net import TransformerLM
        return TransformerLM(cfg, vocab_size, max_len).build_once()

    def flops_per_token(self, model, cfg, context: int) -> float:
        """nanoGPT's estimate_mfu: 6 per weight plus attention, 12 * layers * width * context."""
        return 6.0 * matmul_weights(model) + 12.0 * cfg.layers * cfg.units * context


FAMILIES = (Transformer(),)
