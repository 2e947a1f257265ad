"""Contiguous tracks for training with the state carried (truncated BPTT, ``train.state: carried``).

The ``[BOS] + ids`` stream is cut into ``batch_size`` tracks of equal length; row b of every batch
reads track b, and consecutive steps read consecutive windows of it, so the state a recurrent
network ends one window with is the right state to start the next (char-rnn; Zaremba et al. 2014).
A pass over the tracks takes :func:`windows_per_track` steps; then the tracks start again from
their beginnings and the state is reset (the step's ``keep`` is 0). Step s reads window
``s mod windows_per_track`` of every track: the positions follow from the global step alone, so a
resumed run, and every replica of a distributed one (each owns whole rows, i.e. whole tracks),
read the windows one device reads. In examples mode the tracks are made of whole examples and the
state is reset where each example starts (:class:`ExampleTracks`).
"""
from __future__ import annotations

import numpy as np

from pipeline.data.examples import example_ends
from pipeline.errors import SeqlabError


def track_length(n_ids: int, batch_size: int) -> int:
    """Stream positions per track: the ``n_ids + 1`` positions of ``[BOS] + ids`` cut in ``batch_size``."""
    return (int(n_ids) + 1) // int(batch_size)


def windows_per_track(n_ids: int, seq_len: int, batch_size: int) -> int:
    """Steps of one pass over the tracks: windows of ``seq_len`` inputs (and their ``seq_len``
    targets) that fit one track end to end."""
    per = (track_length(n_ids, batch_size) - 1) // int(seq_len)
    if per < 1:
        raise SeqlabError(f"train.state: carried: {n_ids} train tokens make {batch_size} tracks (train.batch_size) "
                          f"of {track_length(n_ids, batch_size)} positions, too short for one window of "
                          f"train.seq_len={seq_len} (needs {seq_len + 1}); lower train.batch_size or train.seq_len, "
                          "or use train.state: windows")
    return per


def track_offsets(n_ids: int, seq_len: int, batch_size: int, first_step: int, steps: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (steps, batch_size) int64, keep (steps, batch_size) float32) of global steps
    ``first_step ..``: the stream position each row's window starts at, and 0 where a step starts a
    pass (the state that row reads is reset), else 1."""
    per, length = windows_per_track(n_ids, seq_len, batch_size), track_length(n_ids, batch_size)
    window = (int(first_step) + np.arange(int(steps), dtype=np.int64)) % per
    offsets = np.arange(int(batch_size), dtype=np.int64)[None, :] * length + window[:, None] * int(seq_len)
    return offsets, np.broadcast_to((window != 0).astype(np.float32)[:, None], offsets.shape).copy()


class ExampleTracks:
    """Tracks of whole examples (``data.examples``: lines or pairs) for the carried state.

    The examples are dealt out in order to ``batch_size`` tracks of about equal windows; each
    example is read in consecutive windows of ``seq_len`` targets from its own ``<bos>``, its last
    window padded past its end (weight 0), so no window holds two examples. Row b of step s reads
    window ``s mod (its track's windows)`` of track b; the state is reset for a row whose window
    starts an example (its ``keep`` is 0), and carried into the next window of the same example.
    Holds three int64 per window of the split.
    """

    def __init__(self, starts: np.ndarray, n: int, seq_len: int, batch_size: int):
        starts = np.asarray(starts, np.int64)
        ends = example_ends(starts, n)
        windows = -(-(ends - starts) // int(seq_len))            # per example, at least one
        cum = np.cumsum(windows)
        total = int(cum[-1]) if len(cum) else 0
        cuts = np.searchsorted(cum, total * np.arange(1, batch_size) / batch_size, side="right")
        first_example = np.concatenate([[0], cuts])
        self.lo = np.where(first_example > 0, cum[np.maximum(first_example - 1, 0)], 0).astype(np.int64)
        self.count = np.diff(np.append(self.lo, total))
        if total == 0 or (self.count < 1).any():
            raise SeqlabError(f"train.state: carried: the {len(starts)} train examples ({total} windows of "
                              f"train.seq_len={seq_len}) do not fill {batch_size} tracks (train.batch_size); lower "
                              "train.batch_size, or use train.state: windows")
        example = np.repeat(np.arange(len(starts)), windows)
        k = np.arange(total, dtype=np.int64) - np.repeat(cum - windows, windows)
        self.rows = np.stack([starts[example] + k * int(seq_len), starts[example], ends[example]], axis=-1)
        self.density = float((ends - starts).sum() / (total * int(seq_len)))   # the targets inside an example

    def batches(self, first_step: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows (steps, batch_size, 3) int64: (first, a, e) as ``pipeline.data.examples`` reads them,
        keep (steps, batch_size) float32: 0 where a row's window starts its example)."""
        step = int(first_step) + np.arange(int(steps), dtype=np.int64)
        rows = self.rows[self.lo[None, :] + step[:, None] % self.count[None, :]]
        return rows, (rows[..., 0] != rows[..., 1]).astype(np.float32)
