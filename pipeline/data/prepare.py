"""Corpus to prepared folder, streamed: memory stays within ``data.memory_mb`` whatever the corpus size.

One pass learns the vocabulary on the training split (:func:`learn_tokenizer` on its pieces), a
second encodes each split piece by piece straight into ``<split>.npy`` (:class:`NpyAppender`),
counting and hashing on the way. The pieces are whole lines, and every tokenizer works line by
line, so the ids, vocabulary and data hash are those of encoding each split in one call. With a
loss mask (``score_after``) each split also gets ``<split>_mask.npy`` (:mod:`pipeline.data.loss_mask`),
covered by the data hash: models trained or scored on other targets are never compared. In
examples mode (``data.examples: lines``) each split also gets ``<split>_starts.npy``, its
examples' first token indices (:mod:`pipeline.data.examples`); the mode is in the data hash too.
Everything is written into a temporary sibling folder that replaces the old one at the end:
never a half-written folder.
"""
from __future__ import annotations

import hashlib
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from pipeline.data.corpus import BUILTIN_TEXTS, CorpusText, open_corpus
from pipeline.data.examples import LINES, PAIRS, StartsWriter
from pipeline.data.pairs import SEPARATOR, check_pairs
from pipeline.data.loss_mask import line_end_id, marker_ids, scored_chars, scored_mask
from pipeline.data.prepared import finish_hash
from pipeline.data.splits import SPLITS
from pipeline.data.text_blocks import BLOCK_BYTES
from pipeline.data.tokenizers import CHAR_WORD, Tokenizer, learn_tokenizer
from pipeline.data.vocab_layout import UNK_ID
from pipeline.errors import SeqlabError
from pipeline.io import NpyAppender, replaced_folder, write_json

MIN_SPLIT_TOKENS = 2


def block_bytes(memory_mb: int) -> int:
    """Size of one read: tokenizing a piece takes some 40 bytes per character at its peak."""
    return int(min(BLOCK_BYTES * 2, max(1 << 20, (memory_mb << 20) // 256)))


def prepare_corpus(spec: str, out_dir: Path, *, tokenizer: str, vocab_size: int, lowercase: bool = False,
                   split=(0.9, 0.05, 0.05), sha256: str | None = None, memory_mb: int = 2048,
                   root: Path = Path("."), score_after: str | None = None, examples: str = "stream",
                   max_target_chars: int | None = None) -> dict:
    """Open ``spec`` (:func:`open_corpus`) and :func:`prepare` it; returns the stats."""
    corpus = open_corpus(spec, list(split), sha256, root, block_bytes(memory_mb))
    return prepare(corpus, out_dir, tokenizer, vocab_size, lowercase, memory_mb, score_after, examples,
                   max_target_chars)


def prepare(corpus: CorpusText, out_dir: Path, kind: str, vocab_size: int, lowercase: bool,
            memory_mb: int, score_after: str | None = None, examples: str = "stream",
            max_target_chars: int | None = None) -> dict:
    """Learn the vocabulary, encode the splits into ``out_dir`` and return its ``stats.json``. Pairs
    (``examples: pairs``) are checked first, every line of every split, and score their targets:
    the text after the tab is the loss mask's scored part."""
    if (examples == PAIRS and kind not in ("char", CHAR_WORD)) or (kind == CHAR_WORD and examples != PAIRS):
        raise ValueError(f"examples: pairs takes the char or {CHAR_WORD} tokenizer and {CHAR_WORD} takes pairs "
                         f"only; got the {kind} tokenizer with examples: {examples}")
    if examples == PAIRS:
        check_paired(corpus, max_target_chars)
        score_after = SEPARATOR
    reserve = (score_after,) if score_after else ()
    tokenizer = learn_tokenizer(kind, corpus.split("train").chunks(), vocab_size, lowercase, memory_mb, reserve)
    with replaced_folder(out_dir) as tmp:
        h = hashlib.sha256()
        splits = {s: _encode_split(corpus, s, tokenizer, tmp, h, score_after, examples) for s in SPLITS}
        tokenizer.save(tmp / "vocab.json")
        if score_after:
            h.update(f"score_after={score_after}".encode())
        if examples in (LINES, PAIRS):
            h.update(f"examples={examples}".encode())
        stats = {"source": corpus.source, "tokenizer": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                 "splits": splits, "cleaning": corpus.hygiene, "data_hash": finish_hash(h, tokenizer)}
        if score_after:
            stats["score_after"] = score_after
        notation = BUILTIN_TEXTS[corpus.source].notation if corpus.source in BUILTIN_TEXTS else None
        if notation:        # music: the evaluate stage checks and exports the sampled tunes
            stats["notation"] = notation
        if examples in (LINES, PAIRS):     # and the token that ends one (-1: none, every split is one example)
            stats |= {"examples": examples, "example_end": line_end_id(tokenizer)}
        write_json(tmp / "stats.json", stats)
    return stats


def check_paired(corpus: CorpusText, max_target_chars: int | None) -> None:
    """Every line of every split is ``source<TAB>target`` (:class:`pipeline.data.pairs.PairChecker`),
    its errors numbered as lines of the file they are in (splits of one file follow each other)."""
    lines_before: dict[tuple[str, int], int] = {}    # (file, the character a split ends at) -> its lines
    for name in SPLITS:
        split = corpus.split(name)
        where = split.file.where
        first = lines_before.get((where, split.start), 0) + 1
        n = check_pairs(where, split.chunks(), SEPARATOR, max_target_chars, first_line=first)
        lines_before[(where, split.end)] = first - 1 + n


def _encode_split(corpus: CorpusText, name: str, tokenizer: Tokenizer, folder: Path, h,
                  score_after: str | None, examples: str = "stream") -> dict:
    """Encode one split into ``folder/<name>.npy`` (and its loss mask, and its example starts)
    piece by piece; its stats. Feeds the ids and the mask to the hash ``h``."""
    text = corpus.split(name)
    h.update(name.encode())
    tokens = unk = lines = scored = chars = 0
    line_end = line_end_id(tokenizer)
    if score_after:
        marker = marker_ids(tokenizer, score_after)
    with NpyAppender(folder / f"{name}.npy", np.int32) as out, \
            (NpyAppender(folder / f"{name}_mask.npy", np.uint8) if score_after else nullcontext()) as masks, \
            (NpyAppender(folder / f"{name}_starts.npy", np.int64) if examples in (LINES, PAIRS)
             else nullcontext()) as sts:
        starts = StartsWriter(sts) if sts is not None else None
        for piece in text.chunks():
            ids = np.ascontiguousarray(tokenizer.encode(piece), dtype=np.int32)
            out.append(ids)
            if starts is not None:
                starts.add(ids, line_end, tokens)
            h.update(ids.tobytes())
            tokens += ids.size
            unk += int(np.count_nonzero(ids == UNK_ID))
            lines += piece.count("\n")
            if masks is not None:
                mask = scored_mask(ids, marker, line_end, include_end=examples == PAIRS)
                masks.append(mask)
                h.update(mask.tobytes())
                n = int(np.count_nonzero(mask))
                scored += n
                # one token a character: the scored characters are the scored tokens, no walk of the text
                # (pairs score their line ends, a character each, whatever tokenizes their targets)
                chars += n if tokenizer.kind == "char" else scored_chars(
                    piece, score_after, bool(tokenizer.options.get("lowercase")), include_end=examples == PAIRS)
        if starts is not None:
            starts.close(tokens)
    if tokens < MIN_SPLIT_TOKENS:
        raise SeqlabError(f"{corpus.source}: corpus too short: the {name} split has {tokens} tokens "
                          f"(at least {MIN_SPLIT_TOKENS} needed); use a longer corpus or change data.split")
    stats = {"chars": text.chars, "tokens": tokens, "unk_tokens": unk, "lines": lines}
    if starts is not None:
        stats["examples"] = starts.count
    if score_after:
        if not scored:
            raise SeqlabError(f"data.score_after: no line of the {name} split of {corpus.source} has text after "
                              f"{score_after!r}; expected lines like 'prompt {score_after} answer'")
        stats |= {"scored_tokens": scored, "scored_chars": chars}
    return stats
