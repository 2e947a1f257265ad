"""Token sampling rules shared by the n-gram model and the networks.

One implementation of greedy, temperature, top-k and top-p (nucleus) so that every model's
samples differ only by the model, never by the sampler.
"""
from __future__ import annotations

import numpy as np


def check_settings(temperature: float, top_k: int, top_p: float) -> None:
    """Raise ValueError unless temperature >= 0, top_k >= 0 and 0 < top_p <= 1."""
    if not (temperature >= 0 and top_k >= 0 and 0 < top_p <= 1):
        raise ValueError(f"bad sampler settings: temperature={temperature}, top_k={top_k}, top_p={top_p}")


def filter_logprobs(logprobs: np.ndarray, temperature: float = 1.0, top_k: int = 0,
                    top_p: float = 1.0) -> np.ndarray:
    """Return the normalised sampling distribution (probabilities) over the last axis.

    ``logprobs`` are natural-log scores of shape (..., V) (unnormalised logits are fine).
    temperature 0 means greedy (all mass on the arg max); top_k 0 and top_p 1 disable those filters.
    """
    x = np.asarray(logprobs, dtype=np.float64)
    check_settings(temperature, top_k, top_p)
    if temperature == 0:
        out = np.zeros_like(x)
        np.put_along_axis(out, np.argmax(x, axis=-1)[..., None], 1.0, axis=-1)
        return out
    x = x / temperature
    if top_k and top_k < x.shape[-1]:
        kth = np.partition(x, -top_k, axis=-1)[..., -top_k, None]
        x = np.where(x < kth, -np.inf, x)
    x = x - np.max(x, axis=-1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=-1, keepdims=True)
    if top_p < 1:
        order = np.argsort(-p, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        keep_sorted = (np.cumsum(sorted_p, axis=-1) - sorted_p) < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    return p


def sample_token(logprobs: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0) -> int:
    """Draw one token id from a single (V,) score vector under the sampler settings."""
    p = filter_logprobs(logprobs, temperature, top_k, top_p)
    if temperature == 0:
        return int(np.argmax(p))
    return int(rng.choice(p.shape[-1], p=p))
