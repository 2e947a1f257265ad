"""Beam search: the most likely outputs of a transducer, in one compiled loop per batch.

Every network decodes here through its stepper: each batch of prompts is prefilled by the
stepper's host form (:meth:`~pipeline.models.stepper.Stepper.prefill_for_device`: prompts of every
length share one traced call), its state tiled to ``width`` beams per prompt, and the search runs
on the device in one ``keras.ops.while_loop`` compiled by XLA (``compiled.compile_function``), the
state reordered by a gather of the surviving beams' rows at every step.

The search keeps ``width`` hypotheses per prompt ranked by their summed log-probability; a
hypothesis that emits ``end_id`` is finished and stays in the beam unchanged. The loop stops when
every beam has finished or after ``max_tokens`` tokens; the output is the beam with the best
length-normalised score, log p / lp(length) with GNMT's lp(n) = ((5 + n) / 6) ** alpha (Wu et al.
2016; alpha 0: the raw sum). Width 1 is greedy decoding (tested equal to the compiled sampler at
temperature 0).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.data.vocab_layout import BOS_ID
from pipeline.generation.compiled import compile_function, pow2_at_least

NEG = -1e30


class BeamDecoder:
    """``decode(prompts)`` -> each prompt's best output ids (without the end id), ``batch_size``
    prompts per compiled call, ``width`` beams each, at most ``max_tokens`` tokens; the output of
    the most log p / ((5 + length) / 6) ** ``alpha`` (GNMT's length normalisation)."""

    def __init__(self, stepper, vocab_size: int, end_id: int, *, alpha: float, width: int = 4,
                 max_tokens: int = 128, batch_size: int = 32):
        if width < 1 or max_tokens < 1 or batch_size < 1:
            raise ValueError(f"expected width, max_tokens and batch_size >= 1, got {width}, {max_tokens}, {batch_size}")
        self.stepper, self.vocab_size, self.end_id = stepper, int(vocab_size), int(end_id)
        self.width, self.max_tokens, self.alpha, self.batch_size = int(width), int(max_tokens), float(alpha), int(batch_size)
        self._search = compile_function(self._search_fn)

    def _search_fn(self, steps, held, logits, *state):
        """The compiled loop: (tokens (B*W, max_tokens), scores (B, W), lengths (B, W))."""
        from keras import ops
        W, V = self.width, self.vocab_size
        rows = logits.shape[0]
        B = rows // W
        bos = ops.arange(V)[None, None, :] == BOS_ID
        end = ops.arange(V)[None, None, :] == self.end_id
        base = ops.repeat(ops.arange(B, dtype="int32") * W, W)      # each row's prompt's first beam

        def step(t, held, logits, tokens, scores, lengths, done, *state):
            logp = ops.log_softmax(ops.cast(ops.reshape(logits, (B, W, V)), "float32"), axis=-1)
            logp = ops.where(bos, NEG, logp)
            # a finished beam continues only as itself, at no cost (one candidate: the end id)
            logp = ops.where(done[:, :, None], ops.where(end, 0.0, NEG), logp)
            cand = ops.reshape(scores[:, :, None] + logp, (B, W * V))
            top, index = ops.top_k(cand, W)
            origin = ops.cast(index // V, "int32")
            token = ops.cast(index % V, "int32")
            src = ops.reshape(base + ops.reshape(origin, (-1,)), (-1,))
            was = ops.take_along_axis(done, origin, axis=1)
            lengths = ops.take_along_axis(lengths, origin, axis=1) + ops.cast(ops.logical_not(was), "int32")
            done = was | (token == self.end_id)
            flat = ops.reshape(token, (-1,))
            tokens = ops.slice_update(ops.take(tokens, src, axis=0), (0, t), flat[:, None])
            state = tuple(ops.take(s, src, axis=self.stepper.batch_axis) for s in state)
            logits, state = self.stepper.device_step(flat[:, None], state, held)
            return (t + 1, held + 1, logits[:, -1], tokens, top, lengths, done) + tuple(state)

        def going(t, held, logits, tokens, scores, lengths, done, *state):
            return (t < steps) & ops.logical_not(ops.all(done))

        first = ops.where(ops.arange(W)[None, :] == 0, 0.0, NEG) + ops.zeros((B, 1))   # one live beam at first
        carry = (ops.convert_to_tensor(0, "int32"), held, logits, ops.zeros((rows, self.max_tokens), "int32"),
                 first, ops.zeros((B, W), "int32"), ops.zeros((B, W), "bool")) + tuple(state)
        carry = ops.while_loop(going, step, carry)
        return carry[3], carry[4], carry[5]

    def decode(self, prompts: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The best output of each prompt (ids without BOS; decoded as ``[BOS] + prompt``)."""
        from keras import ops
        outputs: list[np.ndarray] = [np.zeros(0, np.int32)] * len(prompts)
        lengths = [np.asarray(p).size for p in prompts]
        context = self.stepper.max_context
        for n in sorted(set(lengths)):          # equal lengths: each batch is prefilled whole
            group = [i for i, m in enumerate(lengths) if m == n]
            steps = self.max_tokens if context is None else min(self.max_tokens, context - n - 1)
            if steps < 1:
                raise ValueError(f"a prompt of {n} tokens leaves no room to decode in max_context {context}")
            for a in range(0, len(group), self.batch_size):
                idx = group[a:a + self.batch_size]
                rows = min(self.batch_size, pow2_at_least(len(idx)))   # a small group is not padded to a full batch
                ids = np.zeros((rows, n + 1), np.int32)
                ids[:, 0] = BOS_ID
                ids[:, 1:] = np.asarray([np.asarray(prompts[i]).reshape(-1) for i in idx]
                                        + [np.asarray(prompts[idx[0]]).reshape(-1)] * (rows - len(idx)))
                logits, state = self.stepper.prefill_for_device(ids)
                tile = lambda a, axis=0: ops.convert_to_tensor(np.repeat(np.asarray(a), self.width, axis=axis))  # noqa: E731
                tokens, scores, lens = self._search(ops.convert_to_tensor(steps, "int32"),
                                                    ops.convert_to_tensor(n + 1, "int32"), tile(logits[:, -1]),
                                                    *(tile(s, self.stepper.batch_axis) for s in state))
                tokens = np.asarray(ops.convert_to_numpy(tokens)).reshape(rows, self.width, -1)
                scores, lens = np.asarray(ops.convert_to_numpy(scores)), np.asarray(ops.convert_to_numpy(lens))
                norm = scores / np.power((5.0 + np.maximum(lens, 1)) / 6.0, self.alpha)
                for j, i in enumerate(idx):
                    best = tokens[j, int(np.argmax(norm[j]))]
                    stop = np.flatnonzero(best == self.end_id)
                    outputs[i] = best[:stop[0] if stop.size else min(steps, len(best))].astype(np.int32)
        return outputs

