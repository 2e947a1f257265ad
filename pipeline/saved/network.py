"""A trained network (``pipeline.models.network``) behind the saved-model interface."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.models.catalog import family_of
from pipeline.models.family import STREAM
from pipeline.models.network import Network, load_network

KEPT_TRANSDUCERS = 8    # decoders kept per network (the oldest setting goes first)


class SavedNetwork:
    """A :class:`~pipeline.models.network.Network` as every saved model is seen: decoded by the
    compiled decoder over its stepper, scored and probed through its Keras model."""

    def __init__(self, network: Network):
        self.network = network
        self.vocab_size = network.vocab_size
        self._stepper = None
        self._transducers: dict[tuple, object] = {}

    def stepper(self):
        """The network's stepper, made once: its traced host step serves every decoder after the first."""
        self._stepper = self._stepper or self.network.stepper()
        return self._stepper

    @classmethod
    def load(cls, folder: Path) -> "SavedNetwork":
        return cls(load_network(folder))

    def sampler(self):
        from pipeline.generation.compiled import CompiledDecoder
        return CompiledDecoder(self.stepper(), self.vocab_size)

    def transducer(self, end_id: int, width: int, max_tokens: int, alpha: float, batch_size: int):
        """Beam search over the stepper (width 1: greedy), each output up to ``end_id``; one decoder
        per setting, kept, so that a server compiles its search once, not on every request."""
        from pipeline.generation.beam import BeamDecoder
        key = (end_id, width, max_tokens, alpha, batch_size)
        if key not in self._transducers:
            if len(self._transducers) >= KEPT_TRANSDUCERS:       # requests choose the settings: bounded
                self._transducers.pop(next(iter(self._transducers)))
            self._transducers[key] = BeamDecoder(self.stepper(), self.vocab_size, end_id, width=width,
                                                 max_tokens=max_tokens, alpha=alpha, batch_size=batch_size)
        return self._transducers[key]

    def alignments(self, examples: list[np.ndarray]) -> list[np.ndarray]:
        """Per example (its ids from ``<bos>`` through its line end), the attention of each target
        token's prediction over the source positions, (target tokens, source positions) with the
        reference target given; [] for a network without an encoder (``alignment``)."""
        model = self.network.model
        if not hasattr(model, "alignment"):
            return []
        out = []
        for ids in examples:
            ids = np.asarray(ids, np.int32)
            weights = np.asarray(model.alignment(ids[None, :-1]))[0]
            marker = int(np.flatnonzero(ids == model.marker_id)[0])
            out.append(weights[marker:, :marker])      # row i predicts ids[marker + 1 + i]
        return out

    def context_limits(self, longest: int) -> tuple[int, int | None]:
        """(longest context measured, order-shuffle width): a stream family up to ``longest``, a
        windowed one up to its training context; the width is the context (None)."""
        unbounded = family_of(self.network.cfg).protocol == STREAM
        return (longest if unbounded else min(self.network.seq_len, longest)), None

    def context_scorer(self):
        from pipeline.scoring.network_probes import network_scorer
        return network_scorer(self.network.model)

    def probes(self, contexts: np.ndarray, targets: np.ndarray, seed: int) -> dict:
        """Gradient norms over distance (trained, and at initialisation with ``seed``) and the
        attention maps of ``contexts`` (B, T) before ``targets`` (B,)."""
        import keras

        from pipeline.models import build_model
        from pipeline.scoring.network_probes import attention_maps, gradient_norms, mean_attention_distance
        net = self.network
        m = {"grad": gradient_norms(net.model, contexts, targets)}
        keras.utils.set_random_seed(seed)
        m["grad_init"] = gradient_norms(build_model(net.cfg, net.vocab_size, net.seq_len, getattr(net.model, "marker_id", None),
                                                    getattr(net.model, "image", None)), contexts, targets)
        maps = attention_maps(net.model, contexts)
        m["attention_distance"] = [mean_attention_distance(a).tolist() for a in maps]
        m["attention_window"] = [a[0] for a in maps]
        return m
