"""Free-space checks before the long steps: one line naming the folder, the need and what is free."""
import shutil

import numpy as np
import pytest

from pipeline import disk
from pipeline.errors import SeqlabError


def _free(monkeypatch, free_bytes):
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - free_bytes,
                                                                                      free_bytes))


def test_enough_space_passes_and_too_little_is_one_line(tmp_path, monkeypatch):
    _free(monkeypatch, 10 * 2**30)
    disk.require_free(tmp_path / "not" / "yet", 2**30, "a step")            # the nearest existing parent counts
    _free(monkeypatch, 100 * 2**20)
    with pytest.raises(SeqlabError) as e:
        disk.require_free(tmp_path / "out", 2**30, "a step")
    assert str(e.value) == (f"{tmp_path / 'out'}: a step needs about 1.0 GB (and 64.0 MB to spare) but only "
                            "100.0 MB is free on that disk; free some space, or move the repository to a larger "
                            "disk, and run again")


def test_training_on_a_full_disk_stops_before_the_first_step(tmp_path, monkeypatch):
    from pipeline.config.params import TrainParams
    from pipeline.models import build_model
    from pipeline.models.recurrent import RecurrentParams
    from pipeline.training.loop import train_model

    _free(monkeypatch, 10 * 2**20)
    ids = np.random.default_rng(0).integers(2, 20, 4000).astype(np.int32)
    model = RecurrentParams(family="rnn", embed_dim=8, units=16, layers=1)
    train = TrainParams(seq_len=16, batch_size=4, epochs=1, steps_per_epoch=2, steps_per_execution=1,
                        warmup_steps=0, eval_tokens=64)
    steps = []
    with pytest.raises(SeqlabError, match="training .checkpoints, the saved network. needs about"):
        train_model(model, train, ids, ids[:200], 20, "h", 0, tmp_path / "ckpt", build_model,
                    on_epoch=steps.append)
    assert not steps and not (tmp_path / "ckpt").exists()
