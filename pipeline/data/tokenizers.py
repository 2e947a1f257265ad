"""Tokenizers built on tensorflow-text: ``char``, ``word``, ``wordpiece`` and ``char+word``.

Every vocabulary starts with the reserved ids of ``pipeline.data.vocab_layout`` (``<bos>`` 0, ``<unk>`` 1);
word and wordpiece add ``<eol>``, one per line of text, which is predicted like any token. The saved
vocabulary records the tokenizer and its options, so decoding and serving need nothing else.

``char+word`` is for pair lines ``source<TAB>target`` (``data.target_tokenizer: word``): the source,
the tab and the line end are characters, the target is its whitespace-separated words (phonemes,
the words of a translation), one token each. The two kinds of token have id ranges of their own
(the words from ``options["words_from"]``), so a letter of a source and a one-letter word of a
target are different tokens, and a target decoded on its own comes back with its spaces.

``pixels`` is an image corpus's (:mod:`pipeline.data.image_layout`): its vocabulary is the
layout's, not learned; as text an image is its label token, a tab, its levels as words, a newline.
"""
from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from pipeline.data.counting import BYTES_PER_TYPE, Counts
from pipeline.data.image_layout import PIXELS
from pipeline.data.pairs import SEPARATOR
from pipeline.errors import SeqlabError
from pipeline.io import read_json, write_json
from pipeline.data.vocab_layout import BOS, BOS_ID, EOL, UNK, UNK_ID

FORMAT_VERSION = 1
_PIXEL_WORDS = re.compile(r"\t|\n|[^\s]+")
CHAR_WORD = "char+word"    # pair lines: characters before the tab, whitespace words after it


def tokenizer_kind(tokenizer: str, target_tokenizer: str = "char") -> str:
    """The tokenizer ``prepare`` learns for ``data.tokenizer`` and ``data.target_tokenizer``."""
    return CHAR_WORD if target_tokenizer == "word" else tokenizer


def _tf():
    import tensorflow as tf
    import tensorflow_text as tf_text
    return tf, tf_text


def _lines(text: str) -> list[str]:
    """Lines of ``text``; a final newline ends the last line rather than starting an empty one."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


@dataclass
class Tokenizer:
    kind: str
    tokens: list[str]
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tokens[BOS_ID] != BOS or self.tokens[UNK_ID] != UNK:
            raise SeqlabError(f"vocabulary: ids 0 and 1 must be {BOS} and {UNK}")
        self.words_from = int(self.options.get("words_from", len(self.tokens)))
        self._index = {t: i for i, t in enumerate(self.tokens[:self.words_from])}
        self._word_index = {t: i for i, t in enumerate(self.tokens[self.words_from:], self.words_from)}
        self._wordpiece = None

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def eol_id(self) -> int | None:
        return self._index.get(EOL) if self.kind not in ("char", CHAR_WORD) else None

    def _prepare(self, text: str) -> str:
        return text.lower() if self.options.get("lowercase") else text

    # ---- encoding ----
    def encode(self, text: str) -> np.ndarray:
        text = self._prepare(text)
        if self.kind == "char":
            return self._encode_char(text)
        if self.kind == CHAR_WORD:
            return self._encode_char_word(text)
        if self.kind == PIXELS:
            return self._encode_pixels(text)
        words = self._words(text)
        if self.kind == "word":
            return self._lookup(words)
        return self._encode_wordpiece(words)

    def _encode_char(self, text: str) -> np.ndarray:
        tf, tf_text = _tf()
        cps = tf_text.UnicodeCharTokenizer().tokenize(text).numpy().astype(np.int64)
        known = np.array(sorted(ord(t) for t in self.tokens[2:]), dtype=np.int64)
        ids_sorted = np.array([self._index[chr(c)] for c in known], dtype=np.int32)
        pos = np.searchsorted(known, cps)
        pos = np.minimum(pos, len(known) - 1)
        hit = known[pos] == cps if len(known) else np.zeros(len(cps), bool)
        return np.where(hit, ids_sorted[pos] if len(known) else UNK_ID, UNK_ID).astype(np.int32)

    def _encode_char_word(self, text: str) -> np.ndarray:
        """Each line's text up to its first tab (the tab included) and its line end as characters,
        the rest as whitespace words; a line without a tab is all characters."""
        chars, words = self._index.get, self._word_index.get
        out: list[int] = []
        for line in text.split("\n"):
            source, tab, target = line.partition(SEPARATOR)
            out.extend(chars(c, UNK_ID) for c in source + tab)
            out.extend(words(w, UNK_ID) for w in target.split())
            out.append(chars("\n", UNK_ID))
        out.pop()      # the text's last piece has no line end after it
        return np.asarray(out, np.int32)

    def _encode_pixels(self, text: str) -> np.ndarray:
        """An image example as text (:meth:`decode`'s form): the tab and the line end are tokens,
        every other whitespace-separated word is a level or a ``label:`` token."""
        get = self._index.get
        return np.fromiter((get(w, UNK_ID) for w in _PIXEL_WORDS.findall(text)), dtype=np.int32)

    def _words(self, text: str):
        """Whitespace words of each line plus one ``<eol>`` per line, as a flat bytes array."""
        tf, tf_text = _tf()
        lines = _lines(text)
        if not lines:
            return np.array([], dtype=object)
        ragged = tf_text.WhitespaceTokenizer().tokenize(tf.constant(lines))
        eol = tf.fill([len(lines), 1], EOL)
        return tf.concat([ragged, tf.RaggedTensor.from_tensor(eol)], axis=1).flat_values.numpy()

    def _lookup(self, words: np.ndarray) -> np.ndarray:
        get = self._index.get
        return np.fromiter((get(w.decode("utf-8"), UNK_ID) for w in words), dtype=np.int32, count=len(words))

    def _wordpiece_tokenizer(self):
        if self._wordpiece is None:
            tf, tf_text = _tf()
            self._wordpiece = tf_text.FastWordpieceTokenizer(
                self.tokens, suffix_indicator="##", unknown_token=UNK, no_pretokenization=True,
                support_detokenization=True, token_out_type=tf.int32)
        return self._wordpiece

    def _encode_wordpiece(self, words: np.ndarray) -> np.ndarray:
        if len(words) == 0:
            return np.zeros(0, np.int32)
        return self._wordpiece_tokenizer().tokenize(words).flat_values.numpy().astype(np.int32)

    # ---- decoding ----
    def decode(self, ids) -> str:
        ids = [int(i) for i in ids if int(i) != BOS_ID]
        if self.kind == CHAR_WORD:
            return self._decode_char_word(ids)
        if self.kind == PIXELS:    # levels and labels as words, the separator and the end of image as themselves
            return re.sub(r" ?([\t\n]) ?", r"\1", " ".join(self.tokens[i] for i in ids))
        toks = [self.tokens[i] for i in ids]
        if self.kind == "char":
            return "".join(toks)
        out: list[str] = []
        for t in toks:
            if t == EOL:
                out.append("\n")
            elif self.kind == "wordpiece" and t.startswith("##"):
                out.append(t[2:])
            else:
                out.append(t if not out or out[-1] == "\n" else " " + t)
        return "".join(out)

    def _decode_char_word(self, ids: list[int]) -> str:
        """Characters as they are; consecutive words joined by one space. ``<unk>`` counts as a word
        (an unknown word of a target keeps its spaces; two unknown source letters gain one)."""
        word = [i >= self.words_from or i == UNK_ID for i in ids]
        return "".join((" " if w and prev else "") + self.tokens[i]
                       for i, w, prev in zip(ids, word, [False] + word))

    # ---- persistence ----
    def to_json(self) -> dict:
        return {"format": FORMAT_VERSION, "tokenizer": self.kind, "options": self.options,
                "tokens": self.tokens}

    def save(self, path: Path) -> None:
        write_json(path, self.to_json())


def load_tokenizer(path: Path) -> Tokenizer:
    d = read_json(path)
    try:
        return Tokenizer(d["tokenizer"], list(d["tokens"]), dict(d.get("options", {})))
    except (KeyError, TypeError) as e:
        raise SeqlabError(f"{path}: not a seqlab vocabulary file ({e})") from None


def learn_tokenizer(kind: str, train_text: str | Iterable[str], vocab_size: int, lowercase: bool = False,
                    memory_mb: int = 1024, reserve: tuple[str, ...] = ()) -> Tokenizer:
    """Learn the vocabulary on the training text only: a string, or its pieces cut at line ends
    (streamed once). Word counts stay within ``memory_mb`` (:class:`pipeline.data.counting.Counts`);
    wordpiece learns from an evenly spread sample of the pieces of at most ``memory_mb / 16`` MB.
    ``reserve``: words that word and wordpiece keep as tokens of their own, however rare (the
    marker of a loss mask, :mod:`pipeline.data.loss_mask`)."""
    options = {"vocab_size": vocab_size, "lowercase": lowercase}
    pieces = [train_text] if isinstance(train_text, str) else train_text
    pieces = (p.lower() for p in pieces) if lowercase else pieces
    lines_as_eol = kind not in ("char", CHAR_WORD)
    reserved = [BOS, UNK] + ([EOL] + [w for w in dict.fromkeys(reserve) if w != EOL] if lines_as_eol else [])
    keep_n = max(vocab_size - len(reserved), 0)
    if kind == "char":
        counts = collections.Counter()
        for p in pieces:
            counts.update(p)
        keep = sorted(counts, key=lambda c: (-counts[c], c))[:keep_n]
        return Tokenizer(kind, reserved + sorted(keep), options)
    if kind == CHAR_WORD:
        return _learn_char_word(pieces, keep_n, reserved, options)
    if kind == "word":
        words = Counts(memory_mb * (1 << 20) // 4 // BYTES_PER_TYPE)
        for p in pieces:
            words.update(w for line in _lines(p) for w in line.split())
        for r in reserved:
            words.pop(r)
        return Tokenizer(kind, reserved + words.top(keep_n), options)
    if kind == "wordpiece":
        tf, _ = _tf()
        from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as bv
        text = _spread_sample(pieces, memory_mb * (1 << 20) // 16)
        ds = tf.data.Dataset.from_tensor_slices(_lines(text) or [""]).batch(1024)
        vocab = bv.bert_vocab_from_dataset(ds, vocab_size=vocab_size, reserved_tokens=reserved,
                                           bert_tokenizer_params={"lower_case": False}, learn_params={})
        if len(vocab) > vocab_size:
            # the learner always keeps every character (and its ## continuation) of the text
            raise SeqlabError(f"data.vocab_size: {vocab_size} is below what wordpiece needs for this corpus: its "
                              f"characters alone take {len(vocab)} pieces; expected at least {len(vocab)}")
        return Tokenizer(kind, list(vocab), options)
    raise SeqlabError(f"data.tokenizer: unknown tokenizer {kind!r}; expected char, word, wordpiece or {CHAR_WORD}")


def _learn_char_word(pieces: Iterable[str], keep_n: int, reserved: list[str], options: dict) -> Tokenizer:
    """The ``keep_n`` most frequent characters of the sources (with the tab and the line end) and
    words of the targets, counted together; characters first, then words, each sorted."""
    chars, words = collections.Counter(), collections.Counter()
    for p in pieces:
        for line in _lines(p):
            source, tab, target = line.partition(SEPARATOR)
            chars.update(source + tab + "\n")
            words.update(target.split())
    ranked = sorted([(n, 0, c) for c, n in chars.items()] + [(n, 1, w) for w, n in words.items()],
                    key=lambda t: (-t[0], t[1], t[2]))[:keep_n]
    kept_chars = sorted(t for _, kind, t in ranked if kind == 0)
    kept_words = sorted(t for _, kind, t in ranked if kind == 1)
    tokens = reserved + kept_chars + kept_words
    return Tokenizer(CHAR_WORD, tokens, options | {"words_from": len(reserved) + len(kept_chars)})


def _spread_sample(pieces: Iterable[str], max_chars: int) -> str:
    """At most about ``max_chars`` characters of whole pieces, spread evenly over all of them: while
    the sample grows past the cap, every other kept piece is dropped and only every 2^j-th piece
    is taken from then on. All of a text that fits, so small corpora learn from all of it."""
    kept: list[tuple[int, str]] = []
    size, stride = 0, 1
    for i, p in enumerate(pieces):
        if i % stride:
            continue
        kept.append((i, p))
        size += len(p)
        while size > max_chars and len(kept) > 1:
            stride *= 2
            kept = [(j, q) for j, q in kept if j % stride == 0]
            size = sum(len(q) for _, q in kept)
    return "".join(q for _, q in kept)
