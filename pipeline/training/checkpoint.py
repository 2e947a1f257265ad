"""Training checkpoints: model variables, optimizer state, carried state and history after every epoch.

A checkpoint resumes only the configuration that wrote it (:func:`fingerprint`); settings that
change how a step runs but not what it computes (XLA, the strategy) may differ.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from pipeline.config.params import TrainParams
from pipeline.models.family import ModelParams

CHECKPOINT_FORMAT = 3  # 3: the carried state (train.state: carried); 2: model.variables (RNG states included), resolved precision
# settings that change how a step runs, not what it computes: a checkpoint resumes across them
_RUNTIME_ONLY = ("jit_compile", "distribute")


def fingerprint(model_cfg: ModelParams, train_cfg: TrainParams, vocab_size: int, data_hash: str, seed: int,
                precision: str | None = None) -> str:
    train = {k: v for k, v in dataclasses.asdict(train_cfg).items() if k not in _RUNTIME_ONLY}
    if precision is not None:
        train["precision"] = precision  # resolved: "auto" means different things on CPU and GPU
    blob = json.dumps([CHECKPOINT_FORMAT, dataclasses.asdict(model_cfg), train, vocab_size, data_hash, seed],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Checkpoint:
    """Model variables, optimizer state, the carried state (if any) and history, in one npz (no
    pickle): ``last`` after each epoch; ``best``, the weights of the epoch of least validation loss."""

    def __init__(self, folder: Path, fp: str, name: str = "last"):
        self.path = Path(folder) / f"{name}.npz"
        self.fp = fp

    def load(self):
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("fingerprint") != self.fp:
                    return None
                n_w, n_o, n_s = meta["n_weights"], meta["n_opt"], meta.get("n_state", 0)
                return (meta, [z[f"w{i}"] for i in range(n_w)], [z[f"o{i}"] for i in range(n_o)],
                        [z[f"s{i}"] for i in range(n_s)])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:  # unreadable: train from scratch
            print(f"ignoring the unreadable checkpoint {self.path}: {e}", flush=True)
            return None

    def save(self, meta: dict, weights: list, opt_vars: list, states: list = ()) -> None:
        """Atomic and durable: a kill or a power cut leaves the previous checkpoint or this one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**meta, "fingerprint": self.fp, "n_weights": len(weights), "n_opt": len(opt_vars),
                "n_state": len(states)}
        arrays = ({f"w{i}": w for i, w in enumerate(weights)} | {f"o{i}": o for i, o in enumerate(opt_vars)}
                  | {f"s{i}": s for i, s in enumerate(states)})
        tmp = self.path.with_suffix(".tmp.npz")
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
