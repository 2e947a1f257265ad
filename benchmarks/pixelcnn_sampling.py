"""Sampling speed of the gated PixelCNN: its cached step (Fast PixelCNN) against recomputing the
full forward at every pixel, both through the compiled decoder (``CompiledDecoder``, XLA).

The cached method is ``CachedStepper(model)``; the baseline is ``RecomputeStepper(model, C)``
with C = the whole row (``<bos>`` + pixels + end), so that every sampled pixel re-runs the full
forward over the whole image (one compiled shape). Both sample ``--batch`` images (each row: the
label prompt, if any, then H*W pixels) with the same sampler; each is compiled by a first call,
then timed alternately ``--repeats`` times. The baseline's cost per pixel does not depend on the
pixel, so ``--recompute-pixels N`` times only its first N pixels (tokens/s is per sampled pixel
either way; the JSON says how many were timed). Prints one JSON line, also written to ``--out``.

    python benchmarks/pixelcnn_sampling.py --batch 64 --height 28 --width 28 --levels 2 --repeats 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import emit  # noqa: E402


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--height", type=int, default=28)
    ap.add_argument("--width", type=int, default=28)
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--labels", type=int, default=0, help="classes (0: unlabelled)")
    ap.add_argument("--units", type=int, default=64)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--kernel-size", type=int, default=5)
    ap.add_argument("--first-kernel", type=int, default=7)
    ap.add_argument("--embed-dim", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--recompute-pixels", type=int, default=0,
                    help="time only this many pixels of the baseline (0: the whole image)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="pixelcnn_sampling.json")
    args = ap.parse_args(argv)

    import keras

    from pipeline.data.image_layout import LEVEL_OFFSET, ImageLayout
    from pipeline.generation.compiled import CompiledDecoder
    from pipeline.models.pixelcnn import PixelCNNFamily, PixelCNNParams
    from pipeline.models.stepper import CachedStepper, RecomputeStepper

    keras.utils.set_random_seed(args.seed)
    levels, labels = args.levels, args.labels
    layout = ImageLayout(args.height, args.width, levels, tuple(str(c) for c in range(labels)))
    image, vocab, pixels = layout.model_config(), len(layout.tokens()), layout.pixels
    row = layout.prefix + pixels + 1                      # <bos> [label sep] pixels end
    cfg = PixelCNNParams(family=PixelCNNFamily.name, units=args.units, layers=args.layers, kernel_size=args.kernel_size,
                         first_kernel=args.first_kernel, embed_dim=args.embed_dim)
    family = PixelCNNFamily()
    family.check(cfg)
    model = family.build(cfg, vocab, row, image=image)
    # the decoder feeds [<bos>] + prompt: a labelled image's prompt is its label and the separator
    prompts = [layout.prompt(b % labels if labels else None) for b in range(args.batch)]
    chunk = pixels + 1
    methods = {
        "cached": (CompiledDecoder(CachedStepper(model), vocab, chunk=chunk, first_chunk=chunk), pixels),
        "recompute": (CompiledDecoder(RecomputeStepper(model, row), vocab, chunk=chunk, first_chunk=chunk),
                      min(pixels, args.recompute_pixels) if args.recompute_pixels > 0 else pixels),
    }
    settings = dict(temperature=1.0, seeds=list(range(args.batch)))
    compile_s, times = {}, {name: [] for name in methods}
    for name, (decoder, n) in methods.items():
        t0 = time.perf_counter()
        out = decoder.generate(prompts, n, **settings)
        compile_s[name] = time.perf_counter() - t0
        got = np.stack(out)
        assert got.shape == (args.batch, n) and got.min() >= LEVEL_OFFSET and got.max() < layout.label_offset, got
    for _ in range(args.repeats):
        for name, (decoder, n) in methods.items():
            t0 = time.perf_counter()
            decoder.generate(prompts, n, **settings)
            times[name].append(time.perf_counter() - t0)
    rate = {name: args.batch * methods[name][1] / statistics.median(times[name]) for name in methods}
    result = {
        "benchmark": "pixelcnn_sampling", "backend": keras.backend.backend(), "batch": args.batch,
        "height": args.height, "width": args.width, "levels": levels, "labels": labels, "units": args.units,
        "layers": args.layers, "kernel_size": args.kernel_size, "first_kernel": args.first_kernel,
        "parameters": int(model.count_params()), "repeats": args.repeats,
        "cached_tokens_per_second": round(rate["cached"], 1),
        "recompute_tokens_per_second": round(rate["recompute"], 2),
        "recompute_pixels_timed": methods["recompute"][1],
        "speedup": round(rate["cached"] / rate["recompute"], 1),
        "cached_seconds": [round(t, 3) for t in times["cached"]],
        "recompute_seconds": [round(t, 3) for t in times["recompute"]],
        "compile_seconds": {k: round(v, 2) for k, v in compile_s.items()},
        "cached_seconds_per_image_batch": round(statistics.median(times["cached"]), 3),
        "recompute_seconds_per_image_batch_estimate": round(args.batch * pixels / rate["recompute"], 3),
    }
    return emit([result], args.out)


if __name__ == "__main__":
    main()
