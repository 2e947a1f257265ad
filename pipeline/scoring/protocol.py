"""One scoring protocol for every model: each split is one stream, every token is scored.

The first token of a split is conditioned on ``<bos>``; every later token on the split's own
preceding text. Recurrent networks carry their state across the whole split; windowed networks
(conv, Transformer) slide a window of their training context with a stride that leaves every scored
token at least ``window - stride`` tokens of context; the n-gram model uses its full order. Bits per
character divide the total NLL in bits by the characters of the split's text, so char, word and
wordpiece models compare.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.data.windows import with_bos
from pipeline.models.family import STREAM
from pipeline.models.registry import family_of


def split_metrics(logprobs: np.ndarray, chars: int) -> dict:
    nll = -float(np.sum(logprobs, dtype=np.float64))
    n = int(len(logprobs))
    mean = nll / max(n, 1)
    return {"tokens": n, "nll": mean, "ppl": math.exp(mean), "bpc": nll / math.log(2) / max(chars, 1)}


def flat_metrics(per_split: dict[str, dict]) -> dict:
    """``{"valid": {...}}`` to the flat DVC keys ``valid_ppl``, ``valid_bpc``, ..."""
    return {f"{split}_{k}": v for split, m in per_split.items() for k, v in m.items()}


def window_plan(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, first scored target, end) per window over targets 0..n-1 of a stream."""
    if n <= window:
        return [(0, 0, n)]
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] + window < n:
        starts.append(n - window)
    plan, covered = [], 0
    for s in starts:
        plan.append((s, max(covered, s), s + window))
        covered = s + window
    return plan


def windowed_logprobs(model, ids: np.ndarray, window: int, stride: int, batch_size: int) -> np.ndarray:
    """log p(x_t | window context) for every t, windows of ``window`` inputs every ``stride`` tokens."""
    import tensorflow as tf
    stream = with_bos(ids)
    n = len(ids)
    plan = window_plan(n, window, stride)
    width = min(window, n)

    @tf.function
    def target_logprobs(x, y):
        logits = tf.cast(model(x, training=False), tf.float32)
        return -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)

    out = np.empty(n, dtype=np.float64)
    for b in range(0, len(plan), batch_size):
        chunk = plan[b:b + batch_size]
        x = np.stack([stream[s:s + width] for s, _, _ in chunk])
        y = np.stack([stream[s + 1:s + width + 1] for s, _, _ in chunk])
        lp = target_logprobs(tf.constant(x), tf.constant(y)).numpy()
        for row, (s, first, end) in zip(lp, chunk):
            out[first:end] = row[first - s:end - s]
    return out


def network_logprobs(network, ids: np.ndarray, stride_fraction: float, batch_size: int,
                     stepper=None) -> tuple[np.ndarray, dict]:
    """Score a split of ``network`` (a loaded ``pipeline.models.network.Network``) under its family's
    protocol; returns the log-probs and the protocol record.

    ``stream``: the stepper's state is carried across the whole split (``stepper``, or a new one).
    ``window``: windows of the training context (``network.seq_len``), ``stride_fraction`` apart.
    """
    if family_of(network.cfg).protocol == STREAM:
        from pipeline.scoring.stream import stream_logprobs
        return stream_logprobs(stepper or network.stepper(), ids), {"protocol": "stream", "state_carried": True}
    window = network.seq_len
    stride = max(1, int(round(window * stride_fraction)))
    lp = windowed_logprobs(network.model, ids, window, stride, batch_size)
    return lp, {"protocol": "sliding-window", "window": window, "stride": stride,
                "min_context": window - stride if len(ids) > window else 0}
