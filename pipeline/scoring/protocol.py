"""One scoring protocol for every model: each split is one stream, every token is scored.

The first token of a split is conditioned on ``<bos>``; every later token on the split's own
preceding text. Recurrent networks carry their state across the whole split; windowed networks
(conv, Transformer) slide a window of their training context with a stride that leaves every scored
token at least ``window - stride`` tokens of context; the n-gram model uses its full order. Bits per
character divide the total NLL in bits by the characters of the split's text, so char, word and
wordpiece models compare. With a loss mask (``data.score_after``) only the masked tokens are scored,
every one still conditioned on all the text before it, and the characters are those they spell.

In examples mode (``data.examples: lines``, example ``starts``) each example is scored on its own,
from its own ``<bos>``: a recurrent state starts afresh at every example, windows never reach
into the previous one, the n-gram's context resets after every line end. The protocol record
says so (``examples``).

A split may be larger than memory (memory-mapped ids): :func:`network_pieces` yields its log-probs
piece by piece and :func:`split_scores` sums them as they come, so scoring holds O(piece) values;
the array forms (:func:`network_logprobs`, :func:`windowed_logprobs`) concatenate the same pieces.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np

from pipeline.data.examples import example_rows, example_spans
from pipeline.data.windows import window_rows
from pipeline.models.family import STREAM
from pipeline.models.catalog import family_of
from pipeline.scoring.stream import batched, concat_pieces, example_stream_pieces, stream_pieces


def split_metrics(logprobs: np.ndarray, chars: int) -> dict:
    """Tokens, mean NLL (nats), perplexity and bits per character of one split's log-probs."""
    return split_scores([logprobs], chars)


def split_scores(pieces: Iterable[np.ndarray], chars: int, mask: np.ndarray | None = None) -> dict:
    """:func:`split_metrics` of the concatenated ``pieces``, summed piece by piece (float64) as they
    are produced, so a split's log-probs never need to be held at once. With a loss ``mask`` (one
    value per token of the split) only the masked tokens count, and ``chars`` are the characters
    they spell (``PreparedData.chars``)."""
    total, n, at = 0.0, 0, 0
    for lp in pieces:
        if mask is not None:
            keep = np.asarray(mask[at:at + len(lp)]) != 0
            at += len(lp)
            lp = lp[keep]
        total += float(np.sum(lp, dtype=np.float64))
        n += len(lp)
    if mask is not None and at != len(mask):
        raise ValueError(f"the log-probs cover {at} tokens, the loss mask {len(mask)}")
    nll = -total
    mean = nll / max(n, 1)
    return {"tokens": n, "nll": mean, "ppl": math.exp(mean), "bpc": nll / math.log(2) / max(chars, 1)}


def flat_metrics(per_split: dict[str, dict]) -> dict:
    """``{"valid": {...}}`` to the flat DVC keys ``valid_ppl``, ``valid_bpc``, ..."""
    return {f"{split}_{k}": v for split, m in per_split.items() for k, v in m.items()}


def window_plan(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, first scored target, end) per window over targets 0..n-1 of a stream."""
    return list(iter_window_plan(n, window, stride))


def iter_window_plan(n: int, window: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """:func:`window_plan`, generated lazily (a long split's plan is not held)."""
    if n <= window:
        yield 0, 0, n
        return
    covered = 0
    for s in range(0, n - window + 1, stride):
        yield s, max(covered, s), s + window
        covered = s + window
    if covered < n:
        yield n - window, max(covered, n - window), n


def target_scorer(model):
    """``(inputs, targets) -> log p(target | window)``, (B, T) int arrays to a (B, T) numpy array:
    ``model``'s forward pass as one traced graph function."""
    import tensorflow as tf

    @tf.function
    def target_logprobs(x, y):
        logits = tf.cast(model(x, training=False), tf.float32)
        return -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)

    return lambda x, y: target_logprobs(tf.constant(x), tf.constant(y)).numpy()


def windowed_logprobs(model, ids: np.ndarray, window: int, stride: int, batch_size: int) -> np.ndarray:
    """log p(x_t | window context) for every t, windows of ``window`` inputs every ``stride`` tokens."""
    return concat_pieces(windowed_pieces(model, ids, window, stride, batch_size))


def windowed_pieces(model, ids: np.ndarray, window: int, stride: int, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive float64 pieces of :func:`windowed_logprobs`, one batch of ``batch_size`` windows
    at a time, each gathered from ``ids`` when its turn comes."""
    n = len(ids)
    if n == 0:
        return
    width = min(window, n)
    target_logprobs = target_scorer(model)
    for chunk in batched(iter_window_plan(n, window, stride), batch_size):
        w = window_rows(ids, [s for s, _, _ in chunk], width + 1)
        lp = target_logprobs(w[:, :-1], w[:, 1:])
        yield np.concatenate([row[first - s:end - s] for row, (s, first, end) in zip(lp, chunk)]).astype(np.float64)


def example_windowed_pieces(model, ids: np.ndarray, starts: np.ndarray, window: int, stride: int,
                            batch_size: int) -> Iterator[np.ndarray]:
    """:func:`windowed_pieces` within every example: each example's own window plan, its windows
    read from its ``<bos>`` and padded to ``window`` inputs, batched across examples."""
    target_logprobs = target_scorer(model)
    plan = ((a + s, a, e, first - s, end - s) for a, e in example_spans(starts, len(ids))
            for s, first, end in iter_window_plan(e - a, window, stride))
    for chunk in batched(plan, batch_size):
        rows, _ = example_rows(ids, [c[:3] for c in chunk], window + 1)
        lp = target_logprobs(rows[:, :-1], rows[:, 1:])
        yield np.concatenate([row[lo:hi] for row, (*_, lo, hi) in zip(lp, chunk)]).astype(np.float64)


def network_logprobs(network, ids: np.ndarray, stride_fraction: float, batch_size: int,
                     stepper=None, starts: np.ndarray | None = None,
                     examples: str = "lines") -> tuple[np.ndarray, dict]:
    """Score a split of ``network`` (a loaded ``pipeline.models.network.Network``) under its family's
    protocol; returns the log-probs and the protocol record (see :func:`network_pieces`)."""
    pieces, protocol = network_pieces(network, ids, stride_fraction, batch_size, stepper, starts, examples)
    return concat_pieces(pieces), protocol


def network_pieces(network, ids: np.ndarray, stride_fraction: float, batch_size: int,
                   stepper=None, starts: np.ndarray | None = None,
                   examples: str = "lines") -> tuple[Iterator[np.ndarray], dict]:
    """The log-probs of a split of ``network`` under its family's protocol, as consecutive pieces
    (memory O(piece); feed them to :func:`split_scores`), and the protocol record.

    ``stream``: the stepper's state is carried across the whole split (``stepper``, or a new one).
    ``window``: windows of the training context (``network.seq_len``), ``stride_fraction`` apart.
    With example ``starts``: the same within each example, from the example's own ``<bos>``
    (``examples``, the data's mode, is recorded).
    """
    examples = {} if starts is None else {"examples": examples}
    if family_of(network.cfg).protocol == STREAM:
        stepper = stepper or network.stepper()
        if starts is not None:
            return example_stream_pieces(stepper, ids, starts, batch_size=batch_size), {
                "protocol": "stream", "state_carried": "within each example", **examples}
        return stream_pieces(stepper, ids), {"protocol": "stream", "state_carried": True}
    window = network.seq_len
    stride = max(1, int(round(window * stride_fraction)))
    pieces = (windowed_pieces(network.model, ids, window, stride, batch_size) if starts is None
              else example_windowed_pieces(network.model, ids, starts, window, stride, batch_size))
    return pieces, {"protocol": "sliding-window", "window": window, "stride": stride,
                    "min_context": window - stride if len(ids) > window else 0, **examples}
