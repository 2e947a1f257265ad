"""MLflow runs: one run per trained model, its tags, and what a stage logs to it.

Stages open a run with :func:`model_run` and log through the :class:`Run` it yields; they never
import MLflow themselves.
"""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.paths import repo_root
from pipeline.tracking.store import DVC_EXP_BASELINE_REV, DVC_EXP_NAME, configure

DATA_HASH_TAG = "data_hash"
HOST_TAG, PID_TAG = "seqlab_host", "seqlab_pid"     # which process writes to a run now
INCOMPLETE_TAG = "seqlab_incomplete"                # on a version whose stage was killed


# MLflow's chart view makes one section per prefix before "/" and shows the sections in alphabetical
# order: the headline, bits per character on test and valid, is "bpc/", ahead of every other section
SECTIONS = ("test", "valid", "train", "diagnose", "data")
HEADLINE = {"test_bpc": "bpc/test", "valid_bpc": "bpc/valid"}


def chart_name(key: str) -> str:
    """The name a metric is logged to MLflow under: ``section/name``, so that the chart view groups
    it. ``test_bpc`` -> ``bpc/test`` (the headline section, first), ``test_ppl`` -> ``test/ppl``,
    ``train_loss`` -> ``train/loss``, ``diagnose_...`` -> ``diagnose/...``, ``data_...`` ->
    ``data/...``; ``parameters`` -> ``model/parameters`` and any other bare name -> ``train/name``
    (the per-epoch ``lr``, ``tokens_seen``, ``epoch``). A name holding a ``/`` already is kept. DVC
    metrics files keep the flat names; only MLflow sees these."""
    if "/" in key:
        return key
    if key in HEADLINE:
        return HEADLINE[key]
    for section in SECTIONS:
        if key.startswith(section + "_"):
            return f"{section}/{key[len(section) + 1:]}"
    return "model/parameters" if key == "parameters" else f"train/{key}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # another user's process
        return True
    return True


def reap_killed_runs(client, experiment_id: str) -> list[str]:
    """End as KILLED the runs of this machine left RUNNING by a process that no longer exists
    (a stage killed with ``kill -9`` never ends its run), and tag the versions they registered
    :data:`INCOMPLETE_TAG`: nothing after the registration (metrics, provenance) was written.
    Returns the run ids."""
    import socket

    host = socket.gethostname().replace("'", "")
    stale = client.search_runs([experiment_id], f"attributes.status = 'RUNNING' and tags.{HOST_TAG} = '{host}'",
                               max_results=1000)
    reaped = []
    for run in stale:
        pid = run.data.tags.get(PID_TAG, "")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        client.set_terminated(run.info.run_id, "KILLED")
        for version in client.search_model_versions(f"run_id = '{run.info.run_id}'"):
            client.set_model_version_tag(version.name, version.version, INCOMPLETE_TAG,
                                         f"process {pid}, which registered it, was killed before its stage ended")
        reaped.append(run.info.run_id)
    return reaped


class Run:
    """The active run of a stage: what it logs (params, metrics, text, files) and its id."""

    def __init__(self, run_id: str):
        self.id = run_id

    def log_params(self, params: dict) -> None:
        import mlflow
        mlflow.log_params(params)

    def log_metrics(self, metrics: dict) -> None:
        """Numeric values only (anything else is skipped), under their :func:`chart_name`; NaN and
        inf are kept."""
        import mlflow
        mlflow.log_metrics({chart_name(k): float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})

    def log_text(self, text: str, name: str) -> None:
        import mlflow
        mlflow.log_text(text, name)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        import mlflow
        mlflow.log_artifact(str(path), folder)

    def set_tag(self, key: str, value: str) -> None:
        import mlflow
        mlflow.set_tag(key, value)

    def log_corpus(self, splits: tuple[str, ...]) -> None:
        """The prepared corpus as this run's dataset inputs (``mlflow.data``: the runs table's
        Datasets column): one per split the run used, named ``<source> <split>``, with the split as
        its context, the data hash as its digest and the tokenizer and vocabulary in its source.
        (MLflow keeps one context per dataset, hence one dataset per split.)"""
        import mlflow
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.http_dataset_source import HTTPDatasetSource
        from mlflow.data.meta_dataset import MetaDataset

        from pipeline.io import read_json
        from pipeline.paths import PREPARED

        stats = read_json(PREPARED / "stats.json")
        spec = str(stats["source"])
        source = (HTTPDatasetSource(spec) if spec.startswith("https://") else CodeDatasetSource(
            {"corpus": spec, "tokenizer": str(stats["tokenizer"]), "vocab_size": str(stats["vocab_size"])}))
        datasets = [MetaDataset(source, name=f"{spec} {split}", digest=str(stats["data_hash"])) for split in splits]
        mlflow.log_inputs(datasets, contexts=list(splits), tags_list=[None] * len(splits))

    def log_history(self, history: list[dict], step_key: str = "step") -> None:
        log_history_metrics(history, step_key)


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
    """Tags of a model run: stage, arch, git commit, DVC experiment (when set), data hash, and the
    ``dvc repro`` it belongs to (``seqlab.repro``, :mod:`pipeline.repro`).

    A known commit is also written as ``mlflow.source.git.commit`` so the UI shows it. Inside
    ``dvc exp run`` the experiment name and baseline revision DVC sets are recorded too
    (``dvc_exp_name``, ``dvc_exp_baseline_rev``); there ``git_commit`` is the executor's
    commit, which may exist only in DVC's experiment refs.
    """
    from pipeline.repro import REPRO_TAG, current

    commit = git_commit()
    tags = {"stage": stage, "arch": arch, "git_commit": commit, DATA_HASH_TAG: data_hash}
    repro = current()
    if repro:
        tags[REPRO_TAG] = repro
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get(DVC_EXP_NAME):
        tags["dvc_exp_name"] = os.environ[DVC_EXP_NAME]
    if os.environ.get(DVC_EXP_BASELINE_REV):
        tags["dvc_exp_baseline_rev"] = os.environ[DVC_EXP_BASELINE_REV]
    return tags


@contextmanager
def model_run(experiment: str, arch: str, stage: str, data_hash: str,
              run_id: str | None = None, system_metrics: bool = False) -> Iterator["Run"]:
    """Yield the active MLflow run of one trained model, as a :class:`Run`.

    Resumes ``run_id`` when that run exists (and is not deleted) in the store, so that evaluate
    and generate add to the training run; otherwise starts a new run named ``arch``. Sets
    :func:`run_tags`; ``stage`` names the stage that wrote last and ``stages`` lists every stage
    that wrote to the run, in order. A run already active with the same id is reused and left
    open; an exception inside the block ends a run this function opened as FAILED.
    ``system_metrics``: MLflow samples CPU, memory (and GPU) use into the run while it is open.
    """
    configure(experiment)
    import socket

    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    reap_killed_runs(client, mlflow.get_experiment_by_name(experiment).experiment_id)
    existing = None
    if run_id:
        try:
            existing = client.get_run(run_id)
        except MlflowException:
            existing = None
        if existing is not None and existing.info.lifecycle_stage != "active":
            existing = None

    tags = run_tags(stage, arch, data_hash) | {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    stages = existing.data.tags.get("stages", "").split(",") if existing is not None else []
    tags["stages"] = ",".join([s for s in stages if s and s != stage] + [stage])

    active = mlflow.active_run()
    if existing is not None and active is not None and active.info.run_id == existing.info.run_id:
        mlflow.set_tags(tags)
        yield Run(active.info.run_id)
        return
    nested = active is not None
    if existing is not None:
        ctx = mlflow.start_run(run_id=existing.info.run_id, nested=nested, log_system_metrics=system_metrics)
    else:
        ctx = mlflow.start_run(run_name=arch, nested=nested, log_system_metrics=system_metrics)
    with ctx as run:
        mlflow.set_tags(tags)
        yield Run(run.info.run_id)


def log_history_metrics(history: list[dict], step_key: str = "step") -> None:
    """Log per-epoch metrics of the active run under their :func:`chart_name`, each row at
    ``step = row[step_key]``: the optimizer step by default, the x axis of the DVC plots too (an
    epoch here is ``steps_per_epoch`` steps, so the epoch number would put 30-160 steps in one).

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
            metrics.append(Metric(key=chart_name(str(key)), value=number, timestamp=now, step=step))
    client = mlflow.MlflowClient()
    for start in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000], synchronous=True)


