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
