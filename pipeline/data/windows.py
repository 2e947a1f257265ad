"""Token ids to tf.data batches of (inputs, targets) windows.

Training windows start at random offsets of the ``[BOS] + ids`` stream, drawn from a generator
seeded by (seed, epoch): an epoch's batches are the same after a resume, and the input pipeline
runs ahead of the model (prefetch). In examples mode (``starts``, :mod:`pipeline.data.examples`)
every window lies inside one example, read from that example's own ``<bos>``, padded past its end
with weight 0.

The ids are usually memory-mapped (``pipeline.data.prepared.load_prepared``) and may be larger than
memory: each batch's windows are gathered on the host from the positions they need
(:func:`stream_at`), so neither training nor scoring ever builds the whole ``[BOS] + ids`` stream.

Under tf.distribute every input pipeline (one per worker) draws the same offsets and keeps its own
contiguous slice of each *global* batch, cut into per-replica batches (explicit sharding; tf.data
auto-sharding is turned off). Step s therefore trains on exactly the windows of the single-device
step s, whatever the number of replicas or workers.
"""
from __future__ import annotations

import numpy as np

from pipeline.data.examples import ExampleSampler, eval_rows, example_rows, row_weights, split_at_marker
from pipeline.data.tracks import ExampleTracks, track_offsets
from pipeline.errors import SeqlabError
from pipeline.data.vocab_layout import BOS_ID


def with_bos(ids: np.ndarray) -> np.ndarray:
    """The whole ``[BOS] + ids`` stream (int32), for splits that fit in memory."""
    return np.concatenate([[BOS_ID], np.asarray(ids, dtype=np.int32)]).astype(np.int32)


def stream_at(ids: np.ndarray, positions) -> np.ndarray:
    """``with_bos(ids)[positions]`` (int32, the shape of ``positions``) reading only those positions
    of ``ids``: stream position p is ``ids[p - 1]``, position 0 is BOS."""
    ids, positions = np.asarray(ids), np.asarray(positions, dtype=np.int64)   # a memmap stays a view
    if positions.size and (positions.min() < 0 or positions.max() > len(ids)):
        raise SeqlabError(f"stream positions {positions.min()}..{positions.max()} out of range: the stream "
                          f"is [BOS] + {len(ids)} ids")
    out = np.asarray(ids[np.maximum(positions - 1, 0)], dtype=np.int32)  # fancy indexing: a copy
    out[positions == 0] = BOS_ID
    return out


def window_positions(starts, width: int) -> np.ndarray:
    """The stream positions ``s, ..., s + width - 1`` of every start ``s`` (int64, (len(starts), width))."""
    return np.asarray(starts, dtype=np.int64).reshape(-1, 1) + np.arange(width)


def window_rows(ids: np.ndarray, starts, width: int) -> np.ndarray:
    """``with_bos(ids)[s:s + width]`` for every start ``s`` (int32, (len(starts), width))."""
    return stream_at(ids, window_positions(starts, width))


class BosStream:
    """``with_bos(ids)`` as a view: ``len``, slices and index arrays read only what they name, so
    code written for the stream array runs on a memory-mapped split of any size. With example
    ``starts`` every example's first position reads ``<bos>`` (its own start), not the previous
    example's last token."""

    def __init__(self, ids: np.ndarray, starts: np.ndarray | None = None):
        self.ids, self.starts = ids, starts

    def __len__(self) -> int:
        return len(self.ids) + 1

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            key = np.arange(*key.indices(len(self)))
        out = stream_at(self.ids, key)
        if self.starts is not None and len(self.starts):
            key = np.asarray(key, np.int64)
            j = np.minimum(np.searchsorted(self.starts, key), len(self.starts) - 1)
            out[np.asarray(self.starts[j]) == key] = BOS_ID
        return out


def check_length(ids: np.ndarray, seq_len: int, what: str) -> None:
    if len(ids) < seq_len + 1:
        raise SeqlabError(f"{what}: {len(ids)} tokens, too short for train.seq_len={seq_len} "
                          f"(needs at least {seq_len + 1}); use a longer corpus or a shorter seq_len")


def epoch_offsets(n_tokens: int, seq_len: int, count: int, seed: int, epoch: int) -> np.ndarray:
    rng = np.random.default_rng([seed, epoch])
    return rng.integers(0, n_tokens + 1 - seq_len, size=count, dtype=np.int64)


def shard_rows(batch_size: int, num_pipelines: int, pipeline_id: int, num_replicas: int) -> tuple[int, int, int]:
    """(first row, end row, per-replica batch) of one input pipeline's share of a global batch."""
    if batch_size % num_replicas or num_replicas % num_pipelines:
        raise SeqlabError(f"train.batch_size={batch_size} is not divisible by the {num_replicas} replicas")
    per_replica = batch_size // num_replicas
    share = batch_size // num_pipelines  # every worker holds the same number of replicas
    return pipeline_id * share, (pipeline_id + 1) * share, per_replica


def train_dataset(ids: np.ndarray, seq_len: int, batch_size: int, steps: int, seed: int, epoch: int,
                  input_context=None, mask: np.ndarray | None = None, starts: np.ndarray | None = None,
                  split_at: int | None = None):
    """``steps`` global batches of ``batch_size`` windows for one epoch.

    With a ``tf.distribute.InputContext`` (``strategy.distribute_datasets_from_function``) the
    dataset yields this pipeline's per-replica batches: rows ``[lo, hi)`` of every global batch,
    ``hi - lo = batch_size / workers``, in consecutive per-replica batches (the local replicas take
    consecutive elements). With a loss ``mask`` (one value per id) the batches also hold the
    targets' weights (:func:`windows_dataset`). With example ``starts`` the rows are drawn by
    :class:`ExampleSampler` in batches grouped by length (and always carry weights); each global
    batch has one width, which every pipeline's share of it keeps. ``split_at``: an encoder-decoder's
    marker id; its example rows come split there (:func:`windows_dataset`).
    """
    if starts is None:
        offsets = epoch_offsets(len(ids), seq_len, steps * batch_size, seed, epoch).reshape(steps, batch_size)
    else:
        offsets = ExampleSampler(starts, len(ids), seq_len).batches(steps, batch_size, seed, epoch)
    per_batch = batch_size
    if input_context is not None:
        lo, hi, per_batch = shard_rows(batch_size, input_context.num_input_pipelines,
                                       input_context.input_pipeline_id, input_context.num_replicas_in_sync)
        offsets = offsets[:, lo:hi]
    return windows_dataset(ids, offsets.reshape((-1,) + offsets.shape[2:]), seq_len, per_batch, mask, split_at)


def carried_dataset(ids: np.ndarray, seq_len: int, batch_size: int, steps: int, epoch: int,
                    input_context=None, mask: np.ndarray | None = None, starts: np.ndarray | None = None):
    """``steps`` global batches for epoch ``epoch`` with the state carried (:mod:`pipeline.data.tracks`):
    (inputs, targets, weights, keep), row b of every batch the next window of track b, ``keep``
    (rows,) float32, 0 for a row whose state is reset (a pass over the stream's tracks begins; in
    examples mode, with example ``starts``, its window starts an example). ``weights`` are the loss
    mask's values (ones without a ``mask``; 0 on an example's padding). Sharded as
    :func:`train_dataset` shards: a pipeline's rows are the same tracks at every step, so each
    replica carries its own rows' state."""
    import tensorflow as tf
    first = epoch * steps
    if starts is None:
        offsets, keep = track_offsets(len(ids), seq_len, batch_size, first, steps)
    else:
        offsets, keep = ExampleTracks(starts, len(ids), seq_len, batch_size).batches(first, steps)
    per_batch = batch_size
    if input_context is not None:
        lo, hi, per_batch = shard_rows(batch_size, input_context.num_input_pipelines,
                                       input_context.input_pipeline_id, input_context.num_replicas_in_sync)
        offsets, keep = offsets[:, lo:hi], keep[:, lo:hi]
    weighted = mask is not None or starts is not None
    windows = windows_dataset(ids, offsets.reshape((-1,) + offsets.shape[2:]), seq_len, per_batch, mask)
    keeps = tf.data.Dataset.from_tensor_slices(keep.reshape(-1, per_batch))

    def carried(batch, k):
        x, y = batch[0], batch[1]
        return x, y, (batch[2] if weighted else tf.ones(tf.shape(y), tf.float32)), k

    return tf.data.Dataset.zip((windows, keeps)).map(carried).prefetch(PREFETCH_BATCHES).with_options(_dataset_options())


#: host threads gathering batches (a gather holds the GIL for most of its time: on two cores a
#: second thread slowed g2p's encoder-decoder step by 13%, 113 -> 128 ms) and the batches they
#: keep ready ahead of the training step
GATHER_THREADS = 1
PREFETCH_BATCHES = 4


def _dataset_options():
    """Dataset options: deterministic; no tf.data auto-sharding (the batches are sharded by hand,
    :func:`shard_rows`: every worker must not drop further elements); no autotuning, whose model
    thread sleeps on a timer that doubles up to 60 s and is not woken when its iterator is deleted:
    each epoch's iterator took up to a minute to delete (53 s, 20 s and 19 s after the 550-step
    epochs of g2p's encoder-decoder). The batches are gathered by GATHER_THREADS threads,
    PREFETCH_BATCHES ahead."""
    import tensorflow as tf
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.deterministic = True
    options.autotune.enabled = False
    return options


def windows_dataset(ids: np.ndarray, offsets: np.ndarray, seq_len: int, batch_size: int,
                    mask: np.ndarray | None = None, split_at: int | None = None):
    """Batches of ``batch_size`` (inputs, targets) windows ``with_bos(ids)[o:o + seq_len + 1]``, one
    per offset in order (a last partial batch is dropped), gathered from ``ids`` batch by batch on
    the host (``tf.numpy_function``), deterministic and prefetched. With a loss ``mask`` the batches
    are (inputs, targets, weights): the float32 mask value of every target. Offsets of shape (N, 3)
    are example rows (:func:`pipeline.data.examples.example_rows`): always with weights; of shape
    (N, 4), example rows with their batch's width (at most ``seq_len`` targets) in the last column,
    so that the batches' length varies. With ``split_at`` (an encoder-decoder's marker id) example
    rows come as ((source, source lengths, target inputs), targets, weights), split at the marker
    (:func:`pipeline.data.examples.split_at_marker`)."""
    import tensorflow as tf
    width = seq_len + 1
    examples = np.ndim(offsets) == 2
    ragged = examples and np.shape(offsets)[1] == 4

    def gather(off):
        if examples:
            rows, valid = example_rows(ids, off[:, :3], int(off[0, 3]) + 1 if ragged else width)
            weights = row_weights(valid, off[:, :3], mask)
            if split_at is not None:
                (source, lengths, target), y, weights = split_at_marker(rows, weights, split_at)
                return source, lengths, target, y, weights
            return rows, weights
        positions = window_positions(off, width)
        rows = stream_at(ids, positions)
        if mask is None:
            return rows
        # the same positions: the targets' (>= 1, never the BOS slot) give their weights
        return rows, stream_at(mask, positions[:, 1:]).astype(np.float32)

    def windows(off):
        if examples and split_at is not None:
            source, lengths, target, y, weights = tf.numpy_function(
                gather, [off], [tf.int32, tf.int32, tf.int32, tf.int32, tf.float32], stateful=False)
            for t in (source, target, y, weights):
                t.set_shape((batch_size, None))
            lengths.set_shape((batch_size,))
            return (source, lengths, target), y, weights
        if mask is None and not examples:
            w = tf.numpy_function(gather, [off], tf.int32, stateful=False)
        else:
            w, weights = tf.numpy_function(gather, [off], [tf.int32, tf.float32], stateful=False)
            weights.set_shape((batch_size, None if ragged else seq_len))
        w.set_shape((batch_size, None if ragged else width))
        return (w[:, :-1], w[:, 1:]) if mask is None and not examples else (w[:, :-1], w[:, 1:], weights)

    offsets = np.asarray(offsets, dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices(offsets).batch(batch_size, drop_remainder=True)
    ds = ds.with_options(_dataset_options())
    return ds.map(windows, num_parallel_calls=GATHER_THREADS).prefetch(PREFETCH_BATCHES)


def eval_windows(ids: np.ndarray, seq_len: int, max_tokens: int, mask: np.ndarray | None = None,
                 starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(inputs, targets, weights) of non-overlapping windows covering the first ``max_tokens``
    targets (for per-epoch curves); reads only ``ids[:max_tokens]``. ``weights``: the targets'
    float32 loss-mask values, None without a ``mask``. With example ``starts``: the windows of the
    whole examples within them, each read from its own start (weights always)."""
    if starts is not None:
        rows = eval_rows(starts, len(ids), seq_len, max_tokens)
        tokens, valid = example_rows(ids, rows, seq_len + 1)
        return tokens[:, :-1], tokens[:, 1:], row_weights(valid, rows, mask)
    stream = with_bos(ids[:max_tokens])
    n = (len(stream) - 1) // seq_len
    if n == 0:
        n, seq_len = 1, len(stream) - 1
    x = stream[: n * seq_len].reshape(n, seq_len)
    y = stream[1: n * seq_len + 1].reshape(n, seq_len)
    w = None if mask is None else np.asarray(mask[: n * seq_len], np.float32).reshape(n, seq_len)
    return x, y, w
