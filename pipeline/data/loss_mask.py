"""Loss masks (``data.score_after``): train and score only the text that follows a marker on its line.

A line ``prompt MARKER answer`` contributes only the tokens of ``answer`` (the line end excluded)
to the training loss, the validation curves and every reported number; a line without the marker
contributes none, although all of it stays context. This is the completion-only loss of
instruction data, and the copy-memory task's loss on its ten target positions, as one corpus option.
Paired examples (``data.examples: pairs``) score the line end too: it is the output's last token,
the one a decoder must predict to stop.

The mask is computed in token space, after tokenizing, so it holds for every tokenizer: the marker
is the token sequence it encodes to (for word and wordpiece a reserved token of its own, see
:func:`pipeline.data.tokenizers.learn_tokenizer`) and the first match on a line opens the scored
part. Bits per character divide by the characters after the marker (:func:`scored_chars`).
"""
from __future__ import annotations

import numpy as np

from pipeline.data.vocab_layout import UNK_ID
from pipeline.errors import SeqlabError


def marker_ids(tokenizer, marker: str) -> np.ndarray:
    """The ids ``marker`` encodes to on its own (without the line end word tokenizers add)."""
    ids = np.asarray(tokenizer.encode(marker), np.int32)
    if tokenizer.eol_id is not None and ids.size and ids[-1] == tokenizer.eol_id:
        ids = ids[:-1]
    if ids.size == 0 or np.any(ids == UNK_ID):
        raise SeqlabError(f"data.score_after: {marker!r} is not in the vocabulary the {tokenizer.kind} tokenizer "
                          "learned on the train split; expected a marker that the training text holds")
    return ids


def line_end_id(tokenizer) -> int:
    """The id that ends a line: ``<eol>``, or the newline character (-1 when the text has none)."""
    if tokenizer.eol_id is not None:
        return tokenizer.eol_id
    return tokenizer.tokens.index("\n") if "\n" in tokenizer.tokens else -1


def scored_mask(ids: np.ndarray, marker: np.ndarray, line_end: int, include_end: bool = False) -> np.ndarray:
    """uint8 per token of ``ids`` (whole lines): 1 after the first ``marker`` of its line, up to the
    line end (included with ``include_end``: a transducer must learn where its output stops); 0
    elsewhere."""
    ids = np.asarray(ids)
    n, m = len(ids), len(marker)
    mask = np.zeros(n, np.uint8)
    if n < m:
        return mask
    hit = np.ones(n - m + 1, bool)
    for j, t in enumerate(marker):
        hit &= ids[j:n - m + 1 + j] == t
    starts = np.flatnonzero(hit)
    if not starts.size:
        return mask
    is_end = ids == line_end
    line = np.cumsum(is_end) - is_end           # a line end belongs to the line it ends
    lines, first = np.unique(line[starts], return_index=True)
    open_at = np.full(int(line[-1]) + 1, n, np.int64)
    open_at[lines] = starts[first] + m
    mask[(np.arange(n) >= open_at[line]) & (include_end | ~is_end)] = 1
    return mask


def scored_chars(text: str, marker: str, lowercase: bool, include_end: bool = False) -> int:
    """Characters after the first ``marker`` of each line, up to its end (and the line end itself
    with ``include_end``, as :func:`scored_mask` scores it): the text the scored tokens spell, for
    bits per character."""
    text = text.lower() if lowercase else text
    lines = text.split("\n")
    total = 0
    for k, line in enumerate(lines):
        i = line.find(marker)
        if i >= 0:
            total += len(line) - i - len(marker) + (include_end and k < len(lines) - 1)
    return total
