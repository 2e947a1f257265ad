"""Compiled decoding: the sampling loop runs on the device, one compiled call per chunk of tokens.

Any family's stepper decodes here through its device form (``Stepper.device_state`` /
``device_step``): the recurrent state, the convolution's per-block queues and the Transformer's
key/value cache stay backend tensors between steps and between chunks; sampling is
``device_sampling.sample_tokens`` (stateless, seeded per row). The loop is ``keras.ops.while_loop``,
compiled with XLA by TensorFlow (``tf.function(jit_compile=True)``) or JAX (``jax.jit``); other
backends run it eagerly. The host only sees each chunk's tokens (streaming, stop strings and
deadlines are decided between chunks).

Semantics are those of the reference decoder ``decoding.generate``, row by row:
[BOS] + prompt is fed, then each sampled token; a windowed model (``max_context`` C) that would
exceed C restarts from its last ``stepper.window_keep`` tokens (the sliding window). Prompts of
different lengths share one batch: the common prefix is prefilled at once and each row's remaining
prompt tokens are forced through the loop before its sampling starts; a stepper that starts
right-padded prompts of any lengths (``Stepper.ragged_start``: an encoder-decoder, whose first call
encodes each row's whole source) starts every row's whole prompt in one compiled call instead.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from pipeline.data.vocab_layout import BOS_ID
from pipeline.generation.device_sampling import sample_tokens
from pipeline.generation.sampling import check_settings


def compile_function(fn):
    """``fn`` compiled by the backend's XLA (TensorFlow, JAX), or ``fn`` itself elsewhere."""
    import keras
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.function(fn, jit_compile=True)
    if backend == "jax":
        import jax
        return jax.jit(fn)
    return fn


def pow2_at_least(n: int, floor: int = 1) -> int:
    return max(floor, 1 << max(0, int(n) - 1).bit_length())


def equal_length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """The indices of equal ``lengths``, one list per length, shortest first."""
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(int(n), []).append(i)
    return [groups[n] for n in sorted(groups)]


def _pow2_at_most(n: int) -> int:
    return 1 << (max(1, int(n)).bit_length() - 1)


class CompiledDecoder:
    """Batched, compiled sampling from a stepper.

    ``chunk`` is the most tokens one compiled call produces (the first call produces
    ``first_chunk``, so that streaming shows text early). Batches are padded to a power of two
    and prompt buffers to a power-of-two width, so a long-running server compiles a handful of
    programs, not one per request.
    """

    def __init__(self, stepper, vocab_size: int, *, chunk: int = 512, first_chunk: int = 8):
        self.stepper = stepper
        self.vocab_size = int(vocab_size)
        self.chunk, self.first_chunk = int(chunk), max(1, min(int(first_chunk), int(chunk)))
        self.window = stepper.max_context
        if self.window is not None and self.window < 2:
            raise ValueError(f"max_context {self.window} leaves no room for a sliding window")
        self.keep = stepper.window_keep
        self._prefill = compile_function(self._prefill_fn)
        self._start = compile_function(self._start_fn)
        self._run = compile_function(self._run_fn)

    # ---- the compiled programs
    def _prefill_fn(self, ids, prompts):
        """State, last logits and window after the first P ids (B, P) of every row."""
        from keras import ops
        batch = ids.shape[0]
        logits, state = self.stepper.device_step(ids, self.stepper.device_state(batch),
                                                 ops.convert_to_tensor(0, "int32"))
        window = (ops.slice(prompts, (0, 0), (batch, self.window)) if self.window
                  else ops.zeros((batch, 1), "int32"))
        return logits[:, -1], state, window

    def _start_fn(self, prompts, *inputs):
        """:meth:`_prefill_fn` for a stepper that starts every row's whole prompt at once
        (``Stepper.ragged_start``), from its ``start_inputs``."""
        from keras import ops
        logits, state = self.stepper.device_start(*inputs)
        batch = prompts.shape[0]
        window = (ops.slice(prompts, (0, 0), (batch, self.window)) if self.window else ops.zeros((batch, 1), "int32"))
        return logits, state, window

    def _choose(self, j, logits, prompts, lengths, seeds, temperature, top_k, top_p):
        """The token of sequence index j: each row's prompt token while j < its length, else a sample."""
        from keras import ops
        counters = ops.cast(ops.maximum(j - lengths, 0), "uint32")
        drawn = sample_tokens(logits, seeds, counters, temperature, top_k, top_p)
        forced = ops.take(prompts, ops.minimum(j, prompts.shape[1] - 1), axis=1)
        return ops.where(j < lengths, forced, drawn)

    def _run_fn(self, steps, j, held, logits, state, window, prompts, *rows):
        """``steps`` iterations of: choose the token of index j, record it, feed it. Returns the
        carry and the chunk's ids (B, chunk).

        A windowed model runs segments: as many plain steps as the window has room for (the caches
        updated in place), then, if more are wanted, one step that slides the window. The one
        conditional is per segment, not per step: inside a per-step conditional XLA copies the
        caches on every step."""
        from keras import ops
        batch = prompts.shape[0]
        depth = len(state)

        def step(t, j, held, logits, window, out, *state):
            x = self._choose(j, logits, prompts, *rows)
            out = ops.slice_update(out, (0, t), x[:, None])
            logits, state = self.stepper.device_step(x[:, None], tuple(state), held)
            if self.window:
                window = ops.slice_update(window, (0, held), x[:, None])
            return (t + 1, j + 1, held + 1, logits[:, -1], window, out) + tuple(state)

        def slide(t, j, held, logits, window, out, *state):
            x = self._choose(j, logits, prompts, *rows)
            out = ops.slice_update(out, (0, t), x[:, None])
            recent = ops.slice(window, (0, self.window - self.keep + 1), (batch, self.keep - 1))
            ids = ops.concatenate([recent, x[:, None]], axis=1)
            logits, state = self.stepper.device_step(ids, self.stepper.device_state(batch),
                                                     ops.convert_to_tensor(0, "int32"))
            window = ops.concatenate([ids, ops.zeros((batch, self.window - self.keep), "int32")], axis=1)
            return (t + 1, j + 1, ops.convert_to_tensor(self.keep, "int32"), logits[:, -1], window, out) + tuple(state)

        def segment(*carry):
            t, held = carry[0], carry[2]
            limit = t + ops.minimum(steps - t, self.window - held)
            carry = ops.while_loop(lambda t, *_: t < limit, step, carry)
            full = (carry[0] < steps) & (carry[2] >= self.window)
            return ops.cond(full, lambda: tuple(slide(*carry)), lambda: tuple(carry))

        carry = (ops.convert_to_tensor(0, "int32"), j, held, logits, window,
                 ops.zeros((batch, self.chunk), "int32")) + tuple(state)
        carry = ops.while_loop(lambda t, *_: t < steps, segment if self.window else step, carry)
        _, j, held, logits, window, out = carry[:6]
        return j, held, logits, tuple(carry[6:6 + depth]), window, out

    # ---- the host side
    def stream(self, prompts: Sequence[np.ndarray], max_tokens, *, temperature=1.0, top_k=0, top_p=1.0,
               seeds=None) -> Iterator[list[np.ndarray]]:
        """Yield, chunk by chunk, each row's newly sampled ids (a list of int32 arrays, one per
        prompt; empty once a row has its ``max_tokens``). Settings are scalars or one per prompt;
        ``seeds`` None or negative draws fresh randomness. Closing the iterator stops the work."""
        from keras import ops

        rows = len(prompts)
        if rows == 0:
            return
        per_row = lambda v, kind: np.broadcast_to(np.asarray(v, kind), (rows,)).copy()   # noqa: E731
        budget = per_row(max_tokens, np.int64)
        temperature, top_k, top_p = (per_row(temperature, np.float32), per_row(top_k, np.int32),
                                     per_row(top_p, np.float32))
        for i in range(rows):
            check_settings(float(temperature[i]), int(top_k[i]), float(top_p[i]))
        if (budget < 0).any():
            raise ValueError(f"max_tokens must be >= 0, got {budget.min()}")
        seeds = per_row(-1 if seeds is None else seeds, np.int64)
        fresh = np.random.default_rng().integers(0, 2 ** 32, size=rows)
        seeds = np.where(seeds < 0, fresh, seeds % 2 ** 32).astype(np.uint32)

        seqs = []
        for p in prompts:
            seq = np.concatenate([[BOS_ID], np.asarray(p, np.int64).reshape(-1)]).astype(np.int32)
            if self.window is not None and len(seq) > self.window:
                seq = seq[-self.keep:]
            seqs.append(seq)
        lengths = np.array([len(s) for s in seqs], np.int32)
        if not budget.any():
            return
        batch = pow2_at_least(rows)
        width = pow2_at_least(max(int(lengths.max()), self.window or 0), floor=16)
        buf = np.zeros((batch, width), np.int32)
        buf[:, 0] = BOS_ID
        for i, s in enumerate(seqs):
            buf[i, :len(s)] = s
        pad = batch - rows
        pad_to = lambda a, v: np.concatenate([a, np.full(pad, v, a.dtype)])            # noqa: E731
        tensor = ops.convert_to_tensor
        if self.stepper.ragged_start:
            if len(set(lengths)) > 1 and self.window is not None and lengths.max() + budget.max() > self.window:
                yield from self._by_length(prompts, lengths, max_tokens, temperature=temperature, top_k=top_k,
                                           top_p=top_p, seeds=seeds)
                return
            # every row's whole prompt started at once (an encoder-decoder encodes its source
            # there); the rows then sample in step, as if every prompt were as long as the longest
            inputs = self.stepper.start_inputs(buf, pad_to(lengths, 1))
            begin = self._start(tensor(buf), *(tensor(a) for a in inputs))
            lengths = np.full(rows, lengths.max(), np.int32)
            first = int(lengths.max())
        else:
            # the common prefix prefilled at once (a power of two: few compiled shapes)
            first = _pow2_at_most(int(lengths.min()))
            begin = self._prefill(tensor(buf[:, :first]), tensor(buf))
        total = int((lengths + budget).max()) - first        # loop iterations over the whole call
        args = [tensor(a) for a in (buf, pad_to(lengths, 1), pad_to(seeds, 0), pad_to(temperature, 0.0),
                                    pad_to(top_k, 0), pad_to(top_p, 1.0))]
        logits, state, window = begin
        j, held = ops.convert_to_tensor(first, "int32"), ops.convert_to_tensor(first, "int32")
        done, start = 0, first
        while done < total:
            steps = min(self.first_chunk if done == 0 else self.chunk, total - done)
            j, held, logits, state, window, out = self._run(
                ops.convert_to_tensor(steps, "int32"), j, held, logits, state, window, *args)
            ids = np.asarray(ops.convert_to_numpy(out))[:rows, :steps]
            index = start + done + np.arange(steps)              # sequence index of each column
            news = []
            for i in range(rows):
                g = index - lengths[i]                           # generated-token number
                news.append(ids[i][(g >= 0) & (g < budget[i])])
            done += steps
            yield news

    def _by_length(self, prompts, lengths, max_tokens, **settings) -> Iterator[list[np.ndarray]]:
        """:meth:`stream` one group of equal-length prompts at a time, for prompts started whole
        (``Stepper.ragged_start``) that will slide their window: rows started together sample in
        step, so a shorter prompt would slide sooner than alone."""
        rows = len(prompts)
        empty = np.zeros(0, np.int32)
        for idx in equal_length_groups(lengths):
            pick = lambda v: None if v is None else np.broadcast_to(np.asarray(v), (rows,))[idx]   # noqa: E731
            for news in self.stream([prompts[i] for i in idx], pick(max_tokens),
                                    **{k: pick(v) for k, v in settings.items()}):
                out = [empty] * rows
                for i, new in zip(idx, news):
                    out[i] = new
                yield out

    def generate(self, prompts: Sequence[np.ndarray], max_tokens, **settings) -> list[np.ndarray]:
        """Every row's sampled ids at once (see :meth:`stream`)."""
        parts = [[] for _ in prompts]
        for news in self.stream(prompts, max_tokens, **settings):
            for part, new in zip(parts, news):
                part.append(new)
        return [np.concatenate(p).astype(np.int32) if p else np.zeros(0, np.int32) for p in parts]
