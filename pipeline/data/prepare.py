"""Corpus to prepared folder, streamed: memory stays within ``data.memory_mb`` whatever the corpus size.

One pass learns the vocabulary on the training split (:func:`learn_tokenizer` on its pieces), a
second encodes each split piece by piece straight into ``<split>.npy`` (:class:`NpyAppender`),
counting and hashing on the way. The pieces are whole lines, and every tokenizer works line by
line, so the ids, vocabulary and data hash are those of encoding each split in one call.
Everything is written into a temporary sibling folder that replaces the old one at the end:
never a half-written folder.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipeline.data.corpus import SPLITS, CorpusText, open_corpus
from pipeline.data.prepared import finish_hash
from pipeline.data.text_blocks import BLOCK_BYTES
from pipeline.data.tokenizers import Tokenizer, learn_tokenizer
from pipeline.data.vocab_layout import UNK_ID
from pipeline.errors import SeqlabError
from pipeline.io import NpyAppender, replaced_folder, write_json

MIN_SPLIT_TOKENS = 2


def block_bytes(memory_mb: int) -> int:
    """Size of one read: tokenizing a piece takes some 40 bytes per character at its peak."""
    return int(min(BLOCK_BYTES * 2, max(1 << 20, (memory_mb << 20) // 256)))


def prepare_corpus(spec: str, out_dir: Path, *, tokenizer: str, vocab_size: int, lowercase: bool = False,
                   split=(0.9, 0.05, 0.05), sha256: str | None = None, memory_mb: int = 2048,
                   root: Path = Path(".")) -> dict:
    """Open ``spec`` (:func:`open_corpus`) and :func:`prepare` it; returns the stats."""
    corpus = open_corpus(spec, list(split), sha256, root, block_bytes(memory_mb))
    return prepare(corpus, out_dir, tokenizer, vocab_size, lowercase, memory_mb)


def prepare(corpus: CorpusText, out_dir: Path, kind: str, vocab_size: int, lowercase: bool,
            memory_mb: int) -> dict:
    """Learn the vocabulary, encode the splits into ``out_dir`` and return its ``stats.json``."""
    tokenizer = learn_tokenizer(kind, corpus.split("train").chunks(), vocab_size, lowercase, memory_mb)
    with replaced_folder(out_dir) as tmp:
        h = hashlib.sha256()
        splits = {s: _encode_split(corpus, s, tokenizer, tmp / f"{s}.npy", h) for s in SPLITS}
        tokenizer.save(tmp / "vocab.json")
        stats = {"source": corpus.source, "tokenizer": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                 "splits": splits, "cleaning": corpus.hygiene, "data_hash": finish_hash(h, tokenizer)}
        write_json(tmp / "stats.json", stats)
    return stats


def _encode_split(corpus: CorpusText, name: str, tokenizer: Tokenizer, path: Path, h) -> dict:
    """Encode one split into ``path`` piece by piece; its stats. Feeds the ids to the hash ``h``."""
    text = corpus.split(name)
    h.update(name.encode())
    tokens = unk = lines = 0
    with NpyAppender(path, np.int32) as out:
        for piece in text.chunks():
            ids = np.ascontiguousarray(tokenizer.encode(piece), dtype=np.int32)
            out.append(ids)
            h.update(ids.tobytes())
            tokens += ids.size
            unk += int(np.count_nonzero(ids == UNK_ID))
            lines += piece.count("\n")
    if tokens < MIN_SPLIT_TOKENS:
        raise SeqlabError(f"{corpus.source}: corpus too short: the {name} split has {tokens} tokens "
                          f"(at least {MIN_SPLIT_TOKENS} needed); use a longer corpus or change data.split")
    return {"chars": text.chars, "tokens": tokens, "unk_tokens": unk, "lines": lines}
