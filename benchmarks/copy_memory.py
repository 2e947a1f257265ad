"""Long-memory probe: the copy-memory task (Bai, Kolter and Koltun 2018) through the pipeline's own
corpus option, training loop and scoring, on demand, never in `make run`.

Each line of the corpus is ten symbols drawn from 1-8, T - 1 blanks (0), the delimiter 9, then the
ten symbols again, then a line end: ``31415926...0000009 3141592...``. As a sequence model
p(x) = prod p(x_t | x_<t), the ten copies are the targets, and ``data.score_after: "9"`` (a loss
mask, :mod:`pipeline.data.loss_mask`) trains and scores only them: each lies T + 10 tokens after
the symbol it repeats. Unlike the paper's inputs, the copies already written are visible, but the
symbols are independent, so they tell nothing about the next one: without memory of the first ten
symbols no model beats the memoryless baseline, the entropy of the target symbols, which is
computed here from the training targets (about ln 8 = 2.079 nats).

Every family gets the same parameter budget (its width is searched to come closest), the same
training settings and steps, and a window that holds two lines (the scoring protocol then gives
every target its whole line). Prints and saves one JSON line per (family, T): accuracy and loss on
the ten target positions of every test line, the pipeline's masked test score, and the baseline.

    python benchmarks/copy_memory.py --delay 50 --steps 300
    python benchmarks/copy_memory.py --delay 50 --delay 200 --delay 1000 --out copy.json
    python benchmarks/copy_memory.py --corpus data/copy-memory --delay 200   # only write the corpus
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import emit  # noqa: E402

RECALL, SYMBOLS, MARKER = 10, "12345678", "9"
BLANK = "0"


def copy_lines(rng: np.random.Generator, lines: int, delay: int) -> str:
    """``lines`` copy-memory lines: RECALL symbols, ``delay - 1`` blanks, the marker, the symbols."""
    out = []
    for row in rng.integers(0, len(SYMBOLS), (lines, RECALL)):
        symbols = "".join(SYMBOLS[i] for i in row)
        out.append(symbols + BLANK * (delay - 1) + MARKER + symbols + "\n")
    return "".join(out)


def write_corpus(folder: Path, delay: int, train_lines: int, test_lines: int, seed: int) -> None:
    """A corpus folder (train/valid/test.txt) of copy-memory lines with this delay."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, delay])
    for split, n in (("train", train_lines), ("valid", test_lines), ("test", test_lines)):
        (folder / f"{split}.txt").write_text(copy_lines(rng, n, delay))


def family_cfg(family: str, budget: int, span: int, vocab: int, seq_len: int, kernel_size: int = 2):
    """The family's parameters whose size comes closest to ``budget`` (its width searched; embedding
    16, one layer), with a receptive field of at least ``span`` tokens for a convolution (dilations
    1, 2, 4, ... of kernels of ``kernel_size`` >= 2)."""
    from pipeline.models import build_model, count_parameters
    from pipeline.models.catalog import get_family
    params = get_family(family).params
    known = {f.name for f in dataclasses.fields(params)}
    attention = "heads" in known               # its width is the embedding's; two layers of two heads
    fixed = {"layers": 2 if attention else 1, "heads": 2, "embed_dim": 16, "kernel_size": kernel_size,
             "dropout": 0.0}
    if "dilations" in known:
        dilations = []
        while 1 + (kernel_size - 1) * sum(dilations) < span:
            dilations.append(2 ** len(dilations))
        fixed["dilations"] = dilations

    def cfg(width: int):
        wanted = fixed | {"units": width} | ({"embed_dim": width} if attention else {})
        return params(family=family, **{k: v for k, v in wanted.items() if k in known})

    def size(width: int) -> int:
        return count_parameters(build_model(cfg(width), vocab, seq_len))

    widths = list(range(2, 513, 2))
    lo, hi = 0, len(widths) - 1
    while lo < hi:                              # the smallest width at or above the budget
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if size(widths[mid]) < budget else (lo, mid)
    best = min({widths[max(lo - 1, 0)], widths[lo]}, key=lambda w: abs(size(w) - budget))
    return cfg(best)


def memoryless_loss(data) -> float:
    """Cross-entropy (nats) on the test targets of the best prediction that remembers nothing: the
    frequencies of the training targets."""
    train = np.asarray(data.ids["train"])[np.asarray(data.mask("train")) == 1]
    test = np.asarray(data.ids["test"])[np.asarray(data.mask("test")) == 1]
    p = np.bincount(train, minlength=data.tokenizer.vocab_size) / len(train)
    return float(-np.mean(np.log(p[test])))


def recall_scores(model, data, seq_len: int) -> tuple[float, float]:
    """(accuracy, mean loss in nats) on the ten targets of every test line, each read in a window
    that ends at the line's last target and holds the whole line."""
    from pipeline.data.windows import window_rows
    from pipeline.scoring.stream import log_softmax
    ids, mask = np.asarray(data.ids["test"]), np.asarray(data.mask("test")).astype(bool)
    last = np.flatnonzero(mask[:-1] & ~mask[1:]) + 1      # stream position of each line's last target
    last = last[last >= seq_len]
    acc, loss = [], []
    for i in range(0, len(last), 32):
        w = window_rows(ids, last[i:i + 32] - seq_len, seq_len + 1)
        logp = log_softmax(np.asarray(model(w[:, :-1], training=False), np.float64)[:, -RECALL:])
        y = w[:, -RECALL:]
        acc.append(logp.argmax(-1) == y)
        loss.append(-np.take_along_axis(logp, y[..., None], -1)[..., 0])
    return float(np.concatenate(acc).mean()), float(np.concatenate(loss).mean())


def run(family: str, delay: int, data, args) -> dict:
    import keras
    from pipeline.config.params import TrainParams
    from pipeline.models import build_model, count_parameters
    from pipeline.models.network import Network
    from pipeline.scoring.protocol import network_pieces, split_scores
    from pipeline.training.loop import train_model
    line = delay + 2 * RECALL + 1
    seq_len = 1 << (2 * line - 1).bit_length()            # two lines at least
    keras.utils.set_random_seed(args.seed)
    cfg = family_cfg(family, args.budget, delay + RECALL + 1, data.tokenizer.vocab_size, seq_len, args.kernel_size)
    train = TrainParams(seq_len=seq_len, batch_size=args.batch, epochs=1, steps_per_epoch=args.steps,
                        steps_per_execution=min(args.steps, 25), learning_rate=args.lr, warmup_steps=20,
                        min_lr_ratio=0.1, clipnorm=1.0, eval_tokens=8 * seq_len)
    with tempfile.TemporaryDirectory() as ckpt:
        r = train_model(cfg, train, data.ids["train"], data.ids["valid"], data.tokenizer.vocab_size,
                        data.data_hash, args.seed, Path(ckpt), build_model,
                        train_mask=data.mask("train"), valid_mask=data.mask("valid"))
    accuracy, loss = recall_scores(r.model, data, seq_len)
    pieces, protocol = network_pieces(Network(r.model, cfg, seq_len, data.tokenizer.vocab_size), data.ids["test"],
                                      0.5, 16)
    scored = split_scores(pieces, data.chars("test"), data.mask("test"))
    extra = {"kernel_size": cfg.kernel_size, "blocks": len(cfg.dilations)} if hasattr(cfg, "dilations") else {}
    return extra | {"family": family, "delay": delay, "parameters": count_parameters(r.model),
            "width": cfg.units, "steps": args.steps, "batch": args.batch, "seq_len": seq_len,
            "recall_accuracy": accuracy, "recall_loss": loss, "memoryless_loss": memoryless_loss(data),
            "test_nll_pipeline": scored["nll"], "scored_test_tokens": scored["tokens"],
            "protocol": protocol["protocol"], "train_seconds": r.train_seconds, "seed": args.seed}


def run_ngram(delay: int, data, args) -> dict:
    """The Kneser-Ney n-gram of ``--ngram-order``: it sees at most order - 1 tokens, never the symbols."""
    from pipeline.models.ngram import KneserNeyLM
    from pipeline.scoring.protocol import split_scores
    t0 = time.perf_counter()
    lm = KneserNeyLM.fit(np.asarray(data.ids["train"]), data.tokenizer.vocab_size, args.ngram_order)
    seconds = time.perf_counter() - t0
    test, mask = np.asarray(data.ids["test"]), np.asarray(data.mask("test")).astype(bool)
    scored = split_scores(lm.logprob_pieces(test), data.chars("test"), mask)
    return {"family": f"ngram{args.ngram_order}", "delay": delay, "parameters": int(lm.parameters),
            "recall_loss": scored["nll"], "test_nll_pipeline": scored["nll"], "memoryless_loss": memoryless_loss(data),
            "scored_test_tokens": scored["tokens"], "protocol": "stream", "train_seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", action="append", help="a built-in family or module:Name, repeatable; default all")
    ap.add_argument("--delay", type=int, action="append", help="T, the blanks between symbols and delimiter "
                    "(repeatable; default 50)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--budget", type=int, default=12000, help="parameters per model")
    ap.add_argument("--kernel-size", type=int, default=2, help="the convolution's kernel")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-tokens", type=int, default=1_500_000, help="size of the training split")
    ap.add_argument("--ngram-order", type=int, default=7, help="the n-gram row's order (0: none)")
    ap.add_argument("--corpus", help="only write the corpus folder here (for `make run` with data.score_after)")
    ap.add_argument("--out", help="also write the JSON lines to this file")
    args = ap.parse_args()
    delays = args.delay or [50]
    if args.kernel_size < 2:
        ap.error("--kernel-size: expected at least 2 (a kernel of 1 never reaches back)")
    if args.corpus:
        for d in delays:
            write_corpus(Path(args.corpus), d, max(200, args.train_tokens // (d + 21)), 128, args.seed)
        return
    from pipeline.data.prepare import prepare_corpus
    from pipeline.data.prepared import load_prepared
    from pipeline.models.catalog import builtin_families
    families = args.family or list(builtin_families())

    def rows():
        for delay in delays:
            with tempfile.TemporaryDirectory() as tmp:
                corpus = Path(tmp) / "corpus"
                write_corpus(corpus, delay, max(200, args.train_tokens // (delay + 21)), 128, args.seed)
                prepare_corpus(str(corpus), Path(tmp) / "prepared", tokenizer="char", vocab_size=64,
                               score_after=MARKER)
                data = load_prepared(Path(tmp) / "prepared")
                if args.ngram_order:
                    yield run_ngram(delay, data, args) | {"chance_loss": math.log(len(SYMBOLS))}
                for family in families:
                    t0 = time.perf_counter()
                    row = run(family, delay, data, args)
                    yield row | {"seconds": time.perf_counter() - t0, "chance_loss": math.log(len(SYMBOLS))}

    emit(rows(), args.out)


if __name__ == "__main__":
    main()
