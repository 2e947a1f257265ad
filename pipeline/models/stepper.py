"""Stepper base class: incremental decoding / stateful scoring with a model's weights."""
from __future__ import annotations

import numpy as np


class Stepper:
    """Runs a model incrementally: ``logits, state = stepper(ids, state)``.

    ``ids`` (B, T) int continue the sequence held in ``state`` (T > 1 prefill, T == 1 decode);
    logits are float32 (B, T, V). ``max_context`` is the most positions one state can hold
    (None = unbounded); the caller re-prefills a window when it would be exceeded.
    The compiled call is the backend's predict function (``predict_on_batch``) of a sibling
    Keras model that shares the layer objects, hence the weights, of the trained model.
    """

    max_context: int | None = None

    def initial_state(self, batch_size: int):
        raise NotImplementedError

    def __call__(self, ids: np.ndarray, state):
        raise NotImplementedError

    @staticmethod
    def _ids(ids) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"ids must be (batch, time), got shape {ids.shape}")
        return ids.astype(np.int32, copy=False)


def bucket(n: int, cap: int) -> int:
    """A power of two >= n, at least 16, at most ``cap``: the lengths passed to a compiled call.

    Keeps the number of distinct shapes (retraces) logarithmic in ``cap``.
    """
    return min(cap, max(16, 1 << max(0, n - 1).bit_length()))


class RecomputeStepper(Stepper):
    """The stepper of a family without a cached decoder: every call runs the whole window again.

    State: the ids held so far, int32 (B, n). A call appends its ids and runs the model on the
    window, right-padded to a :func:`bucket` length (padding after the last real position never
    changes a causal model's earlier logits). ``max_context`` is the training context.
    """

    def __init__(self, model, max_len: int):
        self.model = model
        self.max_context = int(max_len)

    def initial_state(self, batch_size: int):
        return np.zeros((batch_size, 0), np.int32)

    def __call__(self, ids, state):
        ids = self._ids(ids)
        if ids.shape[0] != state.shape[0]:
            raise ValueError(f"state is for batch {state.shape[0]}, ids have batch {ids.shape[0]}")
        seq = np.concatenate([state, ids], axis=1)
        n, steps = seq.shape[1], ids.shape[1]
        if n > self.max_context:
            raise ValueError(f"context exceeded: {state.shape[1]} held + {steps} new > max_context "
                             f"{self.max_context}; re-prefill a window")
        padded = np.zeros((seq.shape[0], bucket(n, self.max_context)), np.int32)
        padded[:, :n] = seq
        logits = np.asarray(self.model.predict_on_batch(padded), dtype=np.float32)
        return logits[:, n - steps:n], seq
