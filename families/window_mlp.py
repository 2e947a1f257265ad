"""Bengio et al. (2003), "A Neural Probabilistic Language Model": the fixed-window MLP, as a seqlab family.

The next token is predicted from the embeddings of the last ``context`` tokens only (the current one
included), concatenated: y = b + W x + U tanh(d + H x). Written as a sequence model, the
concatenation times H is a causal convolution of width ``context`` over the embeddings, so one call
scores every position of a window. ``direct: true`` adds the paper's direct connections W x.

A complete example of a family from outside ``pipeline/`` (docs/models.md, "Add your own model"):
its own validated parameters, its network (``window_mlp_net.py``: a ``SequenceModel`` whose
forward pass is written once, in ``call_with_cache``), a stepper, its scoring protocol; seqlab
asks the family for everything else and falls back to the defaults of
``pipeline.models.family.Family``. The network lives in its own module so that importing the
family (params.yaml is validated in every stage) does not import Keras.

    models:
      mlp:
        family: families.window_mlp:WindowMLP
        context: 5
        hidden: 256
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config.schema import spec
from pipeline.models.family import WINDOW, Family, ModelParams, ParamError
from pipeline.models.stepper import RecomputeStepper


@dataclass(frozen=True)
class WindowMLPParams(ModelParams):
    embed_dim: int = field(default=64, metadata=spec(ge=1))
    context: int = field(default=5, metadata=spec(ge=1))        # tokens the prediction sees
    hidden: int = field(default=256, metadata=spec(ge=1))       # tanh units
    direct: bool = False                                         # the paper's direct connections W x
    dropout: float = field(default=0.0, metadata=spec(ge=0, lt=1))


class WindowMLP(Family):
    name = "window_mlp"
    params = WindowMLPParams
    protocol = WINDOW          # scored with windows of the training context, like the Transformer

    def check(self, cfg: WindowMLPParams) -> None:
        if cfg.context > 1024:
            raise ParamError("context", f"{cfg.context} tokens make a {cfg.context * cfg.embed_dim}-wide input; "
                             "expected at most 1024")

    def build(self, cfg: WindowMLPParams, vocab_size: int, max_len: int):
        from families.window_mlp_net import WindowMLPNet
        return WindowMLPNet(cfg, vocab_size, max_len).build_once()

    def stepper(self, model, cfg: WindowMLPParams, max_len: int):
        # The prediction sees `context` tokens: recomputing a window of context + 1 is exact, and a
        # re-prefill (of the last `context` tokens) keeps every prediction's whole window.
        return RecomputeStepper(model, min(max_len, cfg.context + 1))
