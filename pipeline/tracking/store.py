"""Where MLflow runs go: the tracking URI, the artifact root, the experiment, a quiet MLflow.

Default store: ``sqlite:///<original repo>/mlflow.db`` (absolute, so that ``dvc exp run --temp``
logs to the repository's store, not to its temporary copy) with artifacts in ``mlartifacts/``
beside it; ``MLFLOW_TRACKING_URI`` wins. Importing this module is cheap: MLflow is imported inside
the functions that need it.
"""
from __future__ import annotations

import os
import shutil
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from pipeline.errors import SeqlabError
from pipeline.paths import repo_root

# Environment variables that DVC sets for every stage command (dvc/env.py).
DVC_ROOT = "DVC_ROOT"
DVC_EXP_NAME = "DVC_EXP_NAME"
DVC_EXP_BASELINE_REV = "DVC_EXP_BASELINE_REV"
# Where DVC's experiment executors copy the repository: <repo>/.dvc/tmp/exps/<queue>/<mkdtemp>.
_EXEC_TMP_PARTS = (".dvc", "tmp", "exps")

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"

_quieted = False
# what the MLflow UI opens an experiment as (its ExperimentKind enum): the runs table and charts
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
MIN_FREE_MB = 64           # a store on a fuller disk fails mid-run: refuse it up front
CONNECT_SECONDS = 3.0      # a tracking server that does not accept a connection in this long is down


# --------------------------------------------------------------------------- where things go
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
    """``$MLFLOW_TRACKING_URI`` when set (a user and password in it moved to the environment:
    :func:`_credentials_to_environment`), else ``sqlite:///<original repo>/mlflow.db`` (absolute).

    The path is absolute because ``dvc exp run --temp`` runs the stages in a temporary copy of
    the repository that is deleted afterwards; :func:`original_root` explains how the original
    repository is found from inside that copy.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return _credentials_to_environment(uri)
    return "sqlite:///" + (original_root() / DB_FILE).as_posix()   # 4 slashes: absolute


def _credentials_to_environment(uri: str) -> str:
    """``scheme://user:password@host/...`` -> ``scheme://host/...``, the user and password moved to
    ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` (unless those are set), where MLflow's client takes
    them from. MLflow prints and records its tracking URI (the "View run at" links of every run
    in a stage's log), so a URI holding a password would put it in CI logs."""
    from urllib.parse import unquote

    url = urlparse(uri)
    if url.scheme not in ("http", "https") or url.username is None:
        return uri
    os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(url.username))
    if url.password is not None:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(url.password))
    host = url.hostname + (f":{url.port}" if url.port else "")
    bare = urlunparse((url.scheme, host, url.path, url.params, url.query, url.fragment))
    os.environ["MLFLOW_TRACKING_URI"] = bare          # for MLflow code that reads the variable itself
    return bare


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
    inference" notice, no telemetry (this machine has no network), system metrics sampled every 5 s.
    Loggers: the database
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
        "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "5",   # a training run of a minute gets a curve
    }.items():
        os.environ.setdefault(key, value)
    import logging
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.store.model_registry.abstract_store",
                 "mlflow.tracking.fluent", "mlflow.tracking._model_registry.fluent",
                 "mlflow.models.model", "mlflow.utils.requirements_utils", "mlflow.system_metrics",
                 "mlflow.system_metrics.system_metrics_monitor",
                 "mlflow.utils.environment"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _quieted = True


# --------------------------------------------------------------------------- what may be written
def public_uri(uri: str | None = None) -> str:
    """``uri`` as it may be written anywhere (provenance, logs, reports, tags, error lines): no
    credentials and no path of this machine's disk.

    - ``scheme://user:token@host/path?query``: the user, password and query (which may carry a
      token) are dropped: ``scheme://host/path``.
    - A local store (``sqlite:///PATH``, ``file://PATH`` or a bare path): inside the original
      repository, the path relative to it (``sqlite:///mlflow.db``), so that every clone of the
      repository writes the same identity; elsewhere the file's name and a digest of its absolute
      path (``sqlite:///<outside the repository>/runs.db#1a2b3c4d``): another store still reads
      as another identity, and the path itself is not written.
    """
    uri = (uri if uri is not None else tracking_uri()).strip()
    for prefix in ("sqlite:///", "file://"):
        if uri.startswith(prefix):
            return prefix + _public_path(uri[len(prefix):].split("?", 1)[0])
    url = urlparse(uri)
    if not url.scheme or len(url.scheme) == 1:             # a bare path (or a Windows drive letter)
        return _public_path(uri)
    host = url.hostname or ""
    if url.port:
        host = f"{host}:{url.port}"
    return urlunparse((url.scheme, host, url.path, "", "", ""))


def _public_path(path: str) -> str:
    import hashlib

    absolute = Path(path).expanduser().resolve()
    root = original_root().resolve()
    if absolute.is_relative_to(root):
        return absolute.relative_to(root).as_posix()
    digest = hashlib.sha256(absolute.as_posix().encode()).hexdigest()[:8]
    return f"<outside the repository>/{absolute.name}#{digest}"


# --------------------------------------------------------------------------- is it usable
def _where(uri: str) -> str:
    """The store in an error line: a server without its credentials; a local store as it was given
    (a path is no secret, and the user needs it to act)."""
    shown = public_uri(uri) if urlparse(uri).scheme in ("http", "https") else uri
    return f"MLFLOW_TRACKING_URI={shown}" if os.environ.get("MLFLOW_TRACKING_URI", "").strip() else shown


def check_store(uri: str | None = None) -> None:
    """Fail in seconds, with one line naming the store and what to do, when the tracking store
    cannot take this run: a server that does not answer or refuses the credentials, an SQLite file that is not a database,
    is read-only or sits on a full disk. An SQLite store is then opened once under a lock beside
    it (MLflow creates and migrates its schema on first contact), so that processes starting on
    one new store at once do not race in the migration."""
    uri = uri or tracking_uri()
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        url = urlparse(uri)
        port = url.port or (443 if scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname, port), timeout=CONNECT_SECONDS).close()
        except OSError as e:
            raise SeqlabError(f"{_where(uri)}: the tracking server does not answer at {url.hostname}:{port} "
                              f"({e.strerror or e}); start it, or unset MLFLOW_TRACKING_URI to use "
                              f"{original_root() / DB_FILE}") from None
        _check_server(uri)
    elif uri.startswith("sqlite:///"):
        _check_sqlite(uri, Path(uri[len("sqlite:///"):].split("?", 1)[0]).resolve())


def _check_server(uri: str) -> None:
    """A server that answers must also take this process's credentials (``MLFLOW_TRACKING_USERNAME``
    and ``_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``, or the URI's user), and be an MLflow server."""
    quiet_mlflow()
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except MlflowException as e:
        text = str(e)
        if " 401" in text or " 403" in text or "nauthorized" in text or "ermission" in text:
            code = "401" if " 401" in text or "nauthorized" in text else "403"
            raise SeqlabError(f"{_where(uri)}: the tracking server refused this account (HTTP {code}); set "
                              "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
                              "to an account of the server with access to the experiment") from None
        first = text.strip().splitlines()[0][:200] if text.strip() else type(e).__name__
        raise SeqlabError(f"{_where(uri)}: the tracking server answered, but not as MLflow expects: {first}") from None


def _check_sqlite(uri: str, db: Path) -> None:
    where = f"{_where(uri)} ({db})" if os.environ.get("MLFLOW_TRACKING_URI", "").strip() else str(db)
    if not db.parent.is_dir():
        raise SeqlabError(f"{where}: the folder {db.parent} does not exist; create it or point "
                          "MLFLOW_TRACKING_URI at another store")
    free_mb = shutil.disk_usage(db.parent).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise SeqlabError(f"{where}: only {free_mb:.0f} MB free on its disk (at least {MIN_FREE_MB} MB needed); "
                          "free some space or move the store")
    if db.exists():
        mode = db.stat().st_mode
        if not mode & 0o222 or not os.access(db, os.W_OK):
            raise SeqlabError(f"{where}: the store is read-only; MLflow writes every run to it: make it "
                              f"writable (chmod u+w {db}) or point MLFLOW_TRACKING_URI at another store")
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
                verdict = con.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise SeqlabError(f"{where}: not a usable SQLite database ({e}); move it aside (it may hold "
                              "your runs: keep a copy) and run again to start a new store") from None
        if verdict != "ok":
            raise SeqlabError(f"{where}: the SQLite database is damaged ({verdict}); restore it from a "
                              "copy, or move it aside and run again to start a new store")
    # MLflow creates and migrates the schema on first contact; one process at a time does that
    from pipeline.lock import exclusive  # check only
    quiet_mlflow()
    import mlflow
    with exclusive(db.with_name(db.name + ".lock"), f"the set-up of {db}", wait=True):
        if db.exists():
            moved = follow_the_store(db)
            if moved:
                print(f"{db}: the store was moved or copied from {', '.join(moved)}; its artifact locations "
                      f"now point at {db.parent}")
        mlflow.MlflowClient(uri).search_experiments(max_results=1)


# (table, column) holding artifact locations in MLflow 3's SQL schema; absent ones are skipped
_LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
              ("model_versions", "storage_location"), ("logged_models", "artifact_location"),
              ("workspaces", "default_artifact_root"))


def follow_the_store(db: Path) -> list[str]:
    """Point the artifact locations of a local SQLite store that was moved or copied (``mv``,
    ``cp -a`` of the repository) at the artifact folders beside it, where they came along.

    The store records absolute locations, ``file://<dir>/mlartifacts/...`` for the experiments this
    module creates (:func:`_artifact_root`). Any ``<dir>`` other than the store's own folder is
    rewritten to it, so that a moved store finds its artifacts and a copy writes into its own
    folder, never the original's. (MLflow's own default experiment, which seqlab does not use,
    points wherever the process that created the store was started; it is left alone.) Returns the
    old folders that were rewritten."""
    db = Path(db).resolve()
    here = db.parent
    con = sqlite3.connect(db, timeout=60)
    try:
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return []
        old = set()
        suffix = f"/{ARTIFACTS_DIR}"
        for (location,) in con.execute("SELECT artifact_location FROM experiments"):
            if location.startswith("file://") and location.endswith(suffix):
                root = location[len("file://"):-len(suffix)]
                if Path(root) != here:
                    old.add(root)
        if not old:
            return []
        with con:
            for root in sorted(old):
                a, b = f"file://{root}{suffix}", f"file://{here}{suffix}"
                for table, column in _LOCATIONS:
                    cols = {r[1] for r in con.execute(f"PRAGMA table_info({table})")} if table in tables else ()
                    if column in cols:
                        con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                                    f"WHERE substr({column}, 1, ?) = ?", (b, len(a) + 1, len(a), a))
        return sorted(old)
    finally:
        con.close()


def configure(experiment: str) -> None:
    """Point MLflow at :func:`tracking_uri` and make ``experiment`` the active experiment.

    The experiment is tagged a model-training one (:data:`EXPERIMENT_KIND`): MLflow 3's UI opens an
    experiment without that tag in its GenAI view (traces, sessions) instead of its runs.
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
    exp = client.get_experiment_by_name(experiment)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment)


def store_identity(experiment: str) -> dict:
    """Which tracking store the pipeline logs to: its URI (as :func:`public_uri` writes it: this
    goes into git) and the id and creation time of the experiment there. A deleted and recreated
    ``mlflow.db`` or another ``MLFLOW_TRACKING_URI`` is a new identity (the stages that register
    depend on it, so they register again)."""
    configure(experiment)
    import mlflow
    exp = mlflow.get_experiment_by_name(experiment)
    return {"uri": public_uri(), "experiment": experiment, "experiment_id": exp.experiment_id,
            "created": exp.creation_time}


def client():
    """A client on :func:`tracking_uri`, which also becomes the global URI.

    Used by the registry helpers, which a stage may call outside a run (the report stage promotes
    before it opens its own run); without it MLflow would fall back to its own default store.
    """
    quiet_mlflow()
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)
