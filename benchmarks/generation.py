"""Generation speed per network: the compiled decoder against the reference stepper and full recomputation.

For every saved network (``--models``, the folder a ``make run`` leaves) and batch size, prints one
JSON object with ``tokens_per_second`` of ``pipeline.generation.compiled.CompiledDecoder`` (after its
compiling call, whose time is ``compile_seconds``), ``first_token_seconds`` (a fresh call until its
first chunk), and, timed in the same run on the same model:

- ``reference_tokens_per_second``: the reference decoder ``decoding.generate`` on the stepper's
  host form (one prompt at a time, so it is measured at batch 1 and applies to every batch),
  timed alternately with the compiled decoder ``--repeats`` times; both are medians, with their
  ranges beside them;
- ``recompute_tokens_per_second``: the whole context re-run for every token, as nanoGPT's
  ``generate`` does (the last ``seq_len`` tokens, one compiled forward per token, the same batch);
- ``fraction_of_peak``: forward FLOPs per token (a third of ``Family.flops_per_token``) times
  tokens/s over the matmul peak measured in this run (``benchmarks/common.py``).

Sampling is the pipeline's (``generate`` in params.yaml: temperature 0.8, top-p 0.95) unless set.

    python benchmarks/generation.py --models models --batch 1 --batch 32 --tokens 500 --out gen.jsonl
    python benchmarks/decode_floor.py --models models --generation gen.jsonl   # the batch-1 floor
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import emit, matmul_peak_gflops, saved_networks  # noqa: E402


def prompt_ids(length: int) -> np.ndarray:
    """The first ``length`` ids of the prepared validation split, else a fixed id sequence."""
    from pipeline.paths import PREPARED
    valid = PREPARED / "valid.npy"
    if valid.is_file():
        return np.load(valid, mmap_mode="r")[:length].astype(np.int64)
    return np.arange(2, 2 + length, dtype=np.int64)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def recompute_rate(network, prompt, batch: int, tokens: int, settings: dict) -> float:
    """Tokens/s of nanoGPT-style decoding: each token runs the model on the last seq_len tokens
    (right-padded to seq_len, which a causal model ignores: one compiled shape)."""
    from keras import ops

    from pipeline.data.vocab_layout import BOS_ID
    from pipeline.generation.compiled import compile_function
    from pipeline.generation.sampling import sample_token

    width = network.seq_len
    forward = compile_function(lambda ids: network.model(ids, training=False))
    rng = np.random.default_rng(0)
    seqs = [[BOS_ID] + [int(t) for t in prompt] for _ in range(batch)]

    def run(n):
        for _ in range(n):
            window = np.zeros((batch, width), np.int32)
            held = min(len(seqs[0]), width)
            for row, seq in zip(window, seqs):
                row[:held] = seq[-held:]
            logits = np.asarray(ops.convert_to_numpy(forward(ops.convert_to_tensor(window))))[:, held - 1]
            logits[:, BOS_ID] = -np.inf
            for seq, scores in zip(seqs, logits):
                seq.append(sample_token(scores, rng, **settings))

    run(2)                                                   # compile
    return batch * tokens / timed(lambda: run(tokens))


def benchmark(folder: Path, batches, tokens: int, prompt, settings: dict, peak: float, recompute_tokens: int,
              repeats: int):
    from pipeline.generation.compiled import CompiledDecoder
    from pipeline.generation.decoding import generate
    from pipeline.models.network import load_network
    from pipeline.models.catalog import family_of

    network = load_network(folder)
    family = family_of(network.cfg)
    stepper = network.stepper()
    decoder = CompiledDecoder(stepper, network.vocab_size)
    flops = family.flops_per_token(network.model, network.cfg, network.seq_len) / 3.0
    ref_rng = np.random.default_rng(0)
    generate(stepper, prompt, 8, ref_rng, **settings)        # warm the host form's predict functions
    sampler = dict(temperature=settings["temperature"], top_k=settings["top_k"], top_p=settings["top_p"])
    for batch in batches:
        prompts = [prompt] * batch
        seeds = np.arange(batch)
        compile_seconds = timed(lambda: decoder.generate(prompts, tokens, seeds=seeds, **sampler))
        # reference and compiled runs alternate, so that a change in the machine's speed (a
        # neighbour on the shared cache) touches both; the ratio is of the medians
        references, rates = [], []
        for r in range(repeats):
            references.append(tokens / timed(lambda: generate(stepper, prompt, tokens, ref_rng, **settings)))
            rates.append(batch * tokens / timed(
                lambda: decoder.generate(prompts, tokens, seeds=seeds + 1 + r, **sampler)))
        reference, rate = float(np.median(references)), float(np.median(rates))
        stream = decoder.stream(prompts, tokens, seeds=seeds + 2, **sampler)
        first = timed(lambda: next(stream))
        stream.close()
        recompute = recompute_rate(network, prompt, batch, recompute_tokens, settings)
        yield {"arch": folder.name, "family": network.cfg.family, "batch": batch, "new_tokens": tokens,
               "tokens_per_second": round(rate, 1), "first_token_seconds": round(first, 4),
               "compile_seconds": round(compile_seconds, 2),
               "reference_tokens_per_second": round(reference, 1), "reference_batch": 1, "repeats": repeats,
               "tokens_per_second_range": [round(min(rates), 1), round(max(rates), 1)],
               "reference_tokens_per_second_range": [round(min(references), 1), round(max(references), 1)],
               "speedup_vs_reference": round(rate / reference, 1),
               "recompute_tokens_per_second": round(recompute, 1),
               "speedup_vs_recompute": round(rate / recompute, 1),
               "forward_flops_per_token": flops, "gflops_per_second": round(flops * rate / 1e9, 2),
               "peak_gflops": round(peak, 1), "fraction_of_peak": round(flops * rate / 1e9 / peak, 4),
               "window": stepper.max_context, "window_keep": stepper.window_keep,
               "parameters": int(network.model.count_params())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="models", help="folder of saved networks (one subfolder each)")
    ap.add_argument("--arch", action="append", help="only these subfolders (repeatable)")
    ap.add_argument("--batch", type=int, action="append", help="batch sizes (repeatable; default 1 and 32)")
    ap.add_argument("--tokens", type=int, default=500, help="new tokens per prompt")
    ap.add_argument("--recompute-tokens", type=int, default=100,
                    help="tokens timed for the full-recomputation baseline (its rate does not depend on it)")
    ap.add_argument("--prompt-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5,
                    help="alternated reference/compiled timings per row (medians reported)")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--out", help="also write the JSON lines to this file")
    args = ap.parse_args()

    folders = saved_networks(args.models, args.arch)
    settings = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    peak = matmul_peak_gflops()
    prompt = prompt_ids(args.prompt_tokens)
    emit((row for folder in folders for row in benchmark(folder, args.batch or [1, 32], args.tokens, prompt,
                                                          settings, peak, args.recompute_tokens,
                                                          args.repeats)), args.out)


if __name__ == "__main__":
    main()
