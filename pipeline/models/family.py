"""What a model family declares to seqlab: the contract every built-in and user family fulfils.

A family is one module holding a :class:`Family` subclass (and its parameters, a
:class:`ModelParams` subclass). Everything else in seqlab asks the family, never its name:

- ``params``: the family's own typed parameters (validated like the rest of params.yaml);
- :meth:`Family.build`: the network, int ids (B, T) -> float32 logits (B, T, V), causal: a
  ``pipeline.models.sequence_model.SequenceModel`` (its forward pass written once, in
  ``call_with_cache``) or any Keras model;
- :meth:`Family.stepper`: incremental decoding / stateful scoring with the model's weights (by
  default from the network's cached call, or a recomputed window);
- ``protocol``: how the one scoring protocol reads a split (``stream`` or ``window``);
- :meth:`Family.jit_compile` and ``mixed_precision``: the compile and precision policy;
- :meth:`Family.flops_per_token`: training FLOPs per token (``benchmarks/train_throughput.py``);
- :meth:`Family.check`: cross-field checks of the parameters.

This module imports no Keras: params.yaml is validated in every stage, most of which never
build a network.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from pipeline.config.schema import spec

STREAM = "stream"    # one state carried across the whole split (recurrent networks)
WINDOW = "window"    # windows of the training context, strided (every scored token keeps >= half a window)
PROTOCOLS = (STREAM, WINDOW)


@dataclass(frozen=True)
class ModelParams:
    """What every family's parameters share; a family subclasses it with its own fields.

    ``family`` is the name in params.yaml (a built-in name or ``module:Name``); ``train`` holds this
    model's overrides of the ``train`` section.
    """
    family: str = ""
    train: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EmbeddingParams(ModelParams):
    """Fields shared by the built-in networks: a token embedding, a width, dropout."""
    embed_dim: int = field(default=64, metadata=spec(ge=1))
    units: int = field(default=256, metadata=spec(ge=1))
    dropout: float = field(default=0.0, metadata=spec(ge=0, lt=1))
    embed_init: str = field(default="normal", metadata=spec(choices=("default", "normal")))


class ParamError(ValueError):
    """A cross-field check failed: ``key`` is the field it names, ``message`` what is wrong."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


class Family:
    """One model family. Subclass it, set ``params`` (and ``protocol``), implement :meth:`build`.

    The defaults: :meth:`stepper` runs the network's cached call (``CachedStepper``) or, for a
    network without a cache, recomputes its window (``RecomputeStepper``); XLA everywhere, mixed
    precision on GPUs, and 6 FLOPs per weight of every matrix applied once per token.
    """

    name: ClassVar[str] = ""
    params: ClassVar[type[ModelParams]] = ModelParams
    protocol: ClassVar[str] = WINDOW
    mixed_precision: ClassVar[bool] = True    # False: float32 even where `train.precision: auto` picks mixed
    xla_on_gpu: ClassVar[bool] = True         # False: keep the backend's own kernels on a GPU (cuDNN)
    reads_source: ClassVar[bool] = False      # an encoder-decoder: paired data only, built with its marker's id
    reads_image: ClassVar[bool] = False       # a 2-D image model: image corpora only, built with their layout (image=)

    def check(self, cfg: ModelParams) -> None:
        """Raise :class:`ParamError` when fields contradict each other."""

    def build(self, cfg: ModelParams, vocab_size: int, max_len: int):
        """Functional keras.Model: int32 ids (B, T) -> float32 logits (B, T, vocab_size), causal.

        ``max_len`` is the training context (``train.seq_len``); windowed families are never given
        more positions than that. A family that ``reads_source`` takes ``marker_id`` too: the id
        of the marker that ends each example's source (``pipeline.models.seq2seq``); one that
        ``reads_image`` takes ``image``, the corpus's layout (``ImageLayout.model_config``).
        """
        raise NotImplementedError(f"family {self.name!r} does not implement build")

    def stepper(self, model, cfg: ModelParams, max_len: int):
        """A ``pipeline.models.stepper.Stepper`` running ``model`` incrementally: its cached call
        when the network keeps a cache (``SequenceModel.cached``), else a recomputed window."""
        from pipeline.models.stepper import CachedStepper, RecomputeStepper
        return CachedStepper(model) if getattr(model, "cached", False) else RecomputeStepper(model, max_len)

    def jit_compile(self, on_gpu: bool) -> bool:
        """Whether ``train.jit_compile: auto`` compiles the training step with XLA."""
        return self.xla_on_gpu or not on_gpu

    def flops_per_token(self, model, cfg: ModelParams, context: int) -> float:
        """Training FLOPs per token: 6 per weight of the matrices applied once per token."""
        return 6.0 * matmul_weights(model)

    def __repr__(self) -> str:
        return f"<family {self.name}>"


def matmul_weights(model) -> int:
    """Weights of kernels applied once per token: every >= 2-D variable except lookup tables.

    The tables are what the network says they are (``SequenceModel.lookup_tables``); a plain
    Keras model's are the weights of its ``keras.layers.Embedding`` layers.
    """
    own = getattr(model, "lookup_tables", None)
    if own is None:
        import keras
        tables = {id(v) for layer in model.layers if isinstance(layer, keras.layers.Embedding) for v in layer.weights}
    else:
        tables = {id(v) for v in own()}
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables
               if len(v.shape) >= 2 and id(v) not in tables)
