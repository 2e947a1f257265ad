"""The encoder–decoder families for paired data: ``seq2seq_rnn`` and ``seq2seq_transformer``.

An encoder–decoder still maps one example's ids to logits, as every family does: the example is
``<bos> source <TAB> target <line end>`` and the network reads the whole source (every position
before the example's first marker) at every target position, so it is causal on the target only,
and positions before the marker are never scored (the pairs loss mask). The n-gram and the
decoder-only families see the same example as a prefix, so all of them take part in one comparison.

- ``seq2seq_rnn``: a bidirectional GRU encoder, a GRU decoder started from the encoder's final
  states, additive attention (Bahdanau et al. 2015) over the encoder states; the attention reads the
  decoder state after its step (Luong et al. 2015's placement), so that training runs the decoder
  as one recurrent layer instead of a Python loop of cells.
- ``seq2seq_transformer``: a pre-LN Transformer encoder (self-attention over the source only) and
  decoder (causal self-attention over the target only, cross-attention to the encoder), positions
  counted from the example's start in the encoder and from the marker in the decoder.

Both need the marker's id (the prepared data's ``marker_id``), and every example to fit one
window of the training context: they are scored with windows, each example from its own ``<bos>``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config.schema import spec

from .family import WINDOW, EmbeddingParams, Family, ParamError


@dataclass(frozen=True)
class Seq2SeqRNNParams(EmbeddingParams):
    """``units``: the decoder's width (each encoder direction has units // 2); ``attention_units``:
    the width of the additive attention's hidden layer (0: ``units``)."""
    attention_units: int = field(default=0, metadata=spec(ge=0))
    embed_init: str = field(default="default", metadata=spec(choices=("default", "normal")))


@dataclass(frozen=True)
class Seq2SeqTransformerParams(EmbeddingParams):
    """``layers`` encoder blocks and as many decoder blocks, each ``units`` wide."""
    layers: int = field(default=2, metadata=spec(ge=1))
    heads: int = field(default=4, metadata=spec(ge=1))
    ff_dim: int = field(default=0, metadata=spec(ge=0))      # 0: 4 * units
    embed_init: str = field(default="default", metadata=spec(choices=("default", "normal")))


class EncoderDecoder(Family):
    """What the two encoder–decoders share: paired data, a marker id, windows of whole examples."""
    protocol = WINDOW
    reads_source = True


class Seq2SeqRNN(EncoderDecoder):
    name = "seq2seq_rnn"
    params = Seq2SeqRNNParams

    def check(self, cfg: Seq2SeqRNNParams) -> None:
        if cfg.units < 2 or cfg.units % 2:
            raise ParamError("units", f"{cfg.units} is not even: each encoder direction has units // 2")

    def build(self, cfg, vocab_size: int, max_len: int, marker_id: int | None = None):
        from .seq2seq_rnn_net import AttentionRNN
        return AttentionRNN(cfg, vocab_size, max_len, marker_id=marker_id).build_once()


class Seq2SeqTransformer(EncoderDecoder):
    name = "seq2seq_transformer"
    params = Seq2SeqTransformerParams

    def check(self, cfg: Seq2SeqTransformerParams) -> None:
        if cfg.units % cfg.heads:
            raise ParamError("units", f"{cfg.units} is not divisible by heads={cfg.heads}")

    def build(self, cfg, vocab_size: int, max_len: int, marker_id: int | None = None):
        from .seq2seq_transformer_net import EncoderDecoderTransformer
        return EncoderDecoderTransformer(cfg, vocab_size, max_len, marker_id=marker_id).build_once()


FAMILIES = (Seq2SeqRNN(), Seq2SeqTransformer())
