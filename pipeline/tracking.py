"""All MLflow conventions of seqlab in one place.

Every stage talks to MLflow only through this module:

- where runs go (:func:`tracking_uri`, :func:`configure`),
- one run per trained model, resumed by the stages that add to it (:func:`model_run`),
- what a run is tagged with (:func:`run_tags`),
- how a Keras model and its vocabulary are logged and registered (:func:`log_keras_model`),
- the registry's promotion gate (:func:`promote`).

Registered models are named ``<experiment>-<arch>`` (:func:`registered_name`). Importing this
module is cheap: MLflow, Keras and NumPy are imported inside the functions that need them.
"""
from __future__ import annotations

import math
import os
import subprocess
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# Environment variables that DVC sets for every stage command (dvc/env.py).
DVC_ROOT = "DVC_ROOT"
DVC_EXP_NAME = "DVC_EXP_NAME"
DVC_EXP_BASELINE_REV = "DVC_EXP_BASELINE_REV"
# Where DVC's experiment executors copy the repository: <repo>/.dvc/tmp/exps/<queue>/<mkdtemp>.
_EXEC_TMP_PARTS = (".dvc", "tmp", "exps")

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
MODEL_ARTIFACT = "model"            # name of the logged Keras model inside its run
VOCAB_FILE = "vocab.json"           # file name of the vocabulary inside the logged model
DATA_HASH_TAG = "data_hash"
CHAMPION = "champion"

_quieted = False


# --------------------------------------------------------------------------- where things go
def repo_root() -> Path:
    """The project root: the nearest folder above this file that holds ``dvc.yaml``.

    Falls back to the parent of ``pipeline/`` when no ``dvc.yaml`` exists yet. Inside a
    ``dvc exp run --temp`` executor this is the *temporary copy*; see :func:`original_root`.
    """
    here = Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    return here.parent


def _is_dvc_repo(path: Path) -> bool:
    return path.is_dir() and ((path / ".dvc").is_dir() or (path / "dvc.yaml").is_file())


def _outside_exec_copy(path: Path) -> Path:
    """``<repo>`` for a path inside ``<repo>/.dvc/tmp/exps/...``, else ``path`` itself."""
    parts = path.parts
    n = len(_EXEC_TMP_PARTS)
    for i in range(1, len(parts) - n + 1):          # the outermost copy's repo is the original
        if parts[i:i + n] == _EXEC_TMP_PARTS:
            return Path(*parts[:i])
    return path


def original_root() -> Path:
    """The repository that MLflow's local store belongs to, even inside a DVC experiment copy.

    Rule, first match wins:

    1. ``$DVC_ROOT`` when it names an existing DVC repository. DVC sets it for every stage
       command: plain ``dvc repro`` sets it to the repo root (``dvc/stage/run.py``,
       ``prepare_kwargs``: ``if DVC_ROOT not in kwargs["env"]: kwargs["env"][DVC_ROOT] =
       stage.repo.root_dir``), and every experiment run (``dvc exp run``, ``--temp``,
       ``--queue``) packs ``run_env[DVC_ROOT] = self.repo.root_dir`` of the *parent* repo into
       the executor (``dvc/repo/experiments/queue/base.py``, "Override DVC_ROOT env var to point
       to the parent DVC repo root (and not an executor tempdir root)"), together with
       ``DVC_EXP_NAME`` and ``DVC_EXP_BASELINE_REV``.
    2. Otherwise :func:`repo_root`, moved out of an executor copy: ``--temp`` and queued runs
       copy the repo into ``<repo>/.dvc/tmp/exps/<queue>/<mkdtemp>`` (``TempDirExecutor.
       from_stash_entry``: ``parent_dir = wdir or os.path.join(repo.tmp_dir, EXEC_TMP_DIR)``
       with ``EXEC_TMP_DIR = "exps"`` and ``repo.tmp_dir = <repo>/.dvc/tmp``; ``--temp`` uses
       ``wdir = .dvc/tmp/exps/standalone``), so a path containing ``.dvc/tmp/exps`` is mapped
       to the folder above ``.dvc``. This covers a stage command run by hand inside a copy.
    """
    env_root = os.environ.get(DVC_ROOT)
    if env_root:
        candidate = Path(env_root).expanduser().resolve()
        if _is_dvc_repo(candidate):
            return _outside_exec_copy(candidate)
    return _outside_exec_copy(repo_root())


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<original repo>/mlflow.db`` (absolute).

    The path is absolute because ``dvc exp run --temp`` runs the stages in a temporary copy of
    the repository that is deleted afterwards; :func:`original_root` explains how the original
    repository is found from inside that copy.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    return "sqlite:///" + (original_root() / DB_FILE).as_posix()   # 4 slashes: absolute


def _artifact_root(uri: str) -> str | None:
    """Artifact location for new experiments: ``mlartifacts/`` beside a local sqlite store.

    Without it MLflow would default to ``./mlruns`` relative to the working directory, i.e.
    inside the temporary copy of ``dvc exp run --temp``. Remote stores choose for themselves.
    """
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):].split("?", 1)[0]).resolve()  # relative: like SQLAlchemy
        return (db.parent / ARTIFACTS_DIR).as_uri()
    return None


def quiet_mlflow() -> None:
    """Silence MLflow's per-run noise (idempotent); real warnings and errors still show.

    Environment defaults (a value already set by the user wins): no GitPython refresh warning
    when git is missing, no artifact progress bars, no "environment variables used during
    inference" notice, no telemetry (this machine has no network). Loggers: the database
    migration and experiment creation INFO lines.
    """
    global _quieted
    if _quieted:
        return
    for key, value in {
        "GIT_PYTHON_REFRESH": "quiet",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_RECORD_ENV_VARS_IN_MODEL_LOGGING": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }.items():
        os.environ.setdefault(key, value)
    import logging
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.store.model_registry.abstract_store",
                 "mlflow.tracking.fluent", "mlflow.tracking._model_registry.fluent",
                 "mlflow.models.model", "mlflow.utils.requirements_utils",
                 "mlflow.utils.environment"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _quieted = True


def configure(experiment: str) -> None:
    """Point MLflow at :func:`tracking_uri` and make ``experiment`` the active experiment.

    Creates the experiment when missing (with its artifacts under ``<repo>/mlartifacts`` for the
    default local store) and restores it when it was deleted. Idempotent and safe when two
    processes create the same experiment at once.
    """
    quiet_mlflow()
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        try:
            client.create_experiment(experiment, artifact_location=_artifact_root(uri))
        except MlflowException:  # created meanwhile by another process
            if client.get_experiment_by_name(experiment) is None:
                raise
    elif exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    mlflow.set_experiment(experiment)


def _client():
    """A client on :func:`tracking_uri`, which also becomes the global URI.

    Used by the registry helpers, which a stage may call outside :func:`model_run` (the report
    stage promotes before it opens its own run); without it MLflow would fall back to its own
    default store instead of ours.
    """
    quiet_mlflow()
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def registered_name(experiment: str, arch: str) -> str:
    """Registry name of an architecture's models: ``<experiment>-<arch>``, e.g. ``seqlab-lstm``."""
    return f"{experiment}-{arch}"


# --------------------------------------------------------------------------- runs
def git_commit(cwd: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the project, or ``"unknown"`` (no git, no commit yet)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or repo_root(),
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else "unknown"


def run_tags(stage: str, arch: str, data_hash: str) -> dict[str, str]:
    """Tags of a model run: stage, arch, git commit, DVC experiment (when set), data hash.

    A known commit is also written as ``mlflow.source.git.commit`` so the UI shows it. Inside
    ``dvc exp run`` the experiment name and baseline revision DVC sets are recorded too
    (``dvc_exp_name``, ``dvc_exp_baseline_rev``); there ``git_commit`` is the executor's
    commit, which may exist only in DVC's experiment refs.
    """
    commit = git_commit()
    tags = {"stage": stage, "arch": arch, "git_commit": commit, DATA_HASH_TAG: data_hash}
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get(DVC_EXP_NAME):
        tags["dvc_exp_name"] = os.environ[DVC_EXP_NAME]
    if os.environ.get(DVC_EXP_BASELINE_REV):
        tags["dvc_exp_baseline_rev"] = os.environ[DVC_EXP_BASELINE_REV]
    return tags


@contextmanager
def model_run(experiment: str, arch: str, stage: str, data_hash: str,
              run_id: str | None = None) -> Iterator[Any]:
    """Yield the active MLflow run of one trained model.

    Resumes ``run_id`` when that run exists (and is not deleted) in the store, so that evaluate
    and generate add to the training run; otherwise starts a new run named ``arch``. Sets
    :func:`run_tags`; ``stage`` names the stage that wrote last and ``stages`` lists every stage
    that wrote to the run, in order. A run already active with the same id is reused and left
    open; an exception inside the block ends a run this function opened as FAILED.
    """
    configure(experiment)
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    existing = None
    if run_id:
        try:
            existing = client.get_run(run_id)
        except MlflowException:
            existing = None
        if existing is not None and existing.info.lifecycle_stage != "active":
            existing = None

    tags = run_tags(stage, arch, data_hash)
    stages = existing.data.tags.get("stages", "").split(",") if existing is not None else []
    tags["stages"] = ",".join([s for s in stages if s and s != stage] + [stage])

    active = mlflow.active_run()
    if existing is not None and active is not None and active.info.run_id == existing.info.run_id:
        mlflow.set_tags(tags)
        yield active
        return
    nested = active is not None
    if existing is not None:
        ctx = mlflow.start_run(run_id=existing.info.run_id, nested=nested)
    else:
        ctx = mlflow.start_run(run_name=arch, nested=nested)
    with ctx as run:
        mlflow.set_tags(tags)
        yield run


def log_history_metrics(history: list[dict], step_key: str = "epoch") -> None:
    """Log per-epoch metrics of the active run, each row at ``step = row[step_key]``.

    Rows without ``step_key`` use their index. Non-numeric values are skipped; NaN and inf are
    kept (MLflow stores them). One batched call per 1000 values.
    """
    import time

    import mlflow
    from mlflow.entities import Metric

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_history_metrics needs an active MLflow run (use model_run)")
    now = int(time.time() * 1000)
    metrics = []
    for index, row in enumerate(history):
        step = int(row.get(step_key, index))
        for key, value in row.items():
            if key == step_key or isinstance(value, bool):
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            metrics.append(Metric(key=str(key), value=number, timestamp=now, step=step))
    client = mlflow.MlflowClient()
    for start in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000], synchronous=True)


# --------------------------------------------------------------------------- models
def _pip_requirements() -> list[str]:
    """Pinned requirements of a logged Keras model, given explicitly.

    MLflow would otherwise infer them by loading the model in a subprocess that imports
    TensorFlow, which costs about ten seconds per logged model.
    """
    from importlib.metadata import PackageNotFoundError, version

    import keras

    backend = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(
        keras.backend.backend())
    reqs = []
    for package in ("keras", backend, "numpy"):
        if package:
            try:
                reqs.append(f"{package}=={version(package)}")
            except PackageNotFoundError:
                reqs.append(package)
    return reqs


def _keras_flavor(extra_files: dict[str, Path]) -> types.SimpleNamespace:
    """``mlflow.keras`` as a flavor for ``Model.log``, plus two things its ``save_model`` lacks.

    - It creates the model folder before saving the input example: ``mlflow.keras.save_model``
      writes ``input_example.json`` into a folder it has not created yet, so
      ``mlflow.keras.log_model(..., input_example=...)`` fails with FileNotFoundError
      (mlflow/mlflow#16183, still open in MLflow 3.17).
    - It copies ``extra_files`` (the vocabulary) into the model folder, so they are uploaded in
      the same step and travel with every registered version (``models:/.../vocab.json``).

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

    return types.SimpleNamespace(__name__=mlflow.keras.__name__, save_model=save_model)


def keras_signature(vocab_size: int):
    """Signature of a token model: int32 ids of shape (-1, -1) to float32 logits (-1, -1, V)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.int32), (-1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, int(vocab_size)))]),
    )


def log_keras_model(model, vocab_path: Path, registered_name: str, data_hash: str,
                    metrics: dict | None = None) -> str:
    """Log ``model`` to the active run and register it as a new version of ``registered_name``.

    The logged model (name :data:`MODEL_ARTIFACT`) is a Keras-flavor MLflow model
    (``mlflow.keras.load_model`` and ``mlflow.pyfunc.load_model`` both work), with a signature
    (int32 ids (-1, -1) -> float32 logits), an 8-token input example, explicit pinned pip
    requirements, and ``vocab.json`` inside the model folder. The logged model and the new
    version are tagged with ``data_hash`` (plus ``metrics`` when given, see
    :func:`set_version_metrics`). Returns the version as a string.
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
    vocab_size = int(model.output_shape[-1])
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
            pip_requirements=_pip_requirements(),
            metadata={"vocab_file": VOCAB_FILE, DATA_HASH_TAG: data_hash},
            registered_model_name=registered_name,
            tags=tags,
        )
    finally:
        if interactive:
            keras.utils.enable_interactive_logging()
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_model_version_tag(registered_name, version, DATA_HASH_TAG, data_hash)
    if metrics:
        set_version_metrics(registered_name, version, metrics)
    return version


def set_version_metrics(registered_name: str, version: str, metrics: dict) -> None:
    """Tag a registered version with metrics (e.g. ``test_bpc``), stored as ``repr(float)``."""
    client = _client()
    for key, value in metrics.items():
        client.set_model_version_tag(registered_name, str(version), key, repr(float(value)))


def _find_version(client, registered_name: str, version: str, run_id: str | None):
    """The store's ``version`` of ``registered_name`` (logged by run ``run_id`` when given), or None.

    A new store numbers its versions from 1 again, so a version number alone does not identify a
    model: with ``run_id``, a version another run logged counts as missing.
    """
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_model_version(registered_name, str(version))
    except MlflowException:
        return None
    return found if run_id is None or found.run_id == run_id else None


def holds_version(registered_name: str, version: str, run_id: str) -> bool:
    """Whether the store has ``version`` of ``registered_name``, logged by run ``run_id``."""
    return _find_version(_client(), registered_name, version, run_id) is not None


def _metric_tag(tags: dict, metric: str) -> float | None:
    try:
        value = float(tags[metric])
    except (KeyError, TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def promote(registered_name: str, version: str, metric: str = "test_bpc",
            alias: str = CHAMPION, run_id: str | None = None) -> dict:
    """The promotion gate: move ``alias`` to ``version`` only when it is better. Lower is better.

    - No holder yet: the version takes the alias ("first version"), provided it has ``metric``.
    - The version has no ``metric`` tag: never promoted.
    - The holder has no ``metric`` tag: the evaluated version takes over.
    - Holder and version evaluated on different data (``data_hash`` tags differ): the holder is
      KEPT ("holder evaluated on different data"). Bits per character of different corpora or
      splits are not comparable, so neither winning nor losing that comparison means anything;
      moving the alias silently would let a corpus change replace (or protect) the served model
      by accident. Moving it is a human decision: re-evaluate the holder on the new data and
      call :func:`set_version_metrics` with the new ``data_hash``, or set the alias by hand
      (``MlflowClient().set_registered_model_alias``). The returned reason says so.
    - Otherwise the version takes the alias only when its metric is strictly lower.

    The outcome is written on the version as tag ``promotion``. Returns
    ``{"promoted", "reason", "holder_version", "holder_metric", "version", "version_metric",
    "is_champion"}`` where ``holder_*`` describe the holder before this call (``None`` when there
    was none), ``promoted`` says whether this call moved the alias and ``is_champion`` whether
    ``version`` holds it afterwards (true as well on a re-run: "already holds champion").
    A version the store does not have (or, with ``run_id``, that another run logged: a new
    store numbers versions from 1 again) is not promoted, and the reason says so.
    """
    from mlflow.exceptions import MlflowException

    client = _client()
    version = str(version)
    try:
        holder = client.get_model_version_by_alias(registered_name, alias)
    except MlflowException:
        holder = None
    holder_version = str(holder.version) if holder is not None else None
    holder_metric = _metric_tag(holder.tags, metric) if holder is not None else None
    candidate = _find_version(client, registered_name, version, run_id)
    if candidate is None:  # e.g. metrics written against another tracking store
        return {"promoted": False, "reason": f"version {version} of {registered_name} is not in the tracking "
                f"store {tracking_uri()}" + (f" from run {run_id}" if run_id else "") + ": re-run its evaluate "
                "stage to register it",
                "holder_version": holder_version, "holder_metric": holder_metric, "version": version,
                "version_metric": None, "is_champion": False}
    cand_metric = _metric_tag(candidate.tags, metric)

    def result(promoted: bool, reason: str) -> dict:
        if promoted:
            client.set_registered_model_alias(registered_name, alias, version)
        client.set_model_version_tag(registered_name, version, "promotion", reason)
        return {"promoted": promoted, "reason": reason, "holder_version": holder_version,
                "holder_metric": holder_metric, "version": version, "version_metric": cand_metric,
                "is_champion": promoted or holder_version == version}

    if cand_metric is None:
        return result(False, f"version {version} has no {metric}")
    if holder is None:
        return result(True, "first version")
    if holder_version == version:
        return result(False, f"already holds {alias}")
    if holder_metric is None:
        return result(True, f"holder has no {metric}")
    if holder.tags.get(DATA_HASH_TAG) != candidate.tags.get(DATA_HASH_TAG):
        return result(False, "holder evaluated on different data")
    if cand_metric < holder_metric:
        return result(True, f"better {metric}: {cand_metric:.6g} < {holder_metric:.6g}")
    return result(False, f"not better {metric}: {cand_metric:.6g} >= {holder_metric:.6g}")
