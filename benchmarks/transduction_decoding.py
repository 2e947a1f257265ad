"""Transduction decoding speed: the cached beam search against re-running the whole decoder per token.

For every encoder-decoder saved in ``--models`` (the folder ``make run PRESET=dates`` leaves) and
every beam width (``--width``, default greedy 1 and beam 4), decodes the test sources of the
prepared paired data (``--data``) at batch ``--batch`` (32) with ``pipeline.generation.beam.BeamDecoder``
twice, timed alternately ``--repeats`` times after a compiling call each:

- ``cached``: over the model's own stepper (``call_with_cache``: the source encoded once per
  example, one decoder step per output token);
- ``recompute``: over ``RecomputeStepper``, which re-runs the whole network (encoder and decoder)
  on the example so far for every output token: the reference.

Both searches are the same compiled loop and give the same outputs (checked: ``same_outputs``).
Prints one JSON object per model and width with output tokens/s of each (medians, with their
ranges) and ``speedup`` (the ratio of the medians):

    python benchmarks/transduction_decoding.py --models models --data data/prepared --out decoding.jsonl
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

from benchmarks.common import emit, saved_networks  # noqa: E402


def sources(data) -> list[np.ndarray]:
    """Each distinct test source's prompt ids: ``source<TAB>``."""
    from pipeline.data.pairs import SEPARATOR
    from pipeline.scoring.transduction import split_references
    texts, _ = split_references(data.ids["test"], data.starts("test"), data.tokenizer)
    return [data.tokenizer.encode(s + SEPARATOR) for s in texts]


def measure(folder: Path, data, width: int, batch: int, repeats: int, max_tokens: int) -> dict | None:
    from pipeline.data.loss_mask import line_end_id
    from pipeline.generation.beam import BeamDecoder
    from pipeline.generation.requests import LENGTH_PENALTY
    from pipeline.models.network import load_network
    from pipeline.models.stepper import RecomputeStepper

    net = load_network(folder)
    if getattr(net.model, "marker_id", None) is None:
        return None                                   # not an encoder-decoder
    prompts = sources(data)
    end = line_end_id(data.tokenizer)
    decoders = {"cached": net.stepper(), "recompute": RecomputeStepper(net.model, net.seq_len)}
    decoders = {k: BeamDecoder(s, net.vocab_size, end, width=width, max_tokens=max_tokens, batch_size=batch,
                               alpha=LENGTH_PENALTY)
                for k, s in decoders.items()}
    outputs, compile_seconds = {}, {}
    for name, d in decoders.items():                  # the compiling call (and the outputs)
        t0 = time.perf_counter()
        outputs[name] = d.decode(prompts)
        compile_seconds[name] = time.perf_counter() - t0
    tokens = sum(len(o) + 1 for o in outputs["cached"])   # each output and its end token
    seconds: dict[str, list[float]] = {k: [] for k in decoders}
    for _ in range(repeats):                          # alternately, A B A B ...
        for name, d in decoders.items():
            t0 = time.perf_counter()
            d.decode(prompts)
            seconds[name].append(time.perf_counter() - t0)
    rate = {k: tokens / float(np.median(v)) for k, v in seconds.items()}
    return {"model": folder.name, "family": net.cfg.family, "width": width, "batch": batch,
            "sources": len(prompts), "output_tokens": tokens,
            "cached_tokens_per_second": rate["cached"],
            "cached_range": [tokens / max(seconds["cached"]), tokens / min(seconds["cached"])],
            "recompute_tokens_per_second": rate["recompute"],
            "recompute_range": [tokens / max(seconds["recompute"]), tokens / min(seconds["recompute"])],
            "speedup": rate["cached"] / rate["recompute"],
            "first_call_seconds": compile_seconds, "repeats": repeats,
            "same_outputs": all(np.array_equal(a, b) for a, b in zip(outputs["cached"], outputs["recompute"]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="models")
    ap.add_argument("--arch", action="append", help="only these model folders (repeatable)")
    ap.add_argument("--data", default="data/prepared", help="prepared paired data (data.examples: pairs)")
    ap.add_argument("--width", type=int, action="append", help="beam widths (default: 1 and 4)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=16, help="the longest output (dates: 10 characters)")
    ap.add_argument("--out")
    args = ap.parse_args()

    from pipeline.data.prepared import load_prepared
    data = load_prepared(Path(args.data))
    if data.marker_id is None:
        sys.exit(f"--data {args.data}: not paired data (data.examples: pairs); run `make run PRESET=dates`")
    rows = (measure(folder, data, width, args.batch, args.repeats, args.max_tokens)
            for folder in saved_networks(args.models, args.arch) for width in (args.width or [1, 4]))
    emit((r for r in rows if r is not None), args.out)


if __name__ == "__main__":
    main()
