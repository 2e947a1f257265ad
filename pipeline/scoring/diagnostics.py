"""How a model uses its context, measured on one fixed sample of target positions (numpy only).

Every model is a *scorer*: ``score(ctx, lengths, targets) -> log p(target | context)`` for rows of
right-padded contexts (row r's context is ``ctx[r, :lengths[r]]``, its last entry the token just
before the target). The n-gram and every network answer it, so the context-benefit curve and order
sensitivity are one piece of code for all models, and a causal network reads its logit at
``lengths[r] - 1``, exactly as if it had seen only that context (right padding never changes a
causal model's earlier outputs).

On an image corpus (:class:`ImageContexts`) a context is the target's image from its ``<bos>``, so
that every model, the 2-D PixelCNN included, knows where the target lies; "only the last n pixels"
blanks the older pixels (the background level) instead of cutting them off, and the curves add
n = W - 1, W, W + 1 (W the row width): the step at W is what the pixel above is worth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

THRESHOLD = 0.01   # "within 1% of the full-context loss": effective context and order sensitivity
BOOTSTRAP_REPS, BOOTSTRAP_LEVEL = 1000, 0.9   # resamples of the targets, and the interval reported
Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def sample_targets(stream_len: int, context: int, count: int, seed: int, mask: np.ndarray | None = None,
                   starts: np.ndarray | None = None) -> np.ndarray:
    """Sorted stream indices of ``count`` targets that each have ``context`` tokens before them;
    with a loss ``mask`` (one value per id: stream index p is id p - 1) only scored targets; with
    example ``starts`` only targets whose ``context`` lies inside their own example (its ``<bos>``
    included), and not an example's last token (its line end, scored in pairs mode): the stream
    view (``BosStream``) reads the next example's ``<bos>`` at that index."""
    first = max(1, min(int(context), stream_len - 1))
    if mask is None:
        pool = np.arange(first, stream_len)
    else:
        pool = np.flatnonzero(np.asarray(mask[first - 1:stream_len - 1])) + first
    if starts is not None:
        starts = np.asarray(starts, np.int64)
        own = starts[np.searchsorted(starts, pool - 1, side="right") - 1]   # the target's example start
        pool = pool[(pool - int(context) >= own) & ~np.isin(pool, starts)]
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, size=min(count, len(pool)), replace=False))


def doubling(cap: int, start: int = 1) -> list[int]:
    """start, 2·start, 4·start, … below ``cap``, then ``cap`` itself."""
    out, n = [], max(1, start)
    while n < cap:
        out.append(n)
        n *= 2
    return out + [int(cap)]


def windows(stream: np.ndarray, targets: np.ndarray, width: int) -> np.ndarray:
    """(B, width): the ``width`` tokens before each target (stream indices), oldest first."""
    return np.stack([stream[t - width:t] for t in targets]).astype(np.int32)


@dataclass(frozen=True)
class ImageContexts:
    """Where each target's image starts (``origins``: the stream index of its ``<bos>``), how many
    stream positions precede its first pixel (``prefix``), the id that blanks a pixel, the row width."""
    origins: np.ndarray
    prefix: int
    blank: int
    width: int
    pixels: int

    @property
    def max_pixels(self) -> int:
        """Pixels before the last one: the longest context a pixel of the image has."""
        return self.pixels - 1

    def full(self, stream, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(contexts right-padded (B, longest), lengths (B,)): each target's image up to it."""
        lengths = np.asarray(targets, np.int64) - self.origins
        ctx = np.zeros((len(targets), int(lengths.max())), np.int32)
        for r, (o, t) in enumerate(zip(self.origins.tolist(), np.asarray(targets).tolist())):
            ctx[r, :t - o] = stream[o:t]
        return ctx, lengths

    def blanked(self, ctx: np.ndarray, lengths: np.ndarray, keep: int) -> np.ndarray:
        """``ctx`` with every row's pixels older than its last ``keep`` set to the blank level."""
        out = ctx.copy()
        for row, n in zip(out, lengths.tolist()):
            row[self.prefix:max(self.prefix, n - keep)] = self.blank
        return out

    def shuffled(self, ctx: np.ndarray, lengths: np.ndarray, keep: int, seed: int) -> np.ndarray:
        """``ctx`` with every row's pixels older than its last ``keep`` permuted (fixed seed)."""
        out, rng = ctx.copy(), np.random.default_rng(seed)
        for row, n in zip(out, lengths.tolist()):
            cut = max(self.prefix, n - keep)
            row[self.prefix:cut] = rng.permutation(row[self.prefix:cut])
        return out


def context_losses(score: Scorer, stream: np.ndarray, targets: np.ndarray, lengths: list[int],
                   image: ImageContexts | None = None) -> np.ndarray:
    """(len(lengths), targets) loss in nats of every target when the model sees only its last n
    tokens (an image: its last n pixels, the older ones blanked)."""
    y = stream[targets].astype(np.int32)
    if image is not None:
        full, lens = image.full(stream, targets)
        ctx = np.concatenate([image.blanked(full, lens, n) for n in lengths])
        lens = np.tile(lens, len(lengths))
    else:
        cap = max(lengths)
        full = windows(stream, targets, cap)
        ctx = np.zeros((len(lengths) * len(targets), cap), np.int32)
        lens = np.repeat(np.asarray(lengths, np.int64), len(targets))
        for i, n in enumerate(lengths):
            ctx[i * len(targets):(i + 1) * len(targets), :n] = full[:, cap - n:]
    return -np.asarray(score(ctx, lens, np.tile(y, len(lengths))), np.float64).reshape(len(lengths), len(targets))


def context_curve(score: Scorer, stream: np.ndarray, targets: np.ndarray, lengths: list[int]) -> list[float]:
    """Mean loss (nats) on the targets when the model sees only the last n tokens, per n."""
    return [float(x) for x in context_losses(score, stream, targets, lengths).mean(axis=1)]


def shuffle_beyond(ctx: np.ndarray, keep: int, seed: int) -> np.ndarray:
    """``ctx`` with every row's tokens older than its last ``keep`` permuted (fixed seed)."""
    out = ctx.copy()
    rng = np.random.default_rng(seed)
    cut = ctx.shape[1] - keep
    for row in out:
        row[:cut] = rng.permutation(row[:cut])
    return out


def order_losses(score: Scorer, stream: np.ndarray, targets: np.ndarray, width: int, keeps: list[int],
                 seed: int, image: ImageContexts | None = None) -> np.ndarray:
    """(1 + len(keeps), targets) losses on windows of ``width`` tokens (an image: the whole image up to
    the target): intact, then with the tokens older than the last b shuffled, per b."""
    y = stream[targets].astype(np.int32)
    if image is not None:
        full, lens = image.full(stream, targets)
        blocks = [full] + [image.shuffled(full, lens, b, seed + b) for b in keeps]
        lens = np.tile(lens, len(blocks))
    else:
        full = windows(stream, targets, width)
        blocks = [full] + [shuffle_beyond(full, b, seed + b) for b in keeps]
        lens = np.full(len(blocks) * len(y), width)
    lp = score(np.concatenate(blocks), lens, np.tile(y, len(blocks)))
    return -np.asarray(lp, np.float64).reshape(len(blocks), len(y))


def order_curve(score: Scorer, stream: np.ndarray, targets: np.ndarray, width: int, keeps: list[int],
                seed: int) -> tuple[float, list[float]]:
    """(intact loss, loss increase per kept distance b) on windows of ``width`` tokens."""
    losses = order_losses(score, stream, targets, width, keeps, seed).mean(axis=1)
    return float(losses[0]), [float(x - losses[0]) for x in losses[1:]]


def bootstrap_interval(statistic: Callable[[np.ndarray], int], per_target: np.ndarray, seed: int,
                       reps: int = BOOTSTRAP_REPS, level: float = BOOTSTRAP_LEVEL) -> tuple[int, int]:
    """How sure a summary of the curves is: ``statistic`` (of the per-row mean losses) recomputed on
    ``reps`` resamples of the targets with replacement; the central ``level`` interval."""
    rng = np.random.default_rng([seed, 7])
    n = per_target.shape[1]
    values = [statistic(per_target[:, rng.integers(0, n, n)].mean(axis=1)) for _ in range(reps)]
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return int(lo), int(hi)


def effective_context(lengths: list[int], losses: list[float], threshold: float = THRESHOLD) -> int:
    """The smallest n whose loss is within ``threshold`` (relative) of the full-context loss (the last)."""
    full = losses[-1]
    return next(n for n, loss in zip(lengths, losses) if loss - full <= threshold * abs(full))


def order_distance(keeps: list[int], increases: list[float], base: float, width: int,
                   threshold: float = THRESHOLD) -> int:
    """The smallest b beyond which shuffling older tokens raises the loss by less than ``threshold``
    (relative to the intact loss) at every larger b too; ``width`` (the window) when none does."""
    ok = [inc <= threshold * abs(base) for inc in increases]
    for i, b in enumerate(keeps):
        if all(ok[i:]):
            return int(b)
    return int(width)


def fit_decay(norms: np.ndarray) -> tuple[float | None, float | None]:
    """Least-squares rate λ of ``norm_k ∝ exp(-λ k)`` over the distances with a non-zero norm, and
    the half-life ln 2 / λ in tokens (None when the norm does not decay)."""
    norms = np.asarray(norms, np.float64)
    k = np.flatnonzero(np.isfinite(norms) & (norms > 0))
    if len(k) < 2:
        return None, None
    slope = np.polyfit(k.astype(np.float64), np.log(norms[k]), 1)[0]
    rate = float(-slope)
    return rate, (math.log(2) / rate if rate > 0 else None)


def measure_context(score: Scorer, stream: np.ndarray, targets: np.ndarray, cap: int, seed: int,
                    order_width: int | None = None, image: ImageContexts | None = None) -> dict:
    """Measures 1 and 2 of one model whose longest usable context is ``cap``: both curves and their
    summaries. Order sensitivity shuffles within windows of ``order_width`` tokens (default ``cap``;
    wider for the n-gram, whose own window of order - 1 leaves nothing to shuffle beyond it). On an
    image corpus (``image``) the contexts are whole images up to the target, and the row width's
    neighbours join the lengths and the kept distances."""
    width = int(order_width or cap)
    rows = {image.width - 1, image.width, image.width + 1} if image is not None else set()
    lengths = sorted(set(doubling(cap)) | {n for n in rows if 0 < n < cap})
    per_length = context_losses(score, stream, targets, lengths, image)
    losses = [float(x) for x in per_length.mean(axis=1)]
    keeps = sorted({0, *(b for b in doubling(width) if b < width), *([cap] if cap < width else []),
                    *(b for b in rows if 0 < b < width)})
    per_keep = order_losses(score, stream, targets, width, keeps, seed, image)
    means = per_keep.mean(axis=1)
    base, increases = float(means[0]), [float(x - means[0]) for x in means[1:]]

    def order_of(m):
        return order_distance(keeps, list(m[1:] - m[0]), float(m[0]), width)
    eff_lo, eff_hi = bootstrap_interval(lambda m: effective_context(lengths, list(m)), per_length, seed)
    ord_lo, ord_hi = bootstrap_interval(order_of, per_keep, seed)
    return {"lengths": lengths, "losses": losses, "keeps": keeps, "increases": increases,
            "summary": {"full_context_tokens": int(cap), "full_context_loss": losses[-1],
                        "effective_context_tokens": effective_context(lengths, losses),
                        "effective_context_tokens_low": eff_lo, "effective_context_tokens_high": eff_hi,
                        "order_sensitivity_tokens": order_distance(keeps, increases, base, width),
                        "order_sensitivity_tokens_low": ord_lo, "order_sensitivity_tokens_high": ord_hi,
                        "threshold": THRESHOLD, "interval": BOOTSTRAP_LEVEL, "targets": int(len(targets))}}
