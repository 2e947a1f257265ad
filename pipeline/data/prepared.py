"""The prepared-data folder: token ids per split, the vocabulary, and corpus statistics.

``stats.json`` holds what every metric needs (characters per split for bits per character) and a
``data_hash`` over ids and vocabulary, recorded on MLflow runs and model versions so that the
promotion gate only compares models evaluated on the same data.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.corpus import SPLITS, Corpus
from pipeline.errors import SeqlabError
from pipeline.io import read_json, write_json, write_npy
from pipeline.data.tokenizers import Tokenizer, load_tokenizer

MIN_SPLIT_TOKENS = 2


@dataclass
class PreparedData:
    ids: dict[str, np.ndarray]
    tokenizer: Tokenizer
    stats: dict

    @property
    def data_hash(self) -> str:
        return self.stats["data_hash"]

    def chars(self, split: str) -> int:
        return int(self.stats["splits"][split]["chars"])


def data_hash(ids: dict[str, np.ndarray], tokenizer: Tokenizer) -> str:
    h = hashlib.sha256()
    for s in SPLITS:
        h.update(s.encode())
        h.update(np.ascontiguousarray(ids[s], dtype=np.int32).tobytes())
    h.update(repr(tokenizer.to_json()).encode())
    return h.hexdigest()[:16]


def build_prepared(corpus: Corpus, tokenizer: Tokenizer) -> PreparedData:
    ids = {s: tokenizer.encode(corpus.split(s)) for s in SPLITS}
    for s in SPLITS:
        if len(ids[s]) < MIN_SPLIT_TOKENS:
            raise SeqlabError(f"{corpus.source}: corpus too short: the {s} split has {len(ids[s])} tokens "
                              f"(at least {MIN_SPLIT_TOKENS} needed); use a longer corpus or change data.split")
    splits = {}
    for s in SPLITS:
        a = ids[s]
        splits[s] = {"chars": len(corpus.split(s)), "tokens": int(len(a)),
                     "unk_tokens": int(np.sum(a == 1)), "lines": corpus.split(s).count("\n")}
    stats = {"source": corpus.source, "tokenizer": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
             "splits": splits, "cleaning": corpus.hygiene, "data_hash": data_hash(ids, tokenizer)}
    return PreparedData(ids, tokenizer, stats)


def save_prepared(data: PreparedData, out_dir: Path) -> None:
    """Write into a temporary sibling folder, then swap it in: never a half-written folder."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for s in SPLITS:
            write_npy(tmp / f"{s}.npy", data.ids[s].astype(np.int32))
        data.tokenizer.save(tmp / "vocab.json")
        write_json(tmp / "stats.json", data.stats)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def load_prepared(folder: Path) -> PreparedData:
    folder = Path(folder)
    if not (folder / "stats.json").exists():
        raise SeqlabError(f"{folder}: no prepared data (run `dvc repro prepare` first)")
    ids = {s: np.load(folder / f"{s}.npy", allow_pickle=False) for s in SPLITS}
    return PreparedData(ids, load_tokenizer(folder / "vocab.json"), read_json(folder / "stats.json"))
