"""Benchmark the interpolated modified Kneser-Ney model (pipeline.models.ngram) against KenLM's reference numbers.

Word level (WikiText-2 protocol = KenLM's per-line protocol):
    python benchmarks/ngram.py --train T --valid V --test X --tokenizer word --order 5
  each line -> its whitespace-separated words + one end-of-line token; the end-of-line token is the
  boundary (context resets to BOS after it) and is predicted and counted in perplexity.
Character level (Tiny Shakespeare, nanoGPT split, stream protocol):
    python benchmarks/ngram.py --train input.txt --split 0.9 --tokenizer char --order 5
  Unicode code points; the first 90% of the characters train, the rest is validation, scored as one
  stream whose first character is conditioned on BOS (newlines are ordinary predicted characters).

Vocabulary from the training split: 0 = BOS, 1 = <unk>, then the end-of-line token (word level), then
symbols in order of first appearance; unseen valid/test symbols map to <unk>.
Prints one JSON object (and writes it to --out if given).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

try:
    from pipeline.models.ngram import KneserNeyLM
    from pipeline.data.vocab_layout import BOS, BOS_ID, EOL, UNK, UNK_ID
except ModuleNotFoundError:  # run as a script from anywhere: put the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.models.ngram import KneserNeyLM
    from pipeline.data.vocab_layout import BOS, BOS_ID, EOL, UNK, UNK_ID


def read_text(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


class WordTokenizer:
    """Whitespace words per line plus one end-of-line token per line."""

    def __init__(self, train_text: str):
        self.vocab: dict[str, int] = {BOS: BOS_ID, UNK: UNK_ID, EOL: 2}
        for line in train_text.split("\n")[:-1] if train_text.endswith("\n") else train_text.split("\n"):
            for w in line.split():
                if w not in self.vocab:
                    self.vocab[w] = len(self.vocab)
        self.eol_id = self.vocab[EOL]

    def encode(self, text: str) -> np.ndarray:
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()
        get, unk, eol = self.vocab.get, UNK_ID, self.eol_id
        ids: list[int] = []
        for line in lines:
            ids.extend([get(w, unk) for w in line.split()])
            ids.append(eol)
        return np.array(ids, dtype=np.int64)


class CharTokenizer:
    """Unicode code points."""

    def __init__(self, train_text: str):
        cps = np.frombuffer(train_text.encode("utf-32-le"), dtype=np.uint32)
        _, first = np.unique(cps, return_index=True)
        symbols = cps[np.sort(first)]  # order of first appearance
        self.table = {int(c): i + 2 for i, c in enumerate(symbols)}
        self.vocab = {BOS: BOS_ID, UNK: UNK_ID, **{chr(c): i for c, i in self.table.items()}}
        self.eol_id = None
        self._cps = np.array(sorted(self.table), dtype=np.int64)
        self._ids = np.array([self.table[c] for c in self._cps.tolist()], dtype=np.int64)

    def encode(self, text: str) -> np.ndarray:
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        pos = np.minimum(np.searchsorted(self._cps, cps), self._cps.size - 1)
        hit = self._cps[pos] == cps
        return np.where(hit, self._ids[pos], UNK_ID)


def evaluate(model: KneserNeyLM, ids: np.ndarray, n_chars: int) -> dict:
    lp = model.logprobs(ids)
    nll = -float(lp.sum())
    return {"ppl": math.exp(nll / ids.size), "bpc": nll / math.log(2) / n_chars,
            "nats_per_token": nll / ids.size, "tokens": int(ids.size), "chars": int(n_chars)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid")
    ap.add_argument("--test")
    ap.add_argument("--split", type=float, help="use the first SPLIT of --train's characters to train, the rest as valid")
    ap.add_argument("--tokenizer", choices=["word", "char"], default="word")
    ap.add_argument("--order", type=int, default=5)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    if (args.valid is None) == (args.split is None):
        ap.error("give exactly one of --valid or --split")

    t0 = time.perf_counter()
    train_text = read_text(args.train)
    if args.split is not None:
        cut = int(len(train_text) * args.split)
        train_text, valid_text = train_text[:cut], train_text[cut:]
    else:
        valid_text = read_text(args.valid)
    test_text = read_text(args.test) if args.test else None
    tok = WordTokenizer(train_text) if args.tokenizer == "word" else CharTokenizer(train_text)
    train_ids = tok.encode(train_text)
    valid_ids = tok.encode(valid_text)
    test_ids = tok.encode(test_text) if test_text is not None else None
    V = len(tok.vocab)
    t1 = time.perf_counter()

    model = KneserNeyLM.fit(train_ids, V, args.order, boundary_id=tok.eol_id, progress=args.progress)
    t2 = time.perf_counter()
    valid = evaluate(model, valid_ids, len(valid_text))
    test = evaluate(model, test_ids, len(test_text)) if test_ids is not None else None
    t3 = time.perf_counter()

    result = {
        "order": args.order, "tokenizer": args.tokenizer,
        "protocol": "stream" if tok.eol_id is None else "boundary (end-of-line token, context resets per line)",
        "train": args.train, "split": args.split,
        "tokens": int(train_ids.size), "vocab_size": V,
        "valid_ppl": valid["ppl"], "valid_bpc": valid["bpc"], "valid_nats_per_token": valid["nats_per_token"],
        "valid_tokens": valid["tokens"], "valid_chars": valid["chars"],
    }
    if test is not None:
        result.update({"test_ppl": test["ppl"], "test_bpc": test["bpc"], "test_nats_per_token": test["nats_per_token"],
                       "test_tokens": test["tokens"], "test_chars": test["chars"]})
    result.update({
        "tokenize_seconds": round(t1 - t0, 3), "build_seconds": round(t2 - t1, 3),
        "score_seconds": round(t3 - t2, 3), "build_and_score_seconds": round(t3 - t1, 3),
        "total_seconds": round(t3 - t0, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "discounts": {str(k): v for k, v in model.discounts.items()},
        "fallback_orders": model.fallback_orders,
        "num_ngrams": {str(k): v for k, v in model.num_ngrams.items()},
        "parameters": model.parameters,
    })
    line = json.dumps(result)
    print(line)
    if args.out:
        Path(args.out).write_text(line + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
