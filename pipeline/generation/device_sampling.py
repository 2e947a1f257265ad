"""The samplers of ``sampling.py`` (greedy, temperature, top-k, top-p) as keras.ops, for the compiled loop.

Runs inside the decoding loop on the device, batched, with per-row settings, so that one compiled
program serves every request. The randomness is a stateless counter-based hash: the uniform for
(row seed, row counter, token id) is a fixed function of those three numbers, so a row's sample
depends on its seed, prompt and settings only, never on the batch it shares or on the backend.
Sampling is Gumbel-max over the filtered, temperature-scaled scores: the same distribution
as ``sampling.filter_logprobs`` followed by a categorical draw.
"""
from __future__ import annotations

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


def filter_scores(scores, temperature, top_k, top_p):
    """Temperature-scaled (B, V) scores with everything outside top-k / the top-p nucleus at -inf.

    ``temperature`` (B,) > 0 (greedy rows are handled by the caller), ``top_k`` (B,) int32 (0: off),
    ``top_p`` (B,) float32 in (0, 1] (1: off). The same sets as ``sampling.filter_logprobs``
    (top-k: every score >= the k-th largest; top-p: the smallest prefix of the sorted
    distribution whose mass reaches top_p), ties at a cut kept.
    """
    from keras import ops
    vocab = scores.shape[-1]
    x = scores / temperature[:, None]
    ninf = ops.full_like(x, -np.inf)

    def top(x):
        finite = ops.where(ops.isfinite(x), x, ops.full_like(x, np.inf))
        count = lambda kept: ops.sum(ops.cast(kept, "int32"), axis=-1) >= k              # noqa: E731
        kth = _largest_threshold(x, count, ops.min(finite, axis=-1), ops.max(x, axis=-1) + 1.0)
        return ops.where(x < kth[:, None], ninf, x)

    def nucleus(x):
        p = ops.softmax(x, axis=-1)
        mass = lambda kept: ops.sum(ops.where(kept, p, ops.zeros_like(p)), axis=-1) >= top_p   # noqa: E731
        cut = _largest_threshold(p, mass, ops.zeros_like(top_p), ops.max(p, axis=-1) * 2.0)
        cut = ops.where(top_p >= 1.0, ops.zeros_like(cut), cut)
        return ops.where(p < cut[:, None], ninf, x)

    # each filter only where some row asks for it (one compiled program serves every setting)
    k = ops.where((top_k > 0) & (top_k < vocab), top_k, vocab)
    x = ops.cond(ops.any(k < vocab), lambda: top(x), lambda: x)
    return ops.cond(ops.any(top_p < 1.0), lambda: nucleus(x), lambda: x)


def sample_tokens(logits, seeds, counters, temperature, top_k, top_p):
    """One token per row of (B, V) float32 logits: int32 (B,). BOS is never drawn.

    temperature 0 is greedy (arg max); otherwise Gumbel-max over :func:`filter_scores`, with the
    uniforms of :func:`hash_uniform` for (seed, counter) of each row.
    """
    from keras import ops
    vocab = logits.shape[-1]
    logits = ops.cast(logits, "float32")
    logits = ops.where(ops.arange(vocab)[None, :] == BOS_ID, ops.full_like(logits, -np.inf), logits)
    greedy = ops.cast(ops.argmax(logits, axis=-1), "int32")
    warm = temperature > 0
    scores = filter_scores(logits, ops.where(warm, temperature, ops.ones_like(temperature)), top_k, top_p)
    gumbel = -ops.log(-ops.log(hash_uniform(seeds, counters, vocab)))
    drawn = ops.cast(ops.argmax(scores + gumbel, axis=-1), "int32")
    return ops.where(warm, drawn, greedy)
