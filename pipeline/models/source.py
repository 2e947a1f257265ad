"""Where an example's source ends, in keras.ops: what the encoder-decoders read and mask.

An example is ``<bos> source MARKER target ...``; every position before the first marker is source
(the ``<bos>`` included: an empty prefix is still one position to attend to), the marker and
everything after it are target.
"""
from __future__ import annotations

from keras import ops


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


def pad_slots(x, slots: int):
    """(B, T, D) -> (B, slots, D): zeros after the T given positions (a fixed-size cache; T may be
    unknown while tracing)."""
    out = ops.zeros((ops.shape(x)[0], slots, x.shape[-1]), x.dtype)
    return ops.slice_update(out, (0, 0, 0), x)
