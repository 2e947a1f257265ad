"""The network base class: a family's layers as attributes and its forward pass written once.

Every built-in network is a :class:`SequenceModel` (keras-hub builds its backbones the same way):
the layers are attributes made in ``__init__``, and :meth:`SequenceModel.call_with_cache` is the
one forward pass. Called without a cache it is the plain causal forward (training, window
scoring, ``model(ids)``); called with a cache it continues the sequences the cache holds, and it
serves the host stepper (traced once into a Keras step model) and the compiled decoder (traced
inside its loop) alike. Nothing outside the model looks a layer up by name: the diagnostics ask
for :meth:`embed`, :meth:`attention_maps` and :meth:`lookup_tables`.
"""
from __future__ import annotations

import keras

PACKAGE = "seqlab"


class SequenceModel(keras.Model):
    """int32 ids (B, T) -> float32 logits (B, T, V), causal; one subclass per family.

    Subclasses make their layers in ``__init__`` (in a fixed order: each layer draws its
    initialisers' seeds when it is made) and implement :meth:`call_with_cache`; a family with a
    cache (recurrent state, convolution queues, key/value cache) sets ``cached`` and implements
    :meth:`empty_cache`. ``max_context`` is the most positions one cache can hold (None: a stream
    continues forever). A family whose first call must hold each row's whole prompt (an
    encoder-decoder encodes its source there) also implements ``start_inputs`` (host: a batch of
    prompts of any lengths laid out) and ``start_with_cache`` (their start in one call), so that
    sources of different lengths decode together. The model is rebuilt from its parameters (:meth:`get_config`), so a saved
    ``.keras`` file loads wherever ``pipeline.models`` can be imported.
    """

    cached = False
    cache_batch_axis = 0    # the axis of every cache tensor that runs over the sequences (beam search reorders it)
    fixed_cache: tuple = ()  # cache entries written when an example starts and never by a step (an encoder's
                             # outputs): the same for every continuation of a prompt, so a beam search never reorders them

    def __init__(self, cfg, vocab_size: int, max_len: int, **kwargs):
        super().__init__(**kwargs)
        self.cfg, self.vocab_size, self.max_len = cfg, int(vocab_size), int(max_len)

    @property
    def max_context(self) -> int | None:
        return None

    def call(self, ids, training=None):
        return self.call_with_cache(ids, training=training)[0]

    def call_with_cache(self, ids, cache=None, held=None, training=None, embedded=None):
        """``(logits, cache)``: the forward pass over ``ids`` (B, T).

        ``cache`` None: a fresh sequence, the returned cache is None. Otherwise a tuple of tensors
        (:meth:`empty_cache`'s layout) holding ``held`` positions (a scalar int32 tensor); the
        returned tuple holds ``held + T``. ``embedded`` (B, T, D), when given, replaces
        :meth:`embed` of ``ids`` (the diagnostics' gradients with respect to the token vectors).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement call_with_cache")

    def empty_cache(self, batch_size: int) -> tuple:
        """The cache of ``batch_size`` empty sequences: a tuple of fixed-shape float32 tensors."""
        raise NotImplementedError(f"{type(self).__name__} keeps no cache")

    def embed(self, ids):
        """The token vectors (B, T, D) that the rest of the forward pass reads."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its token vectors")

    def attention_maps(self, ids) -> list:
        """Per attention block, its (B, heads, T, T) weights on ``ids``; [] without attention."""
        return []

    def lookup_tables(self) -> list:
        """Variables used as lookup tables (embeddings), not multiplied per token (FLOPs count)."""
        return lookup_tables(self)

    def build_once(self):
        """Create every weight by tracing the forward pass once (symbolically: no computation)."""
        self(keras.Input(shape=(None,), dtype="int32"))
        return self

    def get_config(self):
        return {"name": self.name, "model": self.cfg.as_dict(), "vocab_size": self.vocab_size,
                "max_len": self.max_len}

    @classmethod
    def from_config(cls, config):
        from pipeline.models import build_model
        from pipeline.models.catalog import model_params
        return build_model(model_params(config["model"], "saved Keras model"), config["vocab_size"],
                           config["max_len"], config.get("marker_id"), config.get("image"))


def lookup_tables(model) -> list:
    """The weights of ``model``'s embedding layers (found by type: Keras's and seqlab's)."""
    from pipeline.models.layers import PositionEmbedding, TokenEmbedding
    kinds = (keras.layers.Embedding, TokenEmbedding, PositionEmbedding)
    return [v for layer in model.layers if isinstance(layer, kinds) for v in layer.weights]
