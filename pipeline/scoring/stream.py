"""Stream scoring with a Stepper: log p(x_t | everything before t) for every token of a split.

Backend-agnostic: only ``stepper.initial_state`` and ``stepper(ids, state)`` on numpy arrays.
"""
from __future__ import annotations

import numpy as np

from pipeline.data.vocab_layout import BOS_ID


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    return x - (m + np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True)))


def stream_logprobs(stepper, ids: np.ndarray, chunk: int = 256, batch_size: int = 1,
                    warmup: int | None = None) -> np.ndarray:
    """Natural-log p(ids[t] | BOS, ids[:t]) for every t of the 1-D stream ``ids`` (float64, (n,)).

    Unbounded steppers (``max_context`` None: recurrent and conv), the intended use: the
    stream is fed ``chunk`` positions per call with the state carried across chunks, so with
    ``batch_size`` 1 the result equals one full-sequence forward pass over [BOS] + ids[:-1].
    ``batch_size`` > 1 scores B contiguous segments in parallel (much faster on long splits);
    segment b > 0 starts from a fresh state ``warmup`` tokens (default ``chunk``) before its
    first scored token, whose scores are discarded; an approximation that only differs from
    the exact stream where a model remembers more than ``warmup`` tokens.

    Bounded steppers (transformer): the first ``max_context`` tokens are scored in one window;
    after that each window of ``max_context`` inputs scores its last
    ``min(chunk, max_context // 2)`` tokens, the rest being context (strided sliding window);
    ``batch_size`` windows run per call. Exact (= full forward) when len(ids) <= max_context.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    n = len(ids)
    if n == 0:
        return np.zeros((0,), np.float64)
    chunk, batch_size = max(1, int(chunk)), max(1, int(batch_size))
    inputs = np.concatenate([[BOS_ID], ids[:-1]]).astype(np.int32)
    if stepper.max_context is None:
        return _stream_unbounded(stepper, inputs, ids, chunk, batch_size,
                                 chunk if warmup is None else max(0, int(warmup)))
    return _stream_windows(stepper, inputs, ids, chunk, batch_size)


def _pick(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    lp = log_softmax(logits)
    return np.take_along_axis(lp, targets[..., None].astype(np.int64), axis=-1)[..., 0]


def _stream_unbounded(stepper, inputs, targets, chunk, batch_size, warmup):
    n = len(inputs)
    batch_size = min(batch_size, n)
    bounds = np.linspace(0, n, batch_size + 1).round().astype(int)
    starts = [0] + [max(0, int(a) - warmup) for a in bounds[1:-1]]   # where each row's input begins
    length = max(int(e) - s for s, e in zip(starts, bounds[1:]))
    rows = np.full((batch_size, length), BOS_ID, np.int32)           # right padding never matters (causal)
    row_targets = np.zeros((batch_size, length), np.int64)
    for b, (s, e) in enumerate(zip(starts, bounds[1:])):
        rows[b, :e - s] = inputs[s:e]
        row_targets[b, :e - s] = targets[s:e]
    scores = np.empty((batch_size, length), np.float64)
    state = stepper.initial_state(batch_size)
    for c in range(0, length, chunk):
        logits, state = stepper(rows[:, c:c + chunk], state)
        scores[:, c:c + chunk] = _pick(logits, row_targets[:, c:c + chunk])
    out = np.empty((n,), np.float64)
    for b, (s, a, e) in enumerate(zip(starts, bounds[:-1], bounds[1:])):
        out[a:e] = scores[b, a - s:e - s]
    return out


def _stream_windows(stepper, inputs, targets, chunk, batch_size):
    n, window = len(inputs), int(stepper.max_context)
    out = np.empty((n,), np.float64)
    first = min(n, window)
    logits, _ = stepper(inputs[None, :first], stepper.initial_state(1))
    out[:first] = _pick(logits[0], targets[:first])
    if n <= window:
        return out
    stride = max(1, min(chunk, window // 2))
    blocks = [(a, min(a + stride, n)) for a in range(window, n, stride)]
    for i in range(0, len(blocks), batch_size):
        group = blocks[i:i + batch_size]
        batch = np.stack([inputs[e - window:e] for _, e in group])
        logits, _ = stepper(batch, stepper.initial_state(len(group)))
        for row, (a, e) in enumerate(group):
            out[a:e] = _pick(logits[row, window - (e - a):], targets[a:e])
    return out
