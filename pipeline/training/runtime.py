"""Resolve the `auto` settings of `train`: precision, XLA, the tf.distribute strategy and the state.

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


def resolve_precision(setting: str, family=None) -> str:
    """``train.precision``; ``auto``: float32 on a CPU or for a family that opts out of mixed precision."""
    if setting != "auto":
        return setting
    gpus = _gpus()
    if not gpus or (family is not None and not family.mixed_precision):
        return "float32"
    import tensorflow as tf
    cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
    return "mixed_bfloat16" if tuple(cc) >= (8, 0) else "mixed_float16"


def resolve_jit(setting: str, family) -> bool:
    """``train.jit_compile``; ``auto`` asks the family (e.g. LSTM and GRU keep cuDNN on a GPU)."""
    if setting != "auto":
        return setting == "true"
    return family.jit_compile(on_gpu=bool(_gpus()))


def resolve_state(setting: str, family, model, examples: bool) -> str:
    """``train.state``; ``auto``: ``carried`` for a family scored as one stream whose network keeps a
    cache (the recurrent ones) on one stream, else ``windows``: in examples mode too, where most
    examples fit one window and carrying only pads them (``carried`` may still be set there).
    ``docs/training.md`` has the benchmark behind the rule."""
    from pipeline.models.family import STREAM
    can = family.protocol == STREAM and bool(getattr(model, "cached", False))
    if setting == "auto":
        return "carried" if can and not examples else "windows"
    if setting == "carried" and not can:
        raise SeqlabError(f"train.state: carried: family {family.name!r} does not carry a state through a stream "
                          f"(its protocol is {family.protocol!r}); expected train.state: windows or auto")
    return setting


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return {}
    try:
        cfg = json.loads(raw)
        cluster = cfg.get("cluster", {})
        if not isinstance(cluster, dict) or not all(isinstance(v, list) for v in cluster.values()):
            raise ValueError
        return cfg
    except (ValueError, AttributeError):
        raise SeqlabError("TF_CONFIG: not valid JSON with a cluster.worker list") from None


def _workers() -> int:
    """Training processes named by TF_CONFIG (its ``chief`` and ``worker`` jobs); 1 without it."""
    cluster = _tf_config().get("cluster", {})
    return max(len(cluster.get("chief", [])) + len(cluster.get("worker", [])), 1)


def is_chief() -> bool:
    """Whether this process writes outputs: the ``chief`` task, else worker 0, else the only process.

    Under MultiWorkerMirroredStrategy every worker runs the same command; only the chief writes
    checkpoints, models and metrics and logs to MLflow.
    """
    cfg = _tf_config()
    task = cfg.get("task") or {}
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and not cfg.get("cluster", {}).get("chief")


def resolve_strategy(setting: str):
    """The tf.distribute strategy for ``train.distribute``.

    MultiWorkerMirroredStrategy has to exist before TensorFlow runs its first op in the process
    (it configures the collective runtime), so it is created before anything else is built.
    """
    import tensorflow as tf
    if setting == "auto":
        setting = "multi_worker" if _workers() > 1 else ("mirrored" if len(_gpus()) > 1 else "none")
    if setting == "none":
        return tf.distribute.get_strategy()
    if setting == "mirrored":
        return tf.distribute.MirroredStrategy()
    if setting == "multi_worker":
        if not _tf_config().get("cluster"):
            raise SeqlabError("train.distribute=multi_worker needs TF_CONFIG with a cluster.worker list")
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:  # "Collective ops must be configured at program startup"
            raise SeqlabError(f"train.distribute=multi_worker: {e}; the strategy must be created before "
                              "TensorFlow runs any op in the process") from None
    raise SeqlabError(f"train.distribute: unknown strategy {setting!r}")
