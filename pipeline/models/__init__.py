"""Neural language-model families of seqlab (plain Keras 3: keras.layers / keras.ops only).

Every model maps int ids (B, T) (the first input of a stream is BOS_ID) to float32 logits
(B, T, V) and is strictly causal: logits[:, t] depend on ids[:, :t+1] only.

Families (``cfg.family``):
  * "rnn" / "lstm" / "gru": Embedding -> ``cfg.layers`` recurrent layers of ``cfg.units``
    (Dropout after each when ``cfg.dropout`` > 0) -> Dense(V). Any T.
  * "conv": WaveNet: Embedding -> Dense(units) -> residual blocks (dilated causal conv with
    ``cfg.kernel_size``, tanh*sigmoid gate, residual + skip) -> relu -> Dense(units, relu)
    -> Dense(V). One block per entry of ``cfg.dilations`` (``cfg.layers`` is ignored).
    Any T.
  * "transformer": decoder-only pre-LN GPT (learned positions, ``cfg.heads`` heads, width
    ``cfg.units``, feed-forward ``cfg.ff_dim`` or 4*units, optional ``cfg.tie_embeddings``).
    T <= max_len.

``cfg.embed_init`` "normal" draws embeddings from N(0, 1) (torch.nn.Embedding), "default"
keeps Keras's uniform(-0.05, 0.05). ``cfg.recurrent_init`` "uniform" gives the recurrent families
PyTorch's initialisation instead of Keras's (``recurrent.recurrent_layer_initializers``).

``make_stepper(model, cfg)`` returns a Stepper for incremental decoding / stateful scoring
(see pipeline.models.base.Stepper) sharing the model's weights.
"""
from __future__ import annotations

import keras

from pipeline.params import FAMILIES, RECURRENT_FAMILIES

from .base import Stepper
from .conv import ConvStepper, build_conv, conv_dilations, receptive_field
from .layers import DecoderBlock, GatedResidualBlock, PositionEmbedding, TokenEmbedding
from .recurrent import RecurrentStepper, build_recurrent
from .transformer import KVState, TransformerStepper, build_transformer


__all__ = ["FAMILIES", "Stepper", "build_model", "count_parameters", "make_stepper",
           "receptive_field", "conv_dilations", "KVState",
           "RecurrentStepper", "ConvStepper", "TransformerStepper",
           "TokenEmbedding", "PositionEmbedding", "DecoderBlock", "GatedResidualBlock"]


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")


def build_model(cfg, vocab_size: int, max_len: int) -> keras.Model:
    """Functional keras.Model: int32 ids (B, T) -> float32 logits (B, T, vocab_size).

    ``max_len`` is the training context; only the transformer uses it (number of learned
    positions, so its T must be <= max_len). Under a mixed-precision global policy the body
    computes in low precision while the logits stay float32.
    """
    _check_family(cfg.family)
    if cfg.family in RECURRENT_FAMILIES:
        return build_recurrent(cfg, vocab_size)
    if cfg.family == "conv":
        return build_conv(cfg, vocab_size)
    return build_transformer(cfg, vocab_size, max_len)


def count_parameters(model) -> int:
    """Number of scalar weights (all variables; every one is trainable here)."""
    return int(model.count_params())


def make_stepper(model, cfg) -> Stepper:
    """A Stepper running ``model``'s layers (same weight objects) incrementally.

    max_context: None for rnn/lstm/gru and conv (the conv stepper caches each block's past
    inputs, so it continues a stream exactly and forever; its receptive field is
    ``stepper.receptive_field``), max_len for the transformer (key/value cache).
    """
    _check_family(cfg.family)
    stepper = {"conv": ConvStepper, "transformer": TransformerStepper}.get(cfg.family, RecurrentStepper)
    return stepper(model, cfg)
