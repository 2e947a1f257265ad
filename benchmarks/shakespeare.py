"""Train and score a preset's networks on a character corpus with nanoGPT's 90/10 split.

Prints one JSON object per network: preset, family, parameters, steps, wall_seconds (training,
compilation included), train_tokens_per_second (steady state), valid_loss_windowed_nats
(nanoGPT's protocol: mean cross-entropy over non-overlapping windows of the context length, each
from a fresh context) and valid_bpc_stream (seqlab's protocol: RNN state carried across the whole
validation text, windowed models with a stride of half a context).

    python benchmarks/shakespeare.py --preset nanogpt-baby --corpus ../shared/corpora/tinyshakespeare/input.txt
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline.data.text_blocks import decode_utf8  # noqa: E402
from pipeline.scoring.protocol import network_logprobs, split_metrics, windowed_logprobs  # noqa: E402
from pipeline.config.params import read_yaml  # noqa: E402
from pipeline.config.presets import preset_params  # noqa: E402
from pipeline.models.catalog import model_configs  # noqa: E402
from pipeline.data.tokenizers import learn_tokenizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", required=True)
    ap.add_argument("--corpus", required=True, help="a UTF-8 text file (e.g. Tiny Shakespeare's input.txt)")
    ap.add_argument("--arch", action="append", help="only this network of the preset (repeatable)")
    ap.add_argument("--train-fraction", type=float, default=0.9)
    ap.add_argument("--out", help="also write the JSON lines to this file")
    args = ap.parse_args()

    root = Path(__file__).resolve().parents[1]
    _, params = preset_params(args.preset, read_yaml(root / "params.yaml"))
    configs = model_configs(params, f"params.yaml + presets/{args.preset}.yaml")
    unknown = sorted(set(args.arch or []) - set(params.models))
    if unknown:
        ap.error(f"--arch {', '.join(unknown)}: not in preset {args.preset} ({', '.join(params.models)})")
    text = decode_utf8(Path(args.corpus).read_bytes(), args.corpus)
    cut = int(len(text) * args.train_fraction)  # nanoGPT: first 90% of characters train, the rest validation
    tok = learn_tokenizer("char", text[:cut], vocab_size=10_000)
    train_ids, valid_ids = tok.encode(text[:cut]), tok.encode(text[cut:])

    from pipeline.models import build_model
    from pipeline.models.network import Network
    from pipeline.training.loop import train_model

    lines = []
    for arch in args.arch or params.models:
        m, t = configs[arch], params.train_for(arch)
        ckpt = Path("/tmp") / f"seqlab-bench-{args.preset}-{arch}-{os.getpid()}"
        t0 = time.perf_counter()
        result = train_model(m, t, train_ids, valid_ids, tok.vocab_size, "benchmark", params.seed, ckpt, build_model)
        wall = time.perf_counter() - t0
        (ckpt / "last.npz").unlink(missing_ok=True)
        model = result.model
        windowed = windowed_logprobs(model, valid_ids, t.seq_len, t.seq_len, params.eval.batch_size)
        stream, protocol = network_logprobs(Network(model, m, t.seq_len, tok.vocab_size), valid_ids,
                                            params.eval.stride_fraction, params.eval.batch_size)
        stream_metrics = split_metrics(stream, len(text) - cut)
        row = {"preset": args.preset, "arch": arch, "family": m.family, "parameters": int(model.count_params()),
               "steps": result.steps, "batch_size": t.batch_size, "context": t.seq_len,
               "wall_seconds": round(wall, 1), "train_seconds": round(result.train_seconds, 1),
               "train_tokens_per_second": round(result.tokens_per_second),
               "valid_loss_windowed_nats": round(-float(windowed.mean()), 4),
               "valid_nats_stream": round(stream_metrics["nll"], 4),
               "valid_bpc_stream": round(stream_metrics["bpc"], 4),
               "valid_tokens": len(valid_ids), "protocol": protocol, "settings": result.settings}
        print(json.dumps(row), flush=True)
        lines.append(row)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in lines))


if __name__ == "__main__":
    main()
