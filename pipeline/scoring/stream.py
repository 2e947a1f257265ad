"""Stream scoring with a Stepper: log p(x_t | everything before t) for every token of a split.

Backend-agnostic: only ``stepper.initial_state`` and ``stepper(ids, state)`` on numpy arrays.
The ids may be memory-mapped and larger than memory: they are read chunk by chunk, and
:func:`stream_pieces` yields the log-probs piece by piece, so scoring a split in that form holds
O(chunk) values, never O(split).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

import numpy as np

from pipeline.data.examples import example_spans
from pipeline.data.vocab_layout import BOS_ID
from pipeline.data.windows import stream_at, window_rows
from pipeline.errors import SeqlabError


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

    The concatenation of :func:`stream_pieces`, except for segments (``batch_size`` > 1 with an
    unbounded stepper), whose scores arrive out of order and are placed into one array.
    """
    ids = _flat(ids)
    chunk, batch_size = max(1, int(chunk)), max(1, int(batch_size))
    if stepper.max_context is None and batch_size > 1 and len(ids) > 0:
        return _stream_segments(stepper, ids, chunk, batch_size, chunk if warmup is None else max(0, int(warmup)))
    return concat_pieces(stream_pieces(stepper, ids, chunk, batch_size))


def stream_pieces(stepper, ids: np.ndarray, chunk: int = 256, batch_size: int = 1) -> Iterator[np.ndarray]:
    """Consecutive float64 pieces of the log-probs of :func:`stream_logprobs`, reading ``ids`` as it
    goes: memory O(chunk) whatever the split's length. The exact stream only: an unbounded stepper
    carries one state across the chunks (``batch_size`` batches a bounded stepper's windows, never
    segments)."""
    ids = _flat(ids)
    chunk, batch_size = max(1, int(chunk)), max(1, int(batch_size))
    if len(ids) == 0:
        return iter(())
    if stepper.max_context is None:
        return (scores[0] for _, scores in _segment_chunks(stepper, ids, [0], [len(ids)], chunk))
    return _window_pieces(stepper, ids, chunk, batch_size)


def example_stream_pieces(stepper, ids: np.ndarray, starts: np.ndarray, chunk: int = 256,
                          batch_size: int = 32) -> Iterator[np.ndarray]:
    """The log-probs of every example, in order, each from a fresh state and the example's own
    ``<bos>`` (``data.examples: lines``): ``batch_size`` consecutive examples are scored side by
    side, one row each, ``chunk`` positions per call. Holds O(batch x longest example). A bounded
    stepper (``max_context``) takes examples of at most ``max_context`` tokens."""
    ids = _flat(ids)
    bound = stepper.max_context
    chunk = max(1, int(chunk)) if bound is None else int(bound)
    for group in batched(example_spans(starts, len(ids)), max(1, int(batch_size))):
        a, e = (np.array(x, np.int64) for x in zip(*group))
        if bound is not None and int((e - a).max()) > bound:
            raise SeqlabError(f"an example of {int((e - a).max())} tokens is longer than this stepper's "
                              f"max_context ({bound}); expected examples of at most {bound} tokens")
        scores = np.concatenate([sc for _, sc in _segment_chunks(stepper, ids, a, e, chunk, fresh=True)], axis=1)
        for row, (lo, hi) in enumerate(group):
            yield scores[row, :hi - lo]


def concat_pieces(pieces: Iterable[np.ndarray]) -> np.ndarray:
    """One float64 array of consecutive log-prob pieces (empty when there are none)."""
    return np.concatenate([np.zeros((0,), np.float64), *pieces]).astype(np.float64, copy=False)


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Lists of ``size`` consecutive items (the last one shorter), consuming ``items`` lazily."""
    items = iter(items)
    while group := list(islice(items, size)):
        yield group


def _flat(ids) -> np.ndarray:
    """``ids`` as a 1-D array without copying a (memory-mapped) 1-D array."""
    ids = np.asarray(ids)
    return ids if ids.ndim == 1 else ids.reshape(-1)


def _pick(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    lp = log_softmax(logits)
    return np.take_along_axis(lp, targets[..., None].astype(np.int64), axis=-1)[..., 0]


def _segment_chunks(stepper, ids, starts, ends, chunk, fresh: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """``(c, scores (B, w))``: row b scores targets ``starts[b] + c ..`` (input: the token before each)
    for ``w <= chunk`` positions, one state per row carried across chunks; a row past its end
    ``ends[b]`` is right-padded with BOS (never read: causal) and its scores there are meaningless.
    ``fresh``: each row is an example, whose first input is BOS, not the token before it."""
    starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    length = int((ends - starts).max())
    state = stepper.initial_state(len(starts))
    for c in range(0, length, chunk):
        pos = starts[:, None] + c + np.arange(min(chunk, length - c))
        valid = pos < ends[:, None]
        pos = np.where(valid, pos, 0)
        inputs = np.where(valid, stream_at(ids, pos), BOS_ID).astype(np.int32)
        if fresh and c == 0:
            inputs[:, 0] = BOS_ID
        targets = np.where(valid, ids[pos], 0)
        logits, state = stepper(inputs, state)
        yield c, _pick(logits, targets)


def _stream_segments(stepper, ids, chunk, batch_size, warmup) -> np.ndarray:
    """B contiguous segments scored in parallel (see :func:`stream_logprobs`), placed into one array."""
    n = len(ids)
    batch_size = min(batch_size, n)
    bounds = np.linspace(0, n, batch_size + 1).round().astype(int)
    starts = [0] + [max(0, int(a) - warmup) for a in bounds[1:-1]]   # where each row's input begins
    out = np.empty((n,), np.float64)
    for c, scores in _segment_chunks(stepper, ids, starts, bounds[1:], chunk):
        for b, (s, a, e) in enumerate(zip(starts, bounds[:-1], bounds[1:])):
            lo, hi = max(int(a), s + c), min(int(e), s + c + scores.shape[1])
            if lo < hi:
                out[lo:hi] = scores[b, lo - s - c:hi - s - c]
    return out


def _window_pieces(stepper, ids, chunk, batch_size) -> Iterator[np.ndarray]:
    """A bounded stepper's strided sliding windows (see :func:`stream_logprobs`), in order."""
    n, window = len(ids), int(stepper.max_context)
    first = min(n, window)
    logits, _ = stepper(window_rows(ids, [0], first), stepper.initial_state(1))
    yield _pick(logits[0], ids[:first])
    stride = max(1, min(chunk, window // 2))
    blocks = ((a, min(a + stride, n)) for a in range(window, n, stride))
    for group in batched(blocks, batch_size):
        batch = window_rows(ids, [e - window for _, e in group], window)
        logits, _ = stepper(batch, stepper.initial_state(len(group)))
        for row, (a, e) in enumerate(group):
            yield _pick(logits[row, window - (e - a):], ids[a:e])
