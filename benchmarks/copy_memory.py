"""Long-memory probe: the copy-memory task (Bai, Kolter and Koltun 2018), on demand, never in `make run`.

Each sequence is 10 random symbols (8 kinds), ``delay`` blanks, a delimiter and 10 more blanks;
the model must output the 10 symbols over the last 10 positions. Only those positions are
trained and scored, so chance is ln 8 = 2.079 nats per symbol: a model that cannot keep ``delay``
+ 10 tokens in memory stays there (a convolution whose receptive field is shorter cannot even
see the symbols). Prints one JSON line per family: recall loss and accuracy after ``--steps``.

    python benchmarks/copy_memory.py --delay 50 --steps 400
    python benchmarks/copy_memory.py --family lstm --family conv --delay 100 --out copy.json
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import emit  # noqa: E402

SYMBOLS, RECALL = 8, 10
FIRST = 2                          # ids 0 and 1 are <bos> and <unk> (pipeline.data.vocab_layout)
BLANK, DELIM = FIRST + SYMBOLS, FIRST + SYMBOLS + 1
VOCAB = DELIM + 1


def copy_batch(rng: np.random.Generator, batch: int, delay: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, weights) of shape (batch, delay + 2·RECALL): weight 1 on the recall positions."""
    length = delay + 2 * RECALL
    symbols = rng.integers(FIRST, FIRST + SYMBOLS, (batch, RECALL))
    x = np.full((batch, length), BLANK, np.int32)
    x[:, :RECALL] = symbols
    x[:, RECALL + delay - 1] = DELIM          # the last RECALL inputs follow the delimiter
    y = np.full((batch, length), BLANK, np.int32)
    y[:, -RECALL:] = symbols
    w = np.zeros((batch, length), np.float32)
    w[:, -RECALL:] = 1.0
    return x, y, w


def model_cfg(family: str, width: int, layers: int, delay: int):
    """The family's default parameters with this width, layer count and (for a convolution) enough
    dilations to see the whole sequence."""
    from pipeline.models.registry import get_family
    params = get_family(family).params
    known = {f.name for f in dataclasses.fields(params)}
    wanted = {"units": width, "layers": layers, "embed_dim": min(64, width)}
    if "dilations" in known:
        span, dilations = delay + 2 * RECALL, []
        while 1 + sum(dilations) < span:
            dilations.append(2 ** len(dilations))
        wanted["dilations"] = dilations
    return params(family=family, **{k: v for k, v in wanted.items() if k in known})


def run(family: str, args) -> dict:
    import keras
    from pipeline.models import build_model, count_parameters
    from pipeline.scoring.stream import log_softmax
    keras.utils.set_random_seed(args.seed)
    cfg = model_cfg(family, args.width, args.layers, args.delay)
    model = build_model(cfg, VOCAB, args.delay + 2 * RECALL)
    model.compile(optimizer=keras.optimizers.Adam(args.lr, clipnorm=1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), weighted_metrics=[])
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        model.train_on_batch(*copy_batch(rng, args.batch, args.delay))
    seconds = time.perf_counter() - t0
    x, y, _ = copy_batch(np.random.default_rng(args.seed + 1), 256, args.delay)
    logits = np.asarray(model.predict_on_batch(x), np.float64)[:, -RECALL:]
    logp = log_softmax(logits)
    target = y[:, -RECALL:]
    loss = float(-np.take_along_axis(logp, target[..., None], -1).mean())
    return {"family": family, "delay": args.delay, "steps": args.steps, "parameters": count_parameters(model),
            "recall_loss": loss, "chance_loss": math.log(SYMBOLS),
            "recall_accuracy": float((logits.argmax(-1) == target).mean()), "train_seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", action="append", help="a built-in family or module:Name, repeatable; default all")
    ap.add_argument("--delay", type=int, default=50, help="blanks between the symbols and the delimiter")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the JSON lines to this file")
    args = ap.parse_args()
    from pipeline.models.registry import builtin_families
    families = args.family or list(builtin_families())
    emit((run(f, args) for f in families), args.out)


if __name__ == "__main__":
    main()
