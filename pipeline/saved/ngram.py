"""The Kneser-Ney n-gram model (``pipeline.models.ngram``) behind the saved-model interface."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.models.ngram import KneserNeyLM
from pipeline.io import write_json
from pipeline.paths import KIND_FILE, NGRAM_FILE


class SavedNgram:
    """The n-gram as every saved model is seen. It samples on the host, one row at a time
    (:class:`~pipeline.generation.text.HostSampler`): its state is its last order-1 ids, and a
    stepper's (B, T, V) logits over a whole prompt would cost T x V for nothing."""

    def __init__(self, lm: KneserNeyLM):
        self.lm = lm
        self.vocab_size = lm.vocab_size

    @staticmethod
    def mark(folder: Path) -> None:
        """Say that ``folder`` (holding ``model.npz``) holds an n-gram model (:func:`pipeline.saved.load_saved`)."""
        write_json(Path(folder) / KIND_FILE, {"kind": "ngram"})

    @classmethod
    def load(cls, folder: Path) -> "SavedNgram":
        return cls(KneserNeyLM.load(Path(folder) / NGRAM_FILE, mmap=True))

    def sampler(self):
        from pipeline.generation.text import HostSampler
        return HostSampler(self.lm)

    def transducer(self, end_id: int, width: int, max_tokens: int, alpha: float, batch_size: int):
        """Greedy decoding to ``end_id`` (width 1); None for a beam: the n-gram decodes greedily only."""
        from pipeline.generation.text import HostGreedy
        return HostGreedy(self.lm, end_id, max_tokens) if width == 1 else None

    def context_limits(self, longest: int) -> tuple[int, int | None]:
        """Its own window, order - 1 tokens; the order test shuffles within ``longest`` tokens
        (within its own window nothing would be left to shuffle beyond it)."""
        return max(1, self.lm.order - 1), longest

    def context_scorer(self):
        """Row r conditions on at most its last ``lengths[r]`` tokens (order capped at
        lengths[r] + 1), without the start of stream the tokens were cut from."""
        lm, keep = self.lm, self.lm.order - 1

        def score(ctx, lengths, targets):
            out = np.empty(len(targets), np.float64)
            for r, (n, y) in enumerate(zip(lengths, targets)):
                hist = ctx[r, max(0, int(n) - keep):int(n)].tolist() if keep else []
                out[r] = lm.next_logprobs_after(hist)[int(y)]
            return out
        return score

    def alignments(self, examples: list) -> list:
        return []    # no encoder

    def probes(self, contexts: np.ndarray, targets: np.ndarray, seed: int) -> dict:
        return {}    # no gradients, no attention
