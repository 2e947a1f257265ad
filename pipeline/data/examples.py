"""Examples mode (``data.examples: lines``): each line is one example, and no model sees across one.

An example is the tokens of one line with its line end. Its *stream* is ``[BOS] + example``: the
first token is conditioned on ``<bos>`` alone, as a split's first token is in stream mode, so
recurrent state, attention and convolution taps start afresh at every example. ``prepare`` writes
each split's example starts (``<split>_starts.npy``: int64 token indices, 0 first, each one after a
line end); an example runs to the next start (the last one to the split's end).

In the split's stream coordinates (position p > 0 is ``ids[p - 1]``, as in
:mod:`pipeline.data.windows`) example ``[a, e)`` of the ids occupies positions ``a .. e``, and
position ``a`` reads ``<bos>`` instead of the previous example's last token. A *row* is
``(first, a, e)``: ``width`` positions from ``first`` (``a <= first``), read as that example's
stream and padded with ``<bos>`` past ``e`` (padding is never a target: its weight is 0).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipeline.data.vocab_layout import BOS_ID
from pipeline.errors import SeqlabError

LINES = "lines"
PAIRS = "pairs"     # lines of source<TAB>target: examples too (pipeline.data.pairs)


def line_starts(ids: np.ndarray, line_end: int, offset: int) -> np.ndarray:
    """Token indices (plus ``offset``) just after every ``line_end`` in ``ids`` (int64): the starts
    of the examples that follow them."""
    return np.flatnonzero(np.asarray(ids) == line_end).astype(np.int64) + 1 + offset


class StartsWriter:
    """Collects a split's example starts piece by piece for an ``NpyAppender``: 0 first, then the
    index after each line end except one that ends the split (the last start is held back until
    a later token shows that an example follows it)."""

    def __init__(self, out):
        self.out, self.pending, self.count = out, np.zeros(1, np.int64), 0

    def add(self, ids: np.ndarray, line_end: int, offset: int) -> None:
        """The starts that ``ids``, the piece after ``offset`` tokens, shows."""
        if len(ids):
            found = line_starts(ids, line_end, offset)
            self._write(np.concatenate([self.pending, found[:-1]]) if len(found) else self.pending)
            self.pending = found[-1:]

    def close(self, total: int) -> None:
        """After the split's ``total`` tokens: a held start that an example follows is written."""
        if len(self.pending) and self.pending[0] < total:
            self._write(self.pending)
        self.pending = np.zeros(0, np.int64)

    def _write(self, starts: np.ndarray) -> None:
        self.out.append(starts)
        self.count += len(starts)


def example_ends(starts: np.ndarray, n: int) -> np.ndarray:
    """The end (exclusive token index) of every example: the next start, ``n`` for the last."""
    starts = np.asarray(starts, np.int64)
    return np.append(starts[1:], np.int64(n))


def example_rows(ids: np.ndarray, rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32 (R, width), valid bool (R, width)) of ``rows`` ((R, 3): first, a, e): each
    row's ``width`` stream positions from ``first``, ``<bos>`` at the example's own start and as
    padding past its end; ``valid`` marks the positions inside the example."""
    rows = np.asarray(rows, np.int64).reshape(-1, 3)
    first, a, e = rows[:, :1], rows[:, 1:2], rows[:, 2:3]
    pos = first + np.arange(width)
    valid = pos <= e
    safe = np.where(valid & (pos > a), pos, 1)
    out = np.asarray(ids[safe - 1], dtype=np.int32) if len(ids) else np.zeros(pos.shape, np.int32)
    out[~valid | (pos == a)] = BOS_ID
    return out, valid


def row_weights(valid: np.ndarray, rows: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """float32 (R, width - 1): 1 for every target inside its example, times its loss-mask value."""
    w = valid[:, 1:].astype(np.float32)
    if mask is not None:
        first = np.asarray(rows, np.int64).reshape(-1, 3)[:, :1]
        pos = first + 1 + np.arange(w.shape[1])                 # the targets' stream positions
        w *= np.asarray(mask[np.where(valid[:, 1:], pos - 1, 0)], np.float32)
    return w


def split_at_marker(tokens: np.ndarray, weights: np.ndarray, marker_id: int) -> tuple:
    """Example rows (tokens (R, W + 1) from each example's ``<bos>``, target weights (R, W)) split
    at each row's first ``marker_id`` for an encoder-decoder's training step: ``((source (R, S),
    source lengths (R,), target inputs (R, K)), targets (R, K), weights (R, K))``. The source
    block is ``<bos> source``; the target block starts at the marker, with the row's targets and
    weights from there. S and K are :func:`bucket_width` of the longest source and scored target,
    so each side runs over its own positions (about half of the row each) while only a handful of
    shapes is compiled. Every scored target is kept: a row that scores a source position (before
    its marker) is refused. A row without a marker is all source."""
    tokens, weights = np.asarray(tokens, np.int32), np.asarray(weights, np.float32)
    width = weights.shape[1]
    col = np.arange(width)[None, :]
    found = tokens[:, :width] == marker_id
    sl = np.where(found.any(axis=1), found.argmax(axis=1), width).astype(np.int32)
    scored = weights != 0
    if (scored & (col < sl[:, None])).any():
        raise SeqlabError("an encoder-decoder's training row scores a position of its source (before the "
                          "marker): only the target can be trained (data.examples: pairs)")
    need = np.where(scored, col + 1 - sl[:, None], 0).max(axis=1)
    s, k = (int(bucket_width(np.array([v.max()]), width)[0]) for v in (sl, need))
    source = np.where(np.arange(s)[None, :] < sl[:, None], tokens[:, :s], BOS_ID).astype(np.int32)
    at = sl[:, None] + np.arange(k)[None, :]                        # the target block's row positions
    padded = np.pad(tokens, ((0, 0), (0, k)), constant_values=BOS_ID)
    target, y = np.take_along_axis(padded, at, axis=1), np.take_along_axis(padded, at + 1, axis=1)
    w = np.take_along_axis(np.pad(weights, ((0, 0), (0, k))), at, axis=1)
    return (source, sl, target), y, w


class ExampleSampler:
    """Training rows drawn uniformly over every window position of every example: an example of
    ``L`` tokens offers ``max(1, L - seq_len + 1)`` windows of ``seq_len`` targets (a shorter one
    its single padded row), so long examples are seen in proportion to their length, as offsets
    are in stream mode. Holds one int64 per example."""

    def __init__(self, starts: np.ndarray, n: int, seq_len: int):
        self.starts, self.seq_len = np.asarray(starts, np.int64), int(seq_len)
        if not len(self.starts):
            raise SeqlabError("examples mode: the train split holds no example")
        self.ends = example_ends(self.starts, n)
        lengths = self.ends - self.starts
        self.windows = np.maximum(1, lengths - seq_len + 1)
        self.cum = np.cumsum(self.windows)
        # the expected fraction of a row's seq_len targets that lie inside its example
        self.density = float(np.sum(self.windows * np.minimum(lengths, seq_len)) / (self.cum[-1] * seq_len))

    def rows(self, count: int, seed: int, epoch: int) -> np.ndarray:
        """``count`` rows (first, a, e), from a generator seeded by (seed, epoch)."""
        return self._draw(count, np.random.default_rng([seed, epoch]))

    def _draw(self, count: int, rng) -> np.ndarray:
        u = rng.integers(0, int(self.cum[-1]), size=count, dtype=np.int64)
        i = np.searchsorted(self.cum, u, side="right")
        offset = u - (self.cum[i] - self.windows[i])
        return np.stack([self.starts[i] + offset, self.starts[i], self.ends[i]], axis=-1)

    def batches(self, steps: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
        """``steps`` batches of ``batch_size`` rows (first, a, e, width), int64 (steps, batch, 4):
        the rows that :meth:`rows` would draw, grouped by length. Each batch holds rows of similar
        length and is ``width`` targets wide (:func:`bucket_width` of its longest row), so a step
        spends little on padding; the batches come in a random order. Every target a full-width
        row would train is still trained, and padding is never a target, so the loss is the same
        sum: only which rows share a batch changes."""
        rng = np.random.default_rng([seed, epoch])
        rows = self._draw(steps * batch_size, rng)
        need = np.minimum(rows[:, 2] - rows[:, 0], self.seq_len)      # the row's targets inside its example
        order = np.argsort(need, kind="stable")
        rows, need = rows[order].reshape(steps, batch_size, 3), need[order].reshape(steps, batch_size)
        width = bucket_width(need.max(axis=1), self.seq_len)
        out = np.concatenate([rows, np.broadcast_to(width[:, None, None], (steps, batch_size, 1))], axis=-1)
        return out[rng.permutation(steps)]


def bucket_width(need: np.ndarray, seq_len: int) -> np.ndarray:
    """The width (targets) of a batch whose longest row needs ``need`` targets: rounded up to a
    multiple of 8, or of a quarter of its power of two above 32 (40, 48, 56, 64, 80, 96, ...), so
    an epoch compiles the step for a handful of shapes; never above ``seq_len``."""
    need = np.maximum(np.asarray(need, np.int64), 1)
    step = np.maximum(8, 2 ** np.floor(np.log2(np.maximum(need - 1, 1))).astype(np.int64) // 4)
    return np.minimum(-(-need // step) * step, seq_len)


def eval_rows(starts: np.ndarray, n: int, seq_len: int, max_tokens: int) -> np.ndarray:
    """Rows of non-overlapping windows of ``seq_len`` targets over the whole examples within the
    first ``max_tokens`` tokens (at least one example), each example read from its own start."""
    starts = np.asarray(starts[:max_tokens + 1], np.int64)     # no more examples than tokens
    ends = example_ends(starts, n)
    keep = max(1, int(np.searchsorted(ends, max_tokens, side="right")))
    out = [(f, a, e) for a, e in zip(starts[:keep].tolist(), ends[:keep].tolist())
           for f in range(a, e, seq_len)]
    return np.asarray(out, np.int64).reshape(-1, 3)


def example_spans(starts: np.ndarray, n: int) -> Iterator[tuple[int, int]]:
    """(a, e) of every example in order, reading ``starts`` (maybe memory-mapped) in blocks."""
    block = 1 << 20
    for i in range(0, len(starts), block):
        s = np.asarray(starts[i:i + block + 1], np.int64)
        ends = s[1:] if i + block < len(starts) else np.append(s[1:], n)
        yield from zip(s[:block].tolist(), ends.tolist())


def longest_example(starts: np.ndarray, n: int) -> int:
    """Tokens of the longest example (its line end included) of a split of ``n`` tokens."""
    return int(np.diff(np.append(np.asarray(starts, np.int64), n)).max()) if len(starts) else 0
