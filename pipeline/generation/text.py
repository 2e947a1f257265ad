"""Text in, text out: prompts are encoded, a sampler's ids come back as text, chunk by chunk.

One path for every caller that turns prompts into text (the served pyfunc, the ``generate``
command, the samples of the evaluate and ngram stages): the sampler is anything with
``stream(prompts, max_tokens, *, temperature, top_k, top_p, seeds)`` yielding each row's new ids per
chunk — the compiled decoder for networks, :class:`HostSampler` for models that sample on the host
(the n-gram). A row's settings are a dict ``{prompt, max_tokens, temperature, top_k, top_p, seed,
stop}`` (``pipeline.generation.requests``); its text ends before the first occurrence of ``stop``.
"""
from __future__ import annotations

import time
from typing import Iterator, Sequence

import numpy as np


class HostSampler:
    """``stream`` for a model that samples one row at a time on the host with
    ``sample(context, num_tokens, rng, temperature, top_k, top_p)`` (the n-gram model): each
    row is produced whole, as one chunk."""

    def __init__(self, model):
        self.model = model

    def stream(self, prompts, max_tokens, *, temperature=1.0, top_k=0, top_p=1.0, seeds=None):
        rows = len(prompts)
        per_row = lambda v: np.broadcast_to(np.asarray(v), (rows,))            # noqa: E731
        budget, temperature, top_k, top_p = per_row(max_tokens), per_row(temperature), per_row(top_k), per_row(top_p)
        seeds = per_row(-1 if seeds is None else seeds)
        for i, prompt in enumerate(prompts):
            rng = np.random.default_rng(None if seeds[i] < 0 else int(seeds[i]))
            new = self.model.sample(prompt, int(budget[i]), rng, float(temperature[i]), int(top_k[i]),
                                    float(top_p[i]))
            yield [np.asarray(new, np.int32) if j == i else np.zeros(0, np.int32) for j in range(rows)]


def stream_texts(sampler, tokenizer, rows: Sequence[dict], deadline: float | None = None) -> Iterator[list[str]]:
    """Yield, per chunk, the text each row gained (a list of strings, "" where none).

    Stops when every row is done (its ``max_tokens`` or its ``stop`` string reached) or, between
    chunks, once ``time.monotonic()`` passes ``deadline``; closing the sampler's stream stops the
    work on the device too.
    """
    if not rows:
        return
    prompts = [tokenizer.encode(r["prompt"]) for r in rows]
    ids: list[list[int]] = [[] for _ in rows]
    texts = [""] * len(rows)
    done = [r["max_tokens"] == 0 for r in rows]
    stream = sampler.stream(prompts, [r["max_tokens"] for r in rows],
                            temperature=[r["temperature"] for r in rows], top_k=[r["top_k"] for r in rows],
                            top_p=[r["top_p"] for r in rows], seeds=[r["seed"] for r in rows])
    try:
        for news in stream:
            deltas = []
            for i, new in enumerate(news):
                if done[i] or len(new) == 0:
                    deltas.append("")
                    continue
                ids[i].extend(int(t) for t in new)
                text = tokenizer.decode(np.asarray(ids[i], np.int32))
                stop = rows[i].get("stop") or ""
                cut = text.find(stop, max(0, len(texts[i]) - len(stop))) if stop else -1
                if cut >= 0:
                    text, done[i] = text[:cut], True
                elif len(ids[i]) >= rows[i]["max_tokens"]:
                    done[i] = True
                # a tokenizer may rewrite the end of the text as tokens arrive (word pieces): the
                # delta is what extends the text already sent
                delta = text[len(texts[i]):] if text.startswith(texts[i]) else ""
                texts[i] += delta
                deltas.append(delta)
            yield deltas
            if all(done) or (deadline is not None and time.monotonic() > deadline):
                break
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def sample_rows(settings) -> list[dict]:
    """The rows of the pipeline's samples (params.yaml ``generate``): prompt i with seed ``seed + i``,
    so a sample is what the registered model answers to the same request."""
    return [{"prompt": prompt, "max_tokens": settings.max_tokens, "temperature": settings.temperature,
             "top_k": settings.top_k, "top_p": settings.top_p, "seed": settings.seed + i, "stop": ""}
            for i, prompt in enumerate(settings.prompts)]


def generate_texts(sampler, tokenizer, rows: Sequence[dict], deadline: float | None = None) -> list[str]:
    """Every row's whole text (see :func:`stream_texts`)."""
    texts = [""] * len(rows)
    for deltas in stream_texts(sampler, tokenizer, rows, deadline):
        texts = [t + d for t, d in zip(texts, deltas)]
    return texts


class HostGreedy:
    """Greedy outputs of a model that samples on the host, one row at a time (the n-gram:
    ``sample(context, num_tokens, rng, temperature, ...)``), decoded like
    ``pipeline.generation.beam.BeamDecoder``: ``decode(prompts)`` -> each output up to ``end_id``."""

    def __init__(self, model, end_id: int, max_tokens: int):
        self.model, self.end_id, self.max_tokens = model, int(end_id), int(max_tokens)

    chunk = 16     # tokens sampled per call: an output stops within a chunk of its end, not at max_tokens

    def decode(self, prompts: Sequence[np.ndarray]) -> list[np.ndarray]:
        outputs = []
        for prompt in prompts:
            out = np.zeros(0, np.int32)
            while len(out) < self.max_tokens and not (out == self.end_id).any():
                context = np.concatenate([np.asarray(prompt, np.int64).reshape(-1), out])
                new = self.model.sample(context, min(self.chunk, self.max_tokens - len(out)),
                                        np.random.default_rng(0), temperature=0.0)
                out = np.concatenate([out, np.asarray(new, np.int32)])
            stop = np.flatnonzero(out == self.end_id)
            outputs.append(out[:stop[0]] if stop.size else out)
        return outputs
