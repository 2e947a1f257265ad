"""Stepper base class: incremental decoding / stateful scoring with a model's weights."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Stepper:
    """Runs a model incrementally, in two forms sharing one set of weights.

    Host form (scoring, and the reference decoder ``pipeline.generation.decoding.generate``):
    ``logits, state = stepper(ids, state)`` on numpy arrays. ``ids`` (B, T) int continue the
    sequence held in ``state`` (T > 1 prefill, T == 1 decode); logits are float32 (B, T, V).

    Device form (the compiled decoder ``pipeline.generation.compiled``): :meth:`device_state` and
    :meth:`device_step` on backend tensors, pure functions traced inside one compiled loop, the
    state a tuple of fixed-shape tensors that never leaves the device.

    ``max_context`` is the most positions one state can hold (None = unbounded); the caller
    re-prefills a window when it would be exceeded.
    """

    max_context: int | None = None
    batch_axis = 0             # the axis of the device state's tensors that runs over the sequences
    ragged_start = False       # True: :meth:`device_start` starts right-padded prompts of different lengths
    fixed_state: tuple = ()    # indices of state entries no step changes (an encoder's outputs): a beam keeps them in place

    @property
    def window_keep(self) -> int | None:
        """Positions a full window restarts from when it slides (None: unbounded): ceil(C / 2).

        The window slides by C // 2 tokens at once, so every sampled token sees between half a
        window and a whole one, as every token scored by the evaluation protocol does
        (``eval.stride_fraction`` 0.5), at about two tokens' work per token instead of a whole
        window's (a re-prefill per token, as nanoGPT's ``generate`` does).
        """
        return None if self.max_context is None else self.max_context - self.max_context // 2

    def initial_state(self, batch_size: int):
        raise NotImplementedError

    def __call__(self, ids: np.ndarray, state):
        raise NotImplementedError

    def device_state(self, batch_size: int) -> tuple:
        """The state of ``batch_size`` empty sequences: a tuple of backend tensors."""
        raise NotImplementedError(f"{type(self).__name__} has no device form")

    def prefill_for_device(self, ids: np.ndarray) -> tuple[np.ndarray, tuple]:
        """``(logits, state)`` of fresh sequences ``ids`` (B, T) by the host form, the state laid out
        as the device form's (numpy arrays): prompts of any length share one traced call, and a
        compiled loop (the beam search) continues from the state."""
        raise NotImplementedError(f"{type(self).__name__} has no device form")

    def start_inputs(self, ids: np.ndarray, lengths: np.ndarray) -> tuple:
        """Host side: the arrays :meth:`device_start` takes for fresh sequences, row b the first
        ``lengths[b]`` ids of ``ids`` (B, T), right-padded."""
        raise NotImplementedError(f"{type(self).__name__} does not start prompts of different lengths")

    def device_start(self, *inputs) -> tuple:
        """``(logits (B, V) float32, state)`` of the fresh sequences :meth:`start_inputs` laid out,
        in one call whatever their lengths; the state then continues every row from its own end
        (``device_step``'s ``held`` is not read). Only where :attr:`ragged_start`: an
        encoder-decoder, whose first call must hold each row's whole source, starts a batch of
        sources this way."""
        raise NotImplementedError(f"{type(self).__name__} does not start prompts of different lengths")

    def device_step(self, ids, state: tuple, held):
        """``(logits (B, T, V) float32, state)`` for int32 ``ids`` (B, T) continuing ``state``,
        which holds ``held`` positions (a scalar int32 tensor). Pure keras.ops / layer calls."""
        raise NotImplementedError(f"{type(self).__name__} has no device form")

    @staticmethod
    def _ids(ids) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"ids must be (batch, time), got shape {ids.shape}")
        return ids.astype(np.int32, copy=False)


class CacheState(NamedTuple):
    """The host form's state of a :class:`CachedStepper`: the cache arrays, the positions they hold."""
    cache: tuple
    held: int
    batch_size: int


class CachedStepper(Stepper):
    """Both forms of a :class:`~pipeline.models.sequence_model.SequenceModel` with a cache, from its
    one forward pass ``call_with_cache``.

    Device form: ``call_with_cache`` itself on the model's cache tuple. Host form: the same call
    traced by the backend (:func:`traced`) on numpy arrays; its state is a :class:`CacheState`,
    a value that is never mutated.
    """

    def __init__(self, model):
        self.model = model
        self.max_context = model.max_context
        self.ragged_start = hasattr(model, "start_inputs")
        self.fixed_state = tuple(model.fixed_cache)
        self.batch_axis = int(getattr(model, "cache_batch_axis", 0))
        self._host_step = traced(self.device_step)

    def initial_state(self, batch_size: int) -> CacheState:
        from keras import ops
        return CacheState(tuple(ops.convert_to_numpy(t) for t in self.model.empty_cache(batch_size)), 0,
                          int(batch_size))

    def __call__(self, ids, state: CacheState):
        from keras import ops
        ids = self._ids(ids)
        batch, steps = ids.shape
        if batch != state.batch_size:
            raise ValueError(f"state is for batch {state.batch_size}, ids have batch {batch}")
        if self.max_context is not None and state.held + steps > self.max_context:
            raise ValueError(f"context exceeded: {state.held} held + {steps} new > max_context "
                             f"{self.max_context}; re-prefill a window")
        logits, cache = self._host_step(ops.convert_to_tensor(ids), tuple(state.cache),
                                        ops.convert_to_tensor(state.held, "int32"))
        new = tuple(np.asarray(ops.convert_to_numpy(a), dtype=np.float32) for a in cache)
        return np.asarray(ops.convert_to_numpy(logits), dtype=np.float32), CacheState(new, state.held + steps, batch)

    def device_state(self, batch_size: int) -> tuple:
        return tuple(self.model.empty_cache(batch_size))

    def prefill_for_device(self, ids):
        logits, state = self(ids, self.initial_state(len(ids)))
        return logits, state.cache

    def start_inputs(self, ids, lengths):
        return self.model.start_inputs(ids, lengths)

    def device_start(self, *inputs):
        return self.model.start_with_cache(*inputs)

    def device_step(self, ids, state, held):
        from keras import ops
        return self.model.call_with_cache(ids, tuple(state), ops.cast(held, "int32"))


def traced(fn):
    """``fn`` as the backend runs a host-side call: a graph function on TensorFlow (no XLA, one
    trace per input shape, relaxed when shapes keep changing), ``jax.jit`` on JAX, eager elsewhere."""
    import keras
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.function(fn, reduce_retracing=True)
    if backend == "jax":
        import jax
        return jax.jit(fn)
    return fn


def bucket(n: int, cap: int, floor: int = 16) -> int:
    """A power of two >= n, at least ``floor``, at most ``cap``: the lengths passed to a compiled call.

    Keeps the number of distinct shapes (retraces) logarithmic in ``cap``.
    """
    return min(cap, max(floor, 1 << max(0, n - 1).bit_length()))


class RecomputeStepper(Stepper):
    """The stepper of a family without a cached decoder: every call runs the whole window again.

    State: the ids held so far, int32 (B, n) (device form: (B, max_context), valid up to ``held``).
    A call appends its ids and runs the model on the window, right-padded (host form: to a
    :func:`bucket` length); padding after the last real position never changes a causal model's
    earlier logits. ``max_context`` is the training context.
    """

    def __init__(self, model, max_len: int):
        self.model = model
        self.max_context = int(max_len)

    @property
    def window_keep(self) -> int:
        """C - 1: every call recomputes the whole window anyway, so the longest context is free
        (and a fixed-window model with C = its context + 1 decodes exactly)."""
        return self.max_context - 1

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

    def device_state(self, batch_size: int) -> tuple:
        from keras import ops
        return (ops.zeros((batch_size, self.max_context), "int32"),)

    def prefill_for_device(self, ids):
        logits, seq = self(ids, self.initial_state(len(ids)))
        window = np.zeros((len(ids), self.max_context), np.int32)
        window[:, :seq.shape[1]] = seq
        return logits, (window,)

    def device_step(self, ids, state, held):
        from keras import ops
        window = ops.slice_update(state[0], (0, held), ops.cast(ids, "int32"))
        logits = self.model(window, training=False)
        batch, steps = ids.shape
        return ops.slice(logits, (0, held, 0), (batch, steps, logits.shape[-1])), (window,)
