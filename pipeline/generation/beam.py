"""Beam search: the most likely outputs of a transducer, in one compiled loop per batch.

Every network decodes here through its stepper. An encoder-decoder (``Stepper.ragged_start``)
takes a batch of sources of any lengths, right-padded, and starts, tiles and searches it in one
compiled call; any other network's prompts are batched by length, each batch prefilled by the
stepper's host form (:meth:`~pipeline.models.stepper.Stepper.prefill_for_device`) and its state
tiled to ``width`` beams per prompt. The search runs on the device in one ``keras.ops.while_loop``
compiled by XLA (``compiled.compile_function``), the state reordered by a gather of the surviving
beams' rows at every step.

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
from pipeline.generation.compiled import compile_function, equal_length_groups, pow2_at_least

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
        self._start = compile_function(self._start_fn)

    def _start_fn(self, limits, *inputs):
        """A batch of prompts of any lengths started on the device (``Stepper.device_start`` of
        its ``start_inputs``), tiled to the beams, then searched: one compiled call."""
        from keras import ops
        logits, state = self.stepper.device_start(*inputs)
        tile = lambda a, axis=0: ops.repeat(a, self.width, axis=axis)    # noqa: E731
        return self._search_fn(limits, ops.convert_to_tensor(0, "int32"), tile(logits),
                               *(tile(s, self.stepper.batch_axis) for s in state))

    def _search_fn(self, limits, held, logits, *state):
        """The compiled loop over beams already started (``logits`` (B*W, V), the state tiled):
        (tokens (B*W, max_tokens), scores (B, W), lengths (B, W)); prompt b stops after
        ``limits[b]`` tokens."""
        from keras import ops
        W, V = self.width, self.vocab_size
        rows = logits.shape[0]
        B = rows // W
        bos = ops.arange(V)[None, None, :] == BOS_ID
        end = ops.arange(V)[None, None, :] == self.end_id
        base = ops.repeat(ops.arange(B, dtype="int32") * W, W)      # each row's prompt's first beam
        limits = ops.cast(limits, "int32")[:, None]
        fixed = set(self.stepper.fixed_state)       # the same in every beam of a prompt: never reordered

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
            done = was | (token == self.end_id) | (t + 1 >= limits)
            flat = ops.reshape(token, (-1,))
            if W > 1:      # width 1 (greedy): every row's beam is its own, nothing to reorder
                tokens = ops.take(tokens, src, axis=0)
                state = tuple(s if i in fixed else ops.take(s, src, axis=self.stepper.batch_axis)
                              for i, s in enumerate(state))
            tokens = ops.slice_update(tokens, (0, t), flat[:, None])
            logits, state = self.stepper.device_step(flat[:, None], state, held)
            return (t + 1, held + 1, logits[:, -1], tokens, top, lengths, done) + tuple(state)

        def going(t, held, logits, tokens, scores, lengths, done, *state):
            return ops.logical_not(ops.all(done))

        first = ops.where(ops.arange(W)[None, :] == 0, 0.0, NEG) + ops.zeros((B, 1))   # one live beam at first
        carry = (ops.convert_to_tensor(0, "int32"), held, logits, ops.zeros((rows, self.max_tokens), "int32"),
                 first, ops.zeros((B, W), "int32"), ops.zeros((B, W), "bool")) + tuple(state)
        carry = ops.while_loop(going, step, carry)
        return carry[3], carry[4], carry[5]

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """The prompts of each compiled call: any lengths together, shortest first, for a stepper
        that starts them so (``Stepper.ragged_start``); else equal lengths only, each batch then
        prefilled whole by the host form."""
        if self.stepper.ragged_start:
            groups = [sorted(range(len(lengths)), key=lambda i: lengths[i])]
        else:
            groups = equal_length_groups(lengths)
        return [g[a:a + self.batch_size] for g in groups for a in range(0, len(g), self.batch_size)]

    def _rows(self, prompts: int, batches: int) -> int:
        """The rows of a compiled call of ``prompts`` prompts, one of ``batches`` in a decode:
        every batch of a decode of several is padded to ``batch_size`` rows, so that a prefix
        model's decode compiles once (each row count cost an XLA compilation of the loop: the GRU's
        first g2p test decode went 5.7 -> 3.3 s greedy, 4.4 -> 1.5 s beam, on a shared machine); a decode of
        a single batch (a served request) is padded to a power of two only. An encoder-decoder's
        batches keep their own source widths (16, 32, ...): padding every source to the widest
        saved a compilation but slowed the steady decode of dates by a quarter."""
        return self.batch_size if batches > 1 else min(self.batch_size, pow2_at_least(prompts))

    def decode(self, prompts: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The best output of each prompt (ids without BOS; decoded as ``[BOS] + prompt``)."""
        from keras import ops
        outputs: list[np.ndarray] = [np.zeros(0, np.int32)] * len(prompts)
        prompts = [np.asarray(p).reshape(-1) for p in prompts]
        lengths = [p.size for p in prompts]
        context = self.stepper.max_context
        limits = np.array([self.max_tokens if context is None else min(self.max_tokens, context - n - 1)
                           for n in lengths], np.int32)
        if len(prompts) and limits.min() < 1:
            n = lengths[int(np.argmin(limits))]
            raise ValueError(f"a prompt of {n} tokens leaves no room to decode in max_context {context}")
        batches = self._batches(lengths)
        for idx in batches:
            rows = self._rows(len(idx), len(batches))
            idx_rows = idx + [idx[0]] * (rows - len(idx))
            ids = np.zeros((rows, max(lengths[i] for i in idx) + 1), np.int32)
            ids[:, 0] = BOS_ID
            for r, i in enumerate(idx_rows):
                ids[r, 1:lengths[i] + 1] = prompts[i]
            row_limits = ops.convert_to_tensor(np.where(np.arange(rows) < len(idx), limits[idx_rows], 1).astype(np.int32))
            if self.stepper.ragged_start:
                inputs = self.stepper.start_inputs(ids, np.array([lengths[i] + 1 for i in idx_rows]))
                found = self._start(row_limits, *(ops.convert_to_tensor(a) for a in inputs))
            else:
                logits, state = self.stepper.prefill_for_device(ids)
                tile = lambda a, axis=0: ops.convert_to_tensor(np.repeat(np.asarray(a), self.width, axis=axis))  # noqa: E731
                found = self._search(row_limits, ops.convert_to_tensor(ids.shape[1], "int32"), tile(logits[:, -1]),
                                     *(tile(s, self.stepper.batch_axis) for s in state))
            tokens, scores, lens = (np.asarray(ops.convert_to_numpy(t)) for t in found)
            tokens = tokens.reshape(rows, self.width, -1)
            norm = scores / np.power((5.0 + np.maximum(lens, 1)) / 6.0, self.alpha)
            for j, i in enumerate(idx):
                best = tokens[j, int(np.argmax(norm[j]))]
                stop = np.flatnonzero(best == self.end_id)
                outputs[i] = best[:stop[0] if stop.size else min(int(limits[i]), len(best))].astype(np.int32)
        return outputs
