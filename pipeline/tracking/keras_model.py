"""Logging a Keras network as an MLflow model (``mlflow.keras`` flavor) and registering it.

The logged model carries a signature (int32 ids -> float32 logits), an input example, pinned
requirements and the vocabulary; it becomes a new version of ``<experiment>-<arch>``.
"""
from __future__ import annotations

import os
import types
from pathlib import Path

from pipeline.tracking.flavors import NO_SERVING_CHECK, unchecked_flavor
from pipeline.tracking.registry import set_version_metrics
from pipeline.tracking.requirements import pip_requirements
from pipeline.tracking.runs import DATA_HASH_TAG
from pipeline.tracking.store import quiet_mlflow

MODEL_ARTIFACT = "model"            # name of the logged Keras model inside its run
VOCAB_FILE = "vocab.json"           # file name of the vocabulary inside the logged model


def _keras_flavor(extra_files: dict[str, Path]) -> types.SimpleNamespace:
    """``mlflow.keras`` as a flavor for ``Model.log``, plus two things its ``save_model`` lacks.

    - It creates the model folder before saving the input example: ``mlflow.keras.save_model``
      writes ``input_example.json`` into a folder it has not created yet, so
      ``mlflow.keras.log_model(..., input_example=...)`` fails with FileNotFoundError
      (mlflow/mlflow#16183, still open in MLflow 3.17).
    - It copies ``extra_files`` (the vocabulary) into the model folder, so they are uploaded in
      the same step and travel with every registered version (``models:/.../vocab.json``).
    - It is logged without MLflow's in-process serving check (:mod:`pipeline.tracking.flavors`).

    ``Model.log(flavor=...)`` is exactly what ``mlflow.keras.log_model`` calls, so the MLmodel
    file, the flavor name and the loader (``mlflow.keras``) are the same.
    """
    import shutil

    import mlflow.keras

    def save_model(path, **kwargs):
        os.makedirs(path, exist_ok=True)
        mlflow.keras.save_model(path=path, **kwargs)
        for name, src in extra_files.items():
            shutil.copyfile(src, os.path.join(path, name))

    return unchecked_flavor(mlflow.keras.__name__, save_model)


def keras_signature(vocab_size: int):
    """Signature of a token model: int32 ids of shape (-1, -1) to float32 logits (-1, -1, V)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.int32), (-1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, int(vocab_size)))]),
    )


def log_keras_model(model, vocab_path: Path, registered_name: str | None, data_hash: str,
                    metrics: dict | None = None) -> str | None:
    """Log ``model`` to the active run; with ``registered_name``, also register it as a new version.

    The logged model (name :data:`MODEL_ARTIFACT`) is a Keras-flavor MLflow model
    (``mlflow.keras.load_model`` and ``mlflow.pyfunc.load_model`` both work), with a signature
    (int32 ids (-1, -1) -> float32 logits), an 8-token input example, explicit pinned pip
    requirements, and ``vocab.json`` inside the model folder. The logged model and the new
    version are tagged with ``data_hash`` (plus ``metrics`` when given, see
    :func:`set_version_metrics`). Returns the version as a string (None when not registered).

    seqlab's own stages log the network unregistered, as the run's ``model`` artifact (for users
    who want logits): the registered version of an architecture is its text generator.
    """
    quiet_mlflow()
    import keras
    import mlflow
    import numpy as np
    from mlflow.models import Model

    if mlflow.active_run() is None:
        raise RuntimeError("log_keras_model needs an active MLflow run (use model_run)")
    vocab_path = Path(vocab_path)
    if not vocab_path.is_file():
        raise FileNotFoundError(f"vocabulary file not found: {vocab_path}")
    vocab_size = int(getattr(model, "vocab_size", None) or model.output_shape[-1])   # a SequenceModel says it
    example = (np.arange(8) % vocab_size).astype(np.int32)[None, :]
    tags = {DATA_HASH_TAG: data_hash}
    interactive = keras.utils.is_interactive_logging_enabled()
    keras.utils.disable_interactive_logging()   # no progress bar from MLflow's example check
    try:
        info = Model.log(
            artifact_path=None,
            name=MODEL_ARTIFACT,
            flavor=_keras_flavor({VOCAB_FILE: vocab_path}),
            model=model,
            signature=keras_signature(vocab_size),
            input_example=example,
            pip_requirements=pip_requirements(),
            metadata={"vocab_file": VOCAB_FILE, DATA_HASH_TAG: data_hash},
            registered_model_name=registered_name,
            tags=tags,
            **NO_SERVING_CHECK,
        )
    finally:
        if interactive:
            keras.utils.enable_interactive_logging()
    if registered_name is None:
        return None
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_model_version_tag(registered_name, version, DATA_HASH_TAG, data_hash)
    if metrics:
        set_version_metrics(registered_name, version, metrics)
    return version


