"""Token ids to tf.data batches of (inputs, targets) windows.

Training windows start at random offsets of the ``[BOS] + ids`` stream, drawn from a generator
seeded by (seed, epoch): an epoch's batches are the same after a resume, and the input pipeline
runs ahead of the model (prefetch).
"""
from __future__ import annotations

import numpy as np

from pipeline.errors import SeqlabError
from pipeline.vocab_layout import BOS_ID


def with_bos(ids: np.ndarray) -> np.ndarray:
    return np.concatenate([[BOS_ID], np.asarray(ids, dtype=np.int32)]).astype(np.int32)


def check_length(ids: np.ndarray, seq_len: int, what: str) -> None:
    if len(ids) < seq_len + 1:
        raise SeqlabError(f"{what}: {len(ids)} tokens, too short for train.seq_len={seq_len} "
                          f"(needs at least {seq_len + 1}); use a longer corpus or a shorter seq_len")


def epoch_offsets(n_tokens: int, seq_len: int, count: int, seed: int, epoch: int) -> np.ndarray:
    rng = np.random.default_rng([seed, epoch])
    return rng.integers(0, n_tokens + 1 - seq_len, size=count, dtype=np.int64)


def train_dataset(ids: np.ndarray, seq_len: int, batch_size: int, steps: int, seed: int, epoch: int):
    """``steps`` batches of ``batch_size`` windows for one epoch (global batch size)."""
    import tensorflow as tf
    stream = tf.constant(with_bos(ids))
    offsets = epoch_offsets(len(ids), seq_len, steps * batch_size, seed, epoch)
    span = tf.range(seq_len + 1, dtype=tf.int64)

    def windows(off):
        w = tf.gather(stream, off[:, None] + span[None, :])
        return w[:, :-1], w[:, 1:]

    ds = tf.data.Dataset.from_tensor_slices(offsets).batch(batch_size, drop_remainder=True)
    return ds.map(windows, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def eval_windows(ids: np.ndarray, seq_len: int, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows covering the first ``max_tokens`` targets (for per-epoch curves)."""
    stream = with_bos(ids[:max_tokens])
    n = (len(stream) - 1) // seq_len
    if n == 0:
        n, seq_len = 1, len(stream) - 1
    x = stream[: n * seq_len].reshape(n, seq_len)
    y = stream[1: n * seq_len + 1].reshape(n, seq_len)
    return x, y
