"""The base of the encoder-decoders: the marker that ends each source, one window, and the layout
of a batch of prompts of any lengths for their batched start (``start_with_cache``)."""
from __future__ import annotations

from .sequence_model import SequenceModel
from .source import split_prompts


class EncoderDecoder(SequenceModel):
    """A :class:`SequenceModel` that reads ``<bos> source MARKER target``: an encoder over the
    positions before the marker, a decoder from the marker on. Subclasses implement
    ``call_with_cache``, ``empty_cache`` and ``start_with_cache(source, source_lengths, target,
    target_lengths)`` (:func:`~.source.split_prompts`'s layout) -> ``(logits (B, V), cache)``."""

    cached = True

    def __init__(self, cfg, vocab_size, max_len, marker_id=None, **kwargs):
        super().__init__(cfg, vocab_size, max_len, **kwargs)
        if marker_id is None:
            raise ValueError(f"{type(self).__name__} needs marker_id: the id that ends each example's source")
        self.marker_id = int(marker_id)

    @property
    def max_context(self) -> int:
        return self.max_len

    def start_inputs(self, ids, lengths):
        """Host side: prompts (B, T) of ``lengths`` laid out for ``start_with_cache``."""
        return split_prompts(ids, lengths, self.marker_id, self.max_len)

    def get_config(self):
        return super().get_config() | {"marker_id": self.marker_id}
