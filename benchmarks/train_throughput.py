"""Training throughput per model family: tokens/s, achieved GFLOP/s and the fraction of the matmul peak.

FLOPs per token come from the family (``Family.flops_per_token``): by default every weight matrix
of a layer that runs once per token costs 2 FLOPs per weight forward (6 with the backward pass),
which covers dense, recurrent and convolution kernels; the Transformer adds its attention,
12 * layers * width * context per token (nanoGPT's estimate_mfu). The peak is the faster of TensorFlow's two float32 4096x4096 matrix
products (with and without XLA), measured in the same run.

    python benchmarks/train_throughput.py --family transformer --layers 6 --heads 6 --width 192 --context 128 --batch 32
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import emit, matmul_peak_gflops  # noqa: E402

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", action="append",
                    help="a built-in family or module:Name, repeatable; default every built-in family")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--width", type=int, default=256, help="RNN units, conv channels or Transformer width")
    ap.add_argument("--embed", type=int, default=0, help="embedding size (default: 64, or the width for transformers)")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--steps", type=int, default=60, help="steps measured after the compiling call")
    ap.add_argument("--steps-per-execution", type=int, default=20)
    ap.add_argument("--jit", choices=("auto", "true", "false"), default="auto")
    ap.add_argument("--out", help="also write the JSON lines to this file")
    args = ap.parse_args()

    from pipeline.config.params import TrainParams
    from pipeline.models import build_model
    from pipeline.models.catalog import builtin_families, get_family
    from pipeline.training.loop import train_model

    ids = np.random.default_rng(0).integers(2, args.vocab, 400_000).astype(np.int32)
    shape = {"embed_dim": args.embed or 64, "units": args.width, "layers": args.layers, "heads": args.heads,
             "dilations": [1, 2, 4, 8, 16, 32, 64][: max(1, args.layers * 3)]}

    def measure(family):
        fam = get_family(family, "--family")
        known = {f.name for f in dataclasses.fields(fam.params)}
        # the shape arguments the family has; a Transformer's embedding defaults to its width
        fields = {k: v for k, v in shape.items() if k in known}
        if "heads" in known:
            fields.update(embed_dim=args.embed or args.width, embed_init="default")
        m = fam.params(family=family, **fields)
        spe = args.steps_per_execution
        t = TrainParams(seq_len=args.context, batch_size=args.batch, epochs=1, steps_per_epoch=args.steps + spe,
                        steps_per_execution=spe, warmup_steps=0, eval_tokens=args.context, jit_compile=args.jit)
        ckpt = Path("/tmp") / f"seqlab-throughput-{family}-{os.getpid()}"
        result = train_model(m, t, ids, ids[:2000], args.vocab, "throughput", 0, ckpt, build_model)
        (ckpt / "last.npz").unlink(missing_ok=True)
        peak = matmul_peak_gflops()
        fpt = fam.flops_per_token(result.model, m, args.context)
        achieved = fpt * result.tokens_per_second / 1e9
        row = {"family": family, "parameters": int(result.model.count_params()),
               "tokens_per_second": round(result.tokens_per_second), "train_flops_per_token": fpt,
               "gflops_per_second": round(achieved, 1), "peak_gflops": round(peak, 1),
               "fraction_of_peak": round(achieved / peak, 3),
               "shape": {k: v for k, v in m.as_dict().items() if k not in ("family", "train")}
               | {"context": args.context, "batch": args.batch},
               "jit_compile": result.settings["jit_compile"]}
        return row

    emit((measure(family) for family in args.family or list(builtin_families())), args.out)


if __name__ == "__main__":
    main()
