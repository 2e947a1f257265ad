"""A trained network on disk: its weights plus the config needed to rebuild it.

Rebuilding from config and loading weights avoids depending on Keras' whole-model deserialisation
for custom layers, and gives evaluation, generation and serving one loading path.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from pipeline.io import read_json, write_json
from pipeline.params import ModelParams

WEIGHTS = "model.weights.h5"
CONFIG = "config.json"


def save_network(folder: Path, model, model_cfg: ModelParams, seq_len: int, vocab_size: int) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp.{WEIGHTS}"
    model.save_weights(tmp)
    os.replace(tmp, folder / WEIGHTS)
    write_json(folder / CONFIG, {"model": dataclasses.asdict(model_cfg), "seq_len": seq_len,
                                 "vocab_size": vocab_size})


def load_network(folder: Path):
    """Returns (model, model_cfg, seq_len)."""
    from pipeline.models import build_model
    folder = Path(folder)
    cfg = read_json(folder / CONFIG)
    model_cfg = ModelParams(**cfg["model"])
    model = build_model(model_cfg, cfg["vocab_size"], cfg["seq_len"])
    model.load_weights(folder / WEIGHTS)
    return model, model_cfg, cfg["seq_len"]
