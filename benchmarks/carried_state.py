"""Random windows against the state carried (truncated BPTT), at equal tokens and equal model, on a
word-level corpus (issue 26): valid/test perplexity under the stream protocol beside the pipeline's
5-gram Kneser-Ney on the same prepared data.

    .venv/bin/python benchmarks/carried_state.py --corpus ../shared/corpora/wikitext-2 \\
        --work /tmp/wt2 --runs lstm:windows lstm:carried gru:windows gru:carried --passes 2 --out carried.json

Each run is ``family:state[:dropout]`` (a 2-layer network of ``--units``, embeddings as wide;
``dropout`` between the layers, on the output and on the embeddings, Zaremba et al. 2014). Every run
trains ``--passes`` passes over the train split's tokens (the same number of optimizer steps and
tokens for both states), Adam with a warm-up and a cosine decay to a tenth, clipping 5, then the
valid and test splits are scored as one stream each with the state carried from the first token to
the last (the evaluate stage's protocol). Prints and saves one JSON line per run.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

try:
    from benchmarks.common import emit
except ModuleNotFoundError:  # run as a script: put the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.common import emit


def prepared(corpus: str, work: Path, vocab_size: int):
    from pipeline.data.prepare import prepare_corpus
    from pipeline.data.prepared import load_prepared
    folder = work / "prepared"
    if not (folder / "stats.json").exists():
        prepare_corpus(str(Path(corpus).resolve()), folder, tokenizer="word", vocab_size=vocab_size)
    return load_prepared(folder)


def ngram_row(data, work: Path, order: int) -> dict:
    from pipeline.models.ngram_external import build_kneser_ney
    from pipeline.paths import NGRAM_FILE
    from pipeline.saved.ngram import SavedNgram
    from pipeline.scoring.protocol import split_scores
    folder = work / f"ngram{order}"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    build_kneser_ney(data.ids["train"], data.tokenizer.vocab_size, order, folder / NGRAM_FILE, memory_mb=2048,
                     tmp_dir=folder, boundary_id=data.boundary_id)
    seconds = time.perf_counter() - t0
    SavedNgram.mark(folder)
    lm = SavedNgram.load(folder).lm
    scores = {s: split_scores(lm.logprob_pieces(data.ids[s]), data.chars(s)) for s in ("valid", "test")}
    return {"run": f"{order}-gram KN", "valid_ppl": scores["valid"]["ppl"], "test_ppl": scores["test"]["ppl"],
            "build_seconds": seconds}


def network_row(spec: str, data, work: Path, a) -> dict:
    from pipeline.config.params import TrainParams
    from pipeline.models import build_model, count_parameters
    from pipeline.models.catalog import get_family
    from pipeline.scoring.protocol import split_scores
    from pipeline.scoring.stream import stream_pieces
    from pipeline.training.loop import train_model
    family_name, state, *rest = spec.split(":")
    dropout = float(rest[0]) if rest else 0.0
    family = get_family(family_name)
    cfg = family.params(family=family_name, embed_dim=a.units, units=a.units, layers=2, dropout=dropout,
                        embed_dropout=dropout, recurrent_init=a.recurrent_init, tie_embeddings=a.tie)
    n_train = len(data.ids["train"])
    steps = math.ceil(a.passes * n_train / (a.batch_size * a.seq_len))
    epochs = a.epochs
    train = TrainParams(seq_len=a.seq_len, batch_size=a.batch_size, epochs=epochs, steps_per_epoch=steps // epochs,
                        steps_per_execution=50, learning_rate=a.lr, min_lr_ratio=0.1, warmup_steps=100,
                        beta2=0.999, clipnorm=5.0, eval_tokens=a.eval_tokens, precision="float32", state=state,
                        keep="best")
    t0 = time.perf_counter()
    result = train_model(cfg, train, data.ids["train"], data.ids["valid"], data.tokenizer.vocab_size, data.data_hash,
                         a.seed, work / "ckpt" / spec.replace(":", "_"), build_model)
    wall = time.perf_counter() - t0
    stepper = family.stepper(result.model, cfg, a.seq_len)
    scores = {s: split_scores(stream_pieces(stepper, data.ids[s]), data.chars(s)) for s in ("valid", "test")}
    return {"run": spec, "family": family_name, "state": result.settings["state"], "dropout": dropout,
            "tied": a.tie, "recurrent_init": a.recurrent_init, "parameters": count_parameters(result.model), "steps": train.epochs * train.steps_per_epoch,
            "tokens": train.epochs * train.steps_per_epoch * a.batch_size * a.seq_len, "train_wall_seconds": wall,
            "tokens_per_second": result.tokens_per_second, "kept_epoch": result.settings["kept_epoch"],
            "valid_ppl": scores["valid"]["ppl"], "test_ppl": scores["test"]["ppl"],
            "curve_valid_ppl": [round(math.exp(h["valid_loss"]), 2) for h in result.history]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(Path(__file__).resolve().parents[2] / "shared/corpora/wikitext-2"),
                    help="a folder with train.txt, valid.txt and test.txt")
    ap.add_argument("--work", required=True, help="a folder for the prepared data, the n-gram and checkpoints")
    ap.add_argument("--vocab-size", type=int, default=10000, help="data.vocab_size (the rest maps to <unk>)")
    ap.add_argument("--runs", nargs="+", default=["lstm:windows", "lstm:carried", "gru:windows", "gru:carried"])
    ap.add_argument("--ngram-order", type=int, default=5, help="0: no n-gram")
    ap.add_argument("--units", type=int, default=200)
    ap.add_argument("--tie", action="store_true", help="tie the embedding and the output layer")
    ap.add_argument("--recurrent-init", default="uniform", choices=("uniform", "default"),
                    help="uniform: PyTorch's; default: Keras's (the LSTM's forget-gate bias at 1)")
    ap.add_argument("--seq-len", type=int, default=35)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--passes", type=float, default=2.0, help="training tokens, in passes over the train split")
    ap.add_argument("--epochs", type=int, default=4, help="validations (and checkpoints) over the training")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-tokens", type=int, default=20000, help="validation tokens scored after each epoch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    data = prepared(a.corpus, work, a.vocab_size)
    common = {"corpus": Path(a.corpus).name, "vocab_size": data.tokenizer.vocab_size,
              "train_tokens": len(data.ids["train"])}

    def rows():
        if a.ngram_order:
            yield common | ngram_row(data, work, a.ngram_order)
        for spec in a.runs:
            yield common | network_row(spec, data, work, a)

    emit(rows(), a.out)


if __name__ == "__main__":
    main()
