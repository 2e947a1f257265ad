"""A trained network on disk: its weights plus the config needed to rebuild it; the one loader.

Rebuilding from config and loading weights avoids depending on Keras' whole-model deserialisation
for custom layers, and gives evaluation, generation and serving one loading path
(:func:`load_network`). The config is validated by the family catalog, like params.yaml.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.io import read_json, write_json
from pipeline.models.family import ModelParams
from pipeline.models.catalog import model_params
from pipeline.paths import KIND_FILE

WEIGHTS = "model.weights.h5"
CONFIG = "config.json"


@dataclass
class Network:
    """A loaded network: the Keras model, its parameters, its training context and vocabulary size."""
    model: object
    cfg: ModelParams
    seq_len: int
    vocab_size: int

    def stepper(self):
        from pipeline.models import make_stepper
        return make_stepper(self.model, self.cfg, self.seq_len)


def save_network(folder: Path, model, model_cfg: ModelParams, seq_len: int, vocab_size: int) -> None:
    """Weights and config; an encoder-decoder's config keeps its marker id (``model.marker_id``), an
    image model its layout (``model.image``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp.{WEIGHTS}"
    model.save_weights(tmp)
    os.replace(tmp, folder / WEIGHTS)
    config = {"model": model_cfg.as_dict(), "seq_len": seq_len, "vocab_size": vocab_size}
    if getattr(model, "marker_id", None) is not None:
        config["marker_id"] = int(model.marker_id)
    if getattr(model, "image", None) is not None:
        config["image"] = dict(model.image)
    write_json(folder / CONFIG, config)
    write_json(folder / KIND_FILE, {"kind": "network"})   # pipeline.saved.load_saved


def load_network(folder: Path) -> Network:
    """The network saved in ``folder`` by :func:`save_network`."""
    from pipeline.models import build_model
    folder = Path(folder)
    cfg = read_json(folder / CONFIG)
    model_cfg = model_params(cfg["model"], str(folder / CONFIG))
    model = build_model(model_cfg, cfg["vocab_size"], cfg["seq_len"], cfg.get("marker_id"), cfg.get("image"))
    model.load_weights(folder / WEIGHTS)
    return Network(model, model_cfg, int(cfg["seq_len"]), int(cfg["vocab_size"]))
