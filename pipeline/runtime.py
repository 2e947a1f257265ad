"""Resolve the `auto` settings of `train`: precision, XLA and the tf.distribute strategy.

The defaults stay correct on a CPU-only machine (float32, one device); GPUs get mixed precision,
several local GPUs MirroredStrategy, and a TF_CONFIG naming several workers
MultiWorkerMirroredStrategy.
"""
from __future__ import annotations

import json
import os

from pipeline.errors import SeqlabError


def _gpus():
    import tensorflow as tf
    return tf.config.list_physical_devices("GPU")


def resolve_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    gpus = _gpus()
    if not gpus:
        return "float32"
    import tensorflow as tf
    cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
    return "mixed_bfloat16" if tuple(cc) >= (8, 0) else "mixed_float16"


def resolve_jit(setting: str, family: str) -> bool:
    """XLA everywhere it helps; not for recurrent layers on a GPU, which must stay on cuDNN."""
    if setting != "auto":
        return setting == "true"
    return not (family in ("lstm", "gru") and _gpus())


def _workers() -> int:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 1
    try:
        return len(json.loads(raw).get("cluster", {}).get("worker", []))
    except (ValueError, AttributeError):
        raise SeqlabError("TF_CONFIG: not valid JSON with a cluster.worker list") from None


def resolve_strategy(setting: str):
    import tensorflow as tf
    if setting == "auto":
        setting = "multi_worker" if _workers() > 1 else ("mirrored" if len(_gpus()) > 1 else "none")
    if setting == "none":
        return tf.distribute.get_strategy()
    if setting == "mirrored":
        return tf.distribute.MirroredStrategy()
    if setting == "multi_worker":
        if _workers() < 1:
            raise SeqlabError("train.distribute=multi_worker needs TF_CONFIG with a cluster.worker list")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise SeqlabError(f"train.distribute: unknown strategy {setting!r}")
