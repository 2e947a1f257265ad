"""The reference decoder: sampling a continuation from a Stepper's host form, one token per call.

Backend-agnostic: it only calls ``stepper.initial_state`` and ``stepper(ids, state)`` and works on
numpy arrays. ``compiled.CompiledDecoder`` is the fast decoder; this one defines what it must
compute (tests compare the two) and is the baseline of ``benchmarks/generation.py``.
"""
from __future__ import annotations

import numpy as np

from pipeline.generation.sampling import sample_token
from pipeline.data.vocab_layout import BOS_ID


def generate(stepper, prompt_ids: np.ndarray, num_tokens: int, rng: np.random.Generator,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Sample ``num_tokens`` ids continuing ``prompt_ids`` (1-D, without BOS).

    Feeds [BOS] + prompt as one prefill, then one token per call, carrying the stepper state.
    BOS is never emitted (its score is set to -inf before sampling). temperature 0 is greedy.
    If the stepper has a ``max_context`` and the next call would exceed it, the state is
    rebuilt by prefilling the last ``stepper.window_keep`` tokens of the sequence so far (a sliding
    window; BOS drops out of it). A sequence longer than max_context is cut the same way.
    Returns the sampled ids (int32, shape (num_tokens,)), without the prompt.
    """
    prompt = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
    num_tokens = int(num_tokens)
    if num_tokens <= 0:
        return np.zeros((0,), np.int32)
    max_context = stepper.max_context
    if max_context is not None and max_context < 2:
        raise ValueError(f"max_context {max_context} leaves no room for a sliding window")
    seq = [BOS_ID] + [int(t) for t in prompt]

    def prefill(tokens):
        state = stepper.initial_state(1)
        logits, state = stepper(np.asarray([tokens], dtype=np.int32), state)
        return logits[0, -1], state, len(tokens)

    keep = stepper.window_keep
    window = seq if max_context is None or len(seq) <= max_context else seq[-keep:]
    last, state, held = prefill(window)
    out = np.empty((num_tokens,), np.int32)
    for i in range(num_tokens):
        scores = np.array(last, dtype=np.float64)
        scores[BOS_ID] = -np.inf
        token = sample_token(scores, rng, temperature=temperature, top_k=top_k, top_p=top_p)
        out[i] = token
        seq.append(token)
        if i + 1 == num_tokens:
            break
        if max_context is not None and held + 1 > max_context:
            last, state, held = prefill(seq[-keep:])
        else:
            logits, state = stepper(np.asarray([[token]], dtype=np.int32), state)
            last, held = logits[0, -1], held + 1
    return out


class StepperSampler:
    """A stepper behind the n-gram model's interface: ``sample(context, num_tokens, rng, ...)``,
    so that the text generator samples every model the same way."""

    def __init__(self, stepper):
        self.stepper = stepper

    def sample(self, context, num_tokens: int, rng: np.random.Generator, temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
        return generate(self.stepper, context, num_tokens, rng, temperature, top_k, top_p)
