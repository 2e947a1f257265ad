"""Where an example's source ends, in keras.ops: what the encoder-decoders read and mask.

An example is ``<bos> source MARKER target ...``; every position before the first marker is source
(the ``<bos>`` included: an empty prefix is still one position to attend to), the marker and
everything after it are target.
"""
from __future__ import annotations

import numpy as np
from keras import ops

from .stepper import bucket


def source_mask(ids, marker_id: int):
    """bool (B, T): True at the positions before each row's first ``marker_id``."""
    seen = ops.cumsum(ops.cast(ops.equal(ops.cast(ids, "int32"), marker_id), "int32"), axis=1)
    return ops.equal(seen, 0)


def source_length(mask):
    """int32 (B,): the source positions of each row (its marker's position)."""
    return ops.sum(ops.cast(mask, "int32"), axis=1)


def before(length, slots: int):
    """bool (B, slots): slot s < length[b] (the source slots of a fixed-size cache)."""
    return ops.arange(slots, dtype="int32")[None, :] < ops.cast(length, "int32")[:, None]


def pad_slots(x, slots: int, axis: int = 1):
    """(B, T, D) -> (B, slots, D): zeros after the T given positions (a fixed-size cache; T may be
    unknown while tracing); ``axis`` 2: (B, H, T, D) -> (B, H, slots, D)."""
    shape = [ops.shape(x)[i] if i == 0 else x.shape[i] for i in range(len(x.shape))]
    shape[axis] = slots
    return ops.slice_update(ops.zeros(tuple(shape), x.dtype), (0,) * len(shape), x)


def split_prompts(ids, lengths, marker_id: int, cap: int):
    """Host side: right-padded prompts ``ids`` (B, T) of ``lengths`` laid out for an encoder-decoder's
    start (``start_with_cache``): (source (B, P), source lengths, target (B, K), target lengths),
    P and K powers of two (at least 16 and 1) at most ``cap``. A row's source is everything
    before its first marker, its target prefix the marker and what follows; a row without a
    marker has target length 0 and its last id as target[0] (the decoder's first input there)."""
    ids, lengths = np.asarray(ids), np.asarray(lengths)
    marks = [np.flatnonzero(ids[b, :n] == marker_id) for b, n in enumerate(lengths)]
    sl = np.array([m[0] if m.size else n for m, n in zip(marks, lengths)], np.int32)
    tl = (lengths - sl).astype(np.int32)
    source = np.zeros((len(ids), bucket(int(sl.max()), cap)), np.int32)
    target = np.zeros((len(ids), bucket(int(tl.max()), cap, floor=1)), np.int32)
    for b, (s, t) in enumerate(zip(sl, tl)):
        source[b, :s] = ids[b, :s]
        target[b, :t] = ids[b, s:s + t]
        if t == 0:
            target[b, 0] = ids[b, s - 1]
    return source, sl, target, tl


def gather_rows(x, index):
    """x (B, T, D) -> (B, N, D): row b's n-th vector is x[b, index[b, n]] (``index`` (B, N))."""
    index = ops.cast(index, "int32")
    shape = (ops.shape(x)[0], ops.shape(index)[1], x.shape[-1])
    return ops.take_along_axis(x, ops.broadcast_to(index[:, :, None], shape), axis=1)


def last_positions(x, lengths):
    """x (B, T, D) -> (B, D): each row's vector at its last position ``lengths[b] - 1``."""
    return gather_rows(x, ops.maximum(ops.cast(lengths, "int32") - 1, 0)[:, None])[:, 0]


def gather_positions(x, index):
    """Per-head x (B, H, T, D) -> (B, H, N, D): row b's n-th is x[b, :, index[b, n]], the index
    clipped to the T positions there are (slots past a row's end get its last, never read)."""
    index = ops.clip(ops.cast(index, "int32"), 0, ops.shape(x)[2] - 1)
    shape = (ops.shape(x)[0], x.shape[1], ops.shape(index)[1], x.shape[-1])
    return ops.take_along_axis(x, ops.broadcast_to(index[:, None, :, None], shape), axis=2)


def write_rows(cache, new, slots):
    """Per-head ``cache`` (B, H, S, D) with ``new`` (B, H, T, D) written at ``slots`` (B, T): each
    row at its own positions (a one-hot product, not an in-place slice: the rows' positions differ)."""
    hit = ops.equal(ops.arange(cache.shape[2], dtype="int32")[None, None, :],
                    ops.cast(slots, "int32")[:, :, None])                          # (B, T, S)
    if new.shape[2] == 1:        # one position (a decoding step): a select, no product
        return ops.where(hit[:, :, :, None], ops.cast(new, cache.dtype), cache)
    written = ops.einsum("bts,bhtd->bhsd", ops.cast(hit, cache.dtype), ops.cast(new, cache.dtype))
    return ops.where(ops.any(hit, axis=1)[:, None, :, None], written, cache)
