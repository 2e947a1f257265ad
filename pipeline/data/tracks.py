"""Contiguous tracks for training with the state carried (truncated BPTT, ``train.state: carried``).

The ``[BOS] + ids`` stream is cut into ``batch_size`` tracks of equal length; row b of every batch
reads track b, and consecutive steps read consecutive windows of it, so the state a recurrent
network ends one window with is the right state to start the next (char-rnn; Zaremba et al. 2014).
A pass over the tracks takes :func:`windows_per_track` steps; then the tracks start again from
their beginnings and the state is reset (the step's ``keep`` is 0). Step s reads window
``s mod windows_per_track`` of every track: the positions follow from the global step alone, so a
resumed run, and every replica of a distributed one (each owns whole rows, i.e. whole tracks),
read the windows one device reads.
"""
from __future__ import annotations

import numpy as np

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
    """(offsets (steps, batch_size) int64, keep (steps,) float32) of global steps ``first_step ..``:
    the stream position each row's window starts at, and 0 where a step starts a pass (the state
    read by that step is reset), else 1."""
    per, length = windows_per_track(n_ids, seq_len, batch_size), track_length(n_ids, batch_size)
    window = (int(first_step) + np.arange(int(steps), dtype=np.int64)) % per
    offsets = np.arange(int(batch_size), dtype=np.int64)[None, :] * length + window[:, None] * int(seq_len)
    return offsets, (window != 0).astype(np.float32)
