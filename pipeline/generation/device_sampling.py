"""The samplers of ``sampling.py`` (greedy, temperature, top-k, top-p) as keras.ops, for the compiled loop.

Runs inside the decoding loop on the device, batched, with per-row settings, so that one compiled
program serves every request. The randomness is a stateless counter-based hash: the uniform for
(row seed, row counter, token id) is a fixed function of those three numbers, so a row's sample
depends on its seed, prompt and settings only, never on the batch it shares or on the backend.
Sampling is Gumbel-max over the filtered, temperature-scaled scores: the same distribution
as ``sampling.filter_logprobs`` followed by a categorical draw.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.vocab_layout import BOS_ID

_M1, _M2 = 0x7FEB352D, 0x846CA68B   # "lowbias32" (C. Wellons): a full-avalanche 32-bit mixer
_GOLDEN = 0x9E3779B9


def _mix(x):
    from keras import ops
    x = ops.bitwise_xor(x, ops.right_shift(x, 16))
    x = ops.multiply(x, ops.convert_to_tensor(_M1, "uint32"))
    x = ops.bitwise_xor(x, ops.right_shift(x, 15))
    x = ops.multiply(x, ops.convert_to_tensor(_M2, "uint32"))
    return ops.bitwise_xor(x, ops.right_shift(x, 16))


def hash_uniform(seeds, counters, vocab_size: int):
    """(B, V) float32 uniforms in (0, 1): a hash of (seeds[b], counters[b], v); seeds, counters (B,) uint32."""
    from keras import ops
    token = _mix(ops.cast(ops.arange(vocab_size, dtype="int32"), "uint32") + ops.convert_to_tensor(_GOLDEN, "uint32"))
    row = _mix(ops.bitwise_xor(_mix(seeds), ops.multiply(counters, ops.convert_to_tensor(_GOLDEN, "uint32"))))
    bits = ops.right_shift(_mix(ops.bitwise_xor(token[None, :], row[:, None])), 8)       # 24 bits
    return (ops.cast(bits, "float32") + 0.5) * (1.0 / (1 << 24))


def numpy_hash_uniform(seeds, counters, vocab_size: int) -> np.ndarray:
    """The same uniforms as :func:`hash_uniform`, in numpy (tests and host-side checks)."""
    mask = np.uint64(0xFFFFFFFF)

    def mix(x):
        x = x.astype(np.uint64)
        x ^= x >> np.uint64(16)
        x = (x * np.uint64(_M1)) & mask
        x ^= x >> np.uint64(15)
        x = (x * np.uint64(_M2)) & mask
        return x ^ (x >> np.uint64(16))

    token = mix((np.arange(vocab_size, dtype=np.uint64) + np.uint64(_GOLDEN)) & mask)
    row = mix(mix(np.asarray(seeds, np.uint64)) ^ ((np.asarray(counters, np.uint64) * np.uint64(_GOLDEN)) & mask))
    bits = mix(token[None, :] ^ row[:, None]) >> np.uint64(8)
    return ((bits.astype(np.float64) + 0.5) / (1 << 24)).astype(np.float32)


_BISECTIONS = 32   # halvings: a logit range of 100 down to 2.3e-8, below float32's resolution near 1


def _largest_threshold(values, enough, low, high):
    """Per row, the largest tau in [low, high) with ``enough(values >= tau)`` (monotone: true at
    ``low``, false at ``high``), found by bisection: elementwise passes only, no sort (XLA's CPU
    sort costs ~10x a decoding step's sampling). Returns the smallest value >= that tau, an
    element of the row, so the kept set is exactly ``values >= threshold``."""
    from keras import ops

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) * 0.5
        ok = enough(values >= mid[:, None])
        return ops.where(ok, mid, lo), ops.where(ok, hi, mid)

    lo, _ = ops.fori_loop(0, _BISECTIONS, halve, (low, high))
    return ops.min(ops.where(values >= lo[:, None], values, ops.full_like(values, np.inf)), axis=-1)


@dataclass(frozen=True)
class SamplerStages:
    """Which sampler stages a batch needs, decided on the host from its rows' settings: a compiled
    program is specialised to them, so it carries no conditional and no work for a stage that no
    row asks for (a greedy batch draws no random numbers at all)."""
    warm: bool = True      # some row samples (temperature > 0); else every row is greedy
    top_k: bool = True     # some row has 0 < top_k < V
    top_p: bool = True     # some row has top_p < 1

    @classmethod
    def of(cls, temperature, top_k, top_p, vocab_size: int) -> "SamplerStages":
        temperature, top_k, top_p = (np.asarray(v) for v in (temperature, top_k, top_p))
        warm = temperature > 0
        return cls(warm=bool(warm.any()), top_k=bool((warm & (top_k > 0) & (top_k < vocab_size)).any()),
                   top_p=bool((warm & (top_p < 1.0)).any()))


EVERY_STAGE = SamplerStages()

#: the exact pairwise filters compare every pair of tokens of a row: used while B * V * V stays
#: under this (a character vocabulary at any served batch), bisection above it (word vocabularies)
PAIRWISE_MAX_ELEMENTS = 1 << 20


def _kept_top_k(x, k, pairwise: bool):
    """(B, V) bool: x_v is kept when fewer than k scores of its row are strictly greater (ties
    at the cut kept, as ``x >= k-th largest``)."""
    from keras import ops
    if pairwise:
        greater = ops.sum(ops.cast(x[:, None, :] > x[:, :, None], "int32"), axis=-1)
        return greater < k[:, None]
    finite = ops.where(ops.isfinite(x), x, ops.full_like(x, np.inf))
    count = lambda kept: ops.sum(ops.cast(kept, "int32"), axis=-1) >= k              # noqa: E731
    kth = _largest_threshold(x, count, ops.min(finite, axis=-1), ops.max(x, axis=-1) + 1.0)
    return x >= kth[:, None]


def _kept_nucleus(p, top_p, pairwise: bool):
    """(B, V) bool: p_v is kept when the mass of the strictly more probable tokens is below top_p
    (the smallest sorted prefix reaching top_p, ties at the cut kept); every token when top_p is 1."""
    from keras import ops
    if pairwise:
        above = ops.sum(ops.where(p[:, None, :] > p[:, :, None], p[:, None, :], ops.zeros_like(p)[:, None, :]),
                        axis=-1)
        kept = above < top_p[:, None]
    else:
        mass = lambda kept: ops.sum(ops.where(kept, p, ops.zeros_like(p)), axis=-1) >= top_p   # noqa: E731
        cut = _largest_threshold(p, mass, ops.zeros_like(top_p), ops.max(p, axis=-1) * 2.0)
        kept = p >= cut[:, None]
    return kept | (top_p >= 1.0)[:, None]


def filter_scores(scores, temperature, top_k, top_p, stages: SamplerStages = EVERY_STAGE, pairwise=None):
    """Temperature-scaled (B, V) scores with everything outside top-k / the top-p nucleus at -inf.

    ``temperature`` (B,) > 0 (greedy rows are handled by the caller), ``top_k`` (B,) int32 (0: off),
    ``top_p`` (B,) float32 in (0, 1] (1: off). The same sets as ``sampling.filter_logprobs``
    (top-k: every score >= the k-th largest; top-p: the smallest prefix of the sorted
    distribution whose mass reaches top_p), ties at a cut kept. Only the ``stages`` named are
    applied; ``pairwise`` (None: by size, :data:`PAIRWISE_MAX_ELEMENTS`) picks the exact pairwise
    filters over bisection.
    """
    from keras import ops
    batch, vocab = scores.shape
    if pairwise is None:
        pairwise = batch * vocab * vocab <= PAIRWISE_MAX_ELEMENTS
    x = scores / temperature[:, None]
    ninf = ops.full_like(x, -np.inf)
    if stages.top_k:
        k = ops.where((top_k > 0) & (top_k < vocab), top_k, vocab)
        x = ops.where(_kept_top_k(x, k, pairwise), x, ninf)
    if stages.top_p:
        x = ops.where(_kept_nucleus(ops.softmax(x, axis=-1), top_p, pairwise), x, ninf)
    return x


def sample_tokens(logits, seeds, counters, temperature, top_k, top_p, stages: SamplerStages = EVERY_STAGE,
                  pairwise=None):
    """One token per row of (B, V) float32 logits: int32 (B,). BOS is never drawn.

    temperature 0 is greedy (arg max); otherwise Gumbel-max over :func:`filter_scores`, with the
    uniforms of :func:`hash_uniform` for (seed, counter) of each row.
    """
    from keras import ops
    vocab = logits.shape[-1]
    logits = ops.cast(logits, "float32")
    logits = ops.where(ops.arange(vocab)[None, :] == BOS_ID, ops.full_like(logits, -np.inf), logits)
    greedy = ops.cast(ops.argmax(logits, axis=-1), "int32")
    if not stages.warm:
        return greedy
    warm = temperature > 0
    scores = filter_scores(logits, ops.where(warm, temperature, ops.ones_like(temperature)), top_k, top_p,
                           stages, pairwise)
    gumbel = -ops.log(-ops.log(hash_uniform(seeds, counters, vocab)))
    drawn = ops.cast(ops.argmax(scores + gumbel, axis=-1), "int32")
    return ops.where(warm, drawn, greedy)
