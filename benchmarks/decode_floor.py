"""The weight-read floor of batch-1 decoding per network: how fast one core can merely stream its weights.

At batch 1 a decoding step multiplies one vector by every weight matrix of the network once, so it
cannot run faster than reading those matrices. For each saved network (``--models``) this times a
compiled loop (the compiled decoder's XLA ``while``) that does nothing but those vector-matrix
products, one after another, each input depending on the previous step so that nothing is
hoisted, and prints one JSON object with:

- ``weight_megabytes``: the matrices read per token (embedding and position tables excluded: a
  step reads one row of them);
- ``floor_us_per_token`` and ``gigabytes_per_second``: the loop's time per step and the rate it
  streams the weights at;
- with ``--generation FILE`` (the JSON lines of ``benchmarks/generation.py`` from the same
  session), ``decoder_us_per_token`` at batch 1, ``budget_us_per_token_for_20x`` (one
  twentieth of the reference stepper's time per token) and ``floor_ratio_bound`` (the reference's
  time over the floor: the largest speed-up any batch-1 decoder reading these float32 weights
  could show against that reference).

    python benchmarks/decode_floor.py --models models --generation gen.jsonl --out floor.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import emit, saved_networks  # noqa: E402


def weight_matrices(model) -> list[np.ndarray]:
    """Every weight a step multiplies by, as (in, out) matrices (kernels of rank 3 flattened): all
    but the model's lookup tables (its token and position embeddings)."""
    tables = {id(v) for v in model.lookup_tables()}
    return [np.asarray(w.numpy(), np.float32).reshape(-1, w.shape[-1])
            for w in model.weights if len(w.shape) >= 2 and id(w) not in tables]


def floor_us(mats: list[np.ndarray], steps: int, repeats: int) -> float:
    """Median microseconds per step of a compiled loop of one vector-matrix product per matrix."""
    from keras import ops

    from pipeline.generation.compiled import compile_function
    weights = [ops.convert_to_tensor(m) for m in mats]

    def run(*ws):
        def body(i, s):
            for w in ws:      # each product's input depends on the last: no hoisting, no reordering
                s = s + ops.sum(ops.matmul(ops.full((1, w.shape[0]), s), w)) * 1e-12
            return i + 1, s
        return ops.while_loop(lambda i, s: i < steps, body, (ops.convert_to_tensor(0, "int32"),
                                                             ops.convert_to_tensor(0.0, "float32")))[1]

    loop = compile_function(run)
    ops.convert_to_numpy(loop(*weights))                     # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ops.convert_to_numpy(loop(*weights))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / steps * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="models", help="folder of saved networks (one subfolder each)")
    ap.add_argument("--arch", action="append", help="only these subfolders (repeatable)")
    ap.add_argument("--generation", help="JSON lines of benchmarks/generation.py from this session")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", help="also write the JSON lines to this file")
    args = ap.parse_args()

    from pipeline.models.network import load_network
    folders = saved_networks(args.models, args.arch)
    measured = {}
    if args.generation:
        for line in Path(args.generation).read_text().splitlines():
            row = json.loads(line)
            if row.get("batch") == 1:
                measured[row["arch"]] = row

    def rows():
        for folder in folders:
            mats = weight_matrices(load_network(folder).model)
            megabytes = sum(m.nbytes for m in mats) / 1e6
            us = floor_us(mats, args.steps, args.repeats)
            row = {"arch": folder.name, "matrices": len(mats), "weight_megabytes": round(megabytes, 3),
                   "floor_us_per_token": round(us, 2), "gigabytes_per_second": round(megabytes / us * 1e3, 1)}
            if folder.name in measured:
                gen = measured[folder.name]
                reference_us = 1e6 / gen["reference_tokens_per_second"]
                row.update(decoder_us_per_token=round(1e6 / gen["tokens_per_second"], 2),
                           budget_us_per_token_for_20x=round(reference_us / 20, 2),
                           floor_ratio_bound=round(reference_us / us, 1))
            yield row

    emit(rows(), args.out)


if __name__ == "__main__":
    main()
