"""The base of the encoder-decoders: the marker that ends each source, one window, and the layout
of a batch of prompts of any lengths for their batched start (``start_with_cache``)."""
from __future__ import annotations

from .sequence_model import SequenceModel
from .source import split_prompts


class EncoderDecoder(SequenceModel):
    """A :class:`SequenceModel` that reads ``<bos> source MARKER target``: an encoder over the
    positions before the marker, a decoder from the marker on. Subclasses implement
    ``call_with_cache``, ``empty_cache`` and ``start_with_cache(source, source_lengths, target,
    target_lengths)`` (:func:`~.source.split_prompts`'s layout) -> ``(logits (B, V), cache)``, and
    ``teacher_forced`` (training's forward of rows split at the marker)."""

    cached = True

    def __init__(self, cfg, vocab_size, max_len, marker_id=None, **kwargs):
        super().__init__(cfg, vocab_size, max_len, **kwargs)
        if marker_id is None:
            raise ValueError(f"{type(self).__name__} needs marker_id: the id that ends each example's source")
        self.marker_id = int(marker_id)

    @property
    def max_context(self) -> int:
        return self.max_len

    def call(self, ids, training=None):
        """Logits of ``ids`` (B, T) at every position, or of a training batch split at the marker,
        ``(source (B, S), source_lengths (B,), target (B, K))`` (:func:`~pipeline.data.examples.split_at_marker`),
        at the K target positions only: each side runs over its own positions, not the whole row."""
        if isinstance(ids, (tuple, list)):
            return self.teacher_forced(*ids, training=training)
        return super().call(ids, training=training)

    def teacher_forced(self, source, source_lengths, target, training=None):
        """The logits (B, K, V) of the target block given the source block (see :meth:`call`)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement teacher_forced")

    def start_inputs(self, ids, lengths):
        """Host side: prompts (B, T) of ``lengths`` laid out for ``start_with_cache``."""
        return split_prompts(ids, lengths, self.marker_id, self.max_len)

    def get_config(self):
        return super().get_config() | {"marker_id": self.marker_id}
