"""pipeline.tracking and pipeline.tracking.pyfunc against a real MLflow: a sqlite store in a temporary
folder, one `mlflow server` subprocess, and one real `dvc exp run --temp`."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import SeqlabError
from pipeline.paths import repo_root
from tests import mlflow_server as mlflow_server_mod
from tests.conftest import tracking_store
from pipeline.tracking import keras_model, pyfunc, registry, runs, store

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
VOCAB = {"tokenizer": "char", "tokens": ["<bos>", "<unk>"] + list("abcdefghijklmnopqr"),
         "options": {}}


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """One sqlite store for the module (each new store costs a schema migration)."""
    folder = tmp_path_factory.mktemp("mlflow")
    with tracking_store(folder):
        yield folder


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(VOCAB), encoding="utf-8")
    return path


def tiny_model(vocab_size=20, seed=0):
    import keras
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((None,), dtype="int32"),
                             keras.layers.Embedding(vocab_size, 8),
                             keras.layers.Dense(vocab_size)])


def _fake_repo(path: Path) -> Path:
    (path / ".dvc").mkdir(parents=True)
    (path / "dvc.yaml").write_text("stages: {}\n")
    return path


# --------------------------------------------------------------------------- tracking URI
def test_tracking_uri_default_is_absolute_sqlite_in_repo(monkeypatch):
    for key in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        monkeypatch.delenv(key, raising=False)
    uri = store.tracking_uri()
    assert uri.startswith("sqlite:////"), uri          # four slashes: an absolute path
    db = Path(uri[len("sqlite:///"):])
    assert db.is_absolute() and db.name == "mlflow.db"
    assert db.parent == store.original_root() == repo_root() == ROOT


def test_tracking_uri_env_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    monkeypatch.setenv("DVC_ROOT", str(ROOT))
    assert store.tracking_uri() == "http://127.0.0.1:5999"


def test_public_uri_drops_credentials_and_machine_paths(tmp_path):
    root = store.original_root()
    assert store.public_uri("https://u:tok@mlflow.example.org:8443/base?token=abc#x") == "https://mlflow.example.org:8443/base"
    assert store.public_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert store.public_uri(f"sqlite:///{root}/mlflow.db") == "sqlite:///mlflow.db"      # the same in every clone
    outside = store.public_uri(f"sqlite:///{tmp_path}/runs.db")
    assert outside.startswith("sqlite:///<outside the repository>/runs.db#") and str(tmp_path) not in outside
    assert outside != store.public_uri(f"sqlite:///{tmp_path}/other/runs.db")         # another store, another id
    assert store.public_uri(str(root / "mlruns")) == "mlruns"


def test_dvc_temp_rule_dvc_root(monkeypatch, tmp_path):
    """Inside `dvc exp run --temp` DVC_ROOT names the original repo, not the copy."""
    repo = _fake_repo(tmp_path / "repo")
    copy = _fake_repo(repo / ".dvc" / "tmp" / "exps" / "standalone" / "tmpabc123")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(store, "repo_root", lambda: copy)
    monkeypatch.setenv("DVC_ROOT", str(repo))
    assert store.tracking_uri() == f"sqlite:///{repo.resolve() / 'mlflow.db'}"


def test_dvc_temp_rule_copy_path(monkeypatch, tmp_path):
    """Without (or with a useless) DVC_ROOT, a path under <repo>/.dvc/tmp/exps/ maps to <repo>."""
    repo = _fake_repo(tmp_path / "repo")
    copy = _fake_repo(repo / ".dvc" / "tmp" / "exps" / "celery" / "tmpxyz")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(store, "repo_root", lambda: copy)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert store.original_root() == repo
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "does-not-exist"))
    assert store.tracking_uri() == f"sqlite:///{repo / 'mlflow.db'}"
    monkeypatch.setenv("DVC_ROOT", str(copy))            # even a DVC_ROOT inside a copy
    assert store.original_root() == repo


@pytest.mark.skipif(shutil.which("git") is None or not (BIN / "dvc").exists(),
                    reason="needs git and the venv's dvc")
def test_dvc_exp_run_temp_puts_db_in_original_repo(tmp_path):
    """A real `dvc exp run --temp`: the stage runs in a copy, the store stays in the repo."""
    repo = tmp_path / "repo"
    for rel in ("__init__.py", "paths.py", "errors.py", "lock.py", "io.py", "repro.py", "tracking/__init__.py",
                "tracking/store.py", "tracking/runs.py"):
        (repo / "pipeline" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "pipeline" / rel, repo / "pipeline" / rel)
    probe = tmp_path / "probe.json"
    (repo / "probe.py").write_text(
        "import json, os, sys\nfrom pipeline.paths import repo_root\nfrom pipeline.tracking import runs, store\n"
        "json.dump({'uri': store.tracking_uri(), 'root': str(repo_root()), 'cwd': os.getcwd(),"
        " 'tags': runs.run_tags('train', 'lstm', 'h')}, open(sys.argv[1], 'w'))\n")
    (repo / "dvc.yaml").write_text(
        f"stages:\n  probe:\n    cmd: {sys.executable} probe.py {probe} && echo done > out.txt\n"
        "    deps: [probe.py]\n    outs: [out.txt]\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "GIT_DIR")}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com", DVC_NO_ANALYTICS="1",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")

    def sh(*cmd):
        out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{cmd}: {out.stdout}\n{out.stderr}"

    sh("git", "init", "-q")
    sh(str(BIN / "dvc"), "init", "-q")
    (repo / ".gitignore").write_text("/out.txt\n")
    sh("git", "add", "-A")
    sh("git", "commit", "-q", "-m", "init")
    sh(str(BIN / "dvc"), "exp", "run", "--temp", "-n", "probe-exp")
    got = json.loads(probe.read_text())
    copy = Path(got["root"])
    assert (repo / ".dvc" / "tmp" / "exps") in copy.parents, got   # it really ran in a copy
    assert got["uri"] == f"sqlite:///{repo.resolve() / 'mlflow.db'}"
    assert got["tags"]["dvc_exp_name"] == "probe-exp"
    assert len(got["tags"]["dvc_exp_baseline_rev"]) == 40


# --------------------------------------------------------------------------- runs and registry
def _version(client, name, data_hash, bpc=None):
    """A registered version without a real model (fast): what promote() reads are its tags."""
    from mlflow.exceptions import MlflowException
    try:
        client.create_registered_model(name)
    except MlflowException:
        pass
    mv = client.create_model_version(name, source="file:///nonexistent",
                                     tags={runs.DATA_HASH_TAG: data_hash})
    if bpc is not None:
        registry.set_version_metrics(name, mv.version, {"test_bpc": bpc})
    return str(mv.version)


def test_the_promotion_rule():
    """judge(): lower is better, by more than the relative margin; a data change is taken, and says so."""
    judge = registry.judge
    held = {"version": "1", "metric": 2.0, "data_hash": "A"}

    def cand(metric, data="A", version="2"):
        return {"version": version, "metric": metric, "data_hash": data}
    assert judge(None, cand(2.0), "test_bpc", 0.005) == (True, "first version")
    assert judge(held, cand(None), "test_bpc", 0.005) == (False, "version 2 has no test_bpc")
    assert judge(held, cand(2.0, version="1"), "test_bpc", 0.005) == (False, "already holds champion")
    assert judge({"version": "1", "metric": None, "data_hash": "A"}, cand(3.0), "test_bpc", 0.005)[0]
    assert judge(held, cand(1.98), "test_bpc", 0.005)[0]                 # 1% better
    ok, why = judge(held, cand(1.995), "test_bpc", 0.005)                # 0.25% better: noise
    assert not ok and why.startswith("within the 0.50% margin") and "needs < 1.99" in why
    assert judge(held, cand(1.995), "test_bpc", 0.0)[0]                  # no margin: any gain
    assert judge(held, cand(2.5), "test_bpc", 0.005) == (False, "not better test_bpc: 2.5 >= 2")
    ok, why = judge(held, cand(2.5, data="B"), "test_bpc", 0.005)        # new data: proposed, however it scores
    assert ok and why.startswith("data changed: champion version 1 was evaluated on data A, version 2 on B")


def test_an_unreviewed_run_proposes_and_an_accepted_one_promotes(mlflow_store):
    store.configure("seqlab-gate")
    client = store.client()
    name = registry.registered_name("seqlab-gate", "lstm")
    assert name == "seqlab-gate-lstm"

    def alias(which):
        try:
            return str(client.get_model_version_by_alias(name, which).version)
        except Exception:
            return None

    v1 = _version(client, name, "A", 2.0)
    r = registry.propose(name, v1)
    assert r["accepted"] and not r["promoted"] and not r["is_champion"] and r["reason"] == "first version"
    assert alias("challenger") == v1 and alias("champion") is None    # proposing never moves champion
    r = registry.promote(name, v1)
    assert r["promoted"] and r["is_champion"] and r["holder_version"] is None
    assert alias("champion") == v1 and alias("challenger") is None    # the accepted challenger is champion now

    v2 = _version(client, name, "A", 2.5)                             # worse: not proposed
    r = registry.propose(name, v2)
    assert not r["accepted"] and r["holder_version"] == v1 and r["holder_metric"] == 2.0
    assert alias("challenger") is None and client.get_model_version(name, v2).tags["proposal"] == r["reason"]
    v3 = _version(client, name, "A", 1.995)                           # inside the margin: not proposed
    assert not registry.propose(name, v3, margin=0.005)["accepted"]

    v4 = _version(client, name, "A", 1.5)                             # better: proposed, then accepted
    assert registry.propose(name, v4)["accepted"] and alias("challenger") == v4 and alias("champion") == v1
    v5 = _version(client, name, "B", 2.2)                             # a later run on new data, proposed too
    r = registry.propose(name, v5)
    assert r["accepted"] and r["reason"].startswith("data changed") and alias("challenger") == v5
    r = registry.promote(name, v4)                 # the review of v4 is accepted: v4 is what moves
    assert r["promoted"] and alias("champion") == v4 and alias("challenger") == v5
    assert client.get_model_version(name, v4).tags["promotion"] == r["reason"]

    v6 = _version(client, name, "A")                                  # not evaluated: never
    assert not registry.promote(name, v6)["promoted"]
    r = registry.promote(name, v4)                                    # idempotent
    assert not r["promoted"] and r["reason"] == "already holds champion" and r["is_champion"]
    assert alias("champion") == v4


def test_versions_the_store_lacks_are_named_not_promoted(mlflow_store):
    store.configure("seqlab-gate-missing")
    client = store.client()
    name = registry.registered_name("seqlab-gate-missing", "gru")
    holder = _version(client, name, "A", 2.0)
    assert registry.promote(name, holder)["promoted"]
    with runs.model_run("seqlab-gate-missing", "gru", "train", "A") as run:
        pass
    mv = client.create_model_version(name, source="file:///nonexistent", run_id=run.id,
                                     tags={runs.DATA_HASH_TAG: "A"})
    registry.set_version_metrics(name, mv.version, {"test_bpc": 1.0})
    assert registry.holds_version(name, mv.version, run.id)
    assert not registry.holds_version(name, mv.version, "another-run")      # same number, other store's run
    assert not registry.holds_version(name, "99", run.id)
    assert not registry.holds_version("seqlab-no-such-model", "1", run.id)

    for version, run_id in (("99", None), (str(mv.version), "another-run")):
        r = registry.promote(name, version, run_id=run_id)
        assert not r["promoted"] and not r["is_champion"], r
        assert "is not in the tracking store" in r["reason"] and r["holder_version"] == holder
    r = registry.promote(name, str(mv.version), run_id=run.id)
    assert r["promoted"] and r["holder_version"] == holder


def test_metrics_are_named_by_chart_section():
    """MLflow's chart view groups by the prefix before '/' and orders the sections alphabetically
    (seen in MLflow 3.17's UI): bits per character, the headline, must come first."""
    name = runs.chart_name
    names = [name(k) for k in ("test_bpc", "valid_bpc", "test_ppl", "valid_loss", "train_loss",
                               "train_tokens_per_second", "lr", "epoch", "parameters",
                               "diagnose_effective_context_tokens", "data_train_tokens", "test/bpc")]
    assert names == ["bpc/test", "bpc/valid", "test/ppl", "valid/loss", "train/loss", "train/tokens_per_second",
                     "train/lr", "train/epoch", "model/parameters", "diagnose/effective_context_tokens",
                     "data/train_tokens", "test/bpc"]
    sections = sorted({n.split("/")[0] for n in names} | {"system"})    # the UI's order of sections
    assert sections[0] == "bpc", sections                               # the headline first


def test_model_run_tags_resume_and_history(mlflow_store):
    with runs.model_run("seqlab-runs", "gru", "train", "hash1") as run:
        runs.log_history_metrics([{"step": 1, "loss": 2.0, "note": "x"},
                                      {"step": 2, "loss": 1.5, "lr": 1e-3}])
        run_id = run.id
    with runs.model_run("seqlab-runs", "gru", "evaluate", "hash1", run_id=run_id) as again:
        assert again.id == run_id
        again.log_metrics({"test_bpc": 1.9, "note": "not a number: skipped"})
    client = store.client()
    got = client.get_run(run_id)
    assert got.info.run_name == "gru" and got.info.status == "FINISHED"
    tags = got.data.tags
    assert tags["arch"] == "gru" and tags["data_hash"] == "hash1" and tags["stage"] == "evaluate"
    assert tags["stages"] == "train,evaluate" and "git_commit" in tags
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")] == [(1, 2.0), (2, 1.5)]
    assert got.data.metrics["bpc/test"] == 1.9
    # the UI opens the experiment on its training runs, not in the GenAI view
    assert client.get_experiment(got.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    with runs.model_run("seqlab-runs", "gru", "train", "hash1", run_id="0" * 32) as fresh:
        assert fresh.id != run_id                      # unknown id: a new run


def test_log_keras_model_registers_loads_back(mlflow_store, vocab_file, monkeypatch):
    import mlflow
    model = tiny_model()
    x = np.random.default_rng(0).integers(0, 20, size=(3, 7)).astype(np.int32)
    name = registry.registered_name("seqlab-keras", "lstm")
    checks = serving_checks(monkeypatch)
    with runs.model_run("seqlab-keras", "lstm", "train", "hashK"):
        t0 = time.perf_counter()
        version = keras_model.log_keras_model(model, vocab_file, name, "hashK", {"test_bpc": 3.25})
        seconds = time.perf_counter() - t0
    print(f"log_keras_model: {seconds:.2f} s")
    assert seconds < 30 and checks == []
    client = store.client()
    mv = client.get_model_version(name, version)
    assert mv.tags["data_hash"] == "hashK" and float(mv.tags["test_bpc"]) == 3.25
    uri = f"models:/{name}/{version}"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    assert json.loads((local / "vocab.json").read_text()) == VOCAB
    assert (local / "input_example.json").exists()
    info = mlflow.models.get_model_info(uri)
    assert tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, -1)
    loaded = mlflow.keras.load_model(uri)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
    assert registry.promote(name, version)["promoted"]


# --------------------------------------------------------------------------- mlflow server
@pytest.fixture(scope="module", autouse=True)
def _servers(request, tmp_path_factory):
    """Start the real servers this module's selected tests use (a plain one, one with the basic-auth
    app) as the module begins, so that their 10-20 s starts overlap the other tests."""
    wanted = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    started = {}
    if "mlflow_server" in wanted:
        started["plain"] = mlflow_server_mod.start(tmp_path_factory.mktemp("server"))
    if "auth_server" in wanted:
        started["auth"] = mlflow_server_mod.start(tmp_path_factory.mktemp("auth-server"), auth=True)
    try:
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture
def mlflow_server(_servers):
    """The plain server's URL and artifact folder, once /health answers (bounded wait)."""
    server = _servers["plain"].wait()
    return server.url, server.artifacts


@pytest.fixture
def auth_server(_servers):
    return _servers["auth"].wait()


def test_against_mlflow_server(mlflow_server, monkeypatch, vocab_file):
    import mlflow
    url, artifacts = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    assert store.tracking_uri() == url
    name = registry.registered_name("seqlab-server", "gru")
    with runs.model_run("seqlab-server", "gru", "train", "hashS") as run:
        runs.log_history_metrics([{"epoch": 1, "loss": 1.0}])
        version = keras_model.log_keras_model(tiny_model(seed=1), vocab_file, name, "hashS",
                                           {"test_bpc": 2.0})
    assert mlflow.get_tracking_uri() == url
    assert registry.promote(name, version)["reason"] == "first version"
    client = store.client()
    assert client.get_run(run.id).data.tags["arch"] == "gru"
    assert client.get_model_version_by_alias(name, "champion").tags["data_hash"] == "hashS"
    assert list(artifacts.rglob("vocab.json")), "artifacts must go through the server's store"


def test_the_basic_auth_server_takes_the_account_from_the_environment_and_refuses_a_wrong_one(auth_server,
                                                                                               monkeypatch):
    user, password = mlflow_server_mod.ADMIN
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-" + password)
    with pytest.raises(SeqlabError) as refused:
        store.check_store()
    assert str(refused.value) == (f"MLFLOW_TRACKING_URI={auth_server.url}: the tracking server refused this account "
                                  "(HTTP 401); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
                                  "MLFLOW_TRACKING_TOKEN) to an account of the server with access to the experiment")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    store.check_store()
    with runs.model_run("seqlab-auth", "gru", "train", "hashA") as run:
        run.log_metrics({"test_bpc": 2.0})
    assert store.client().get_run(run.id).data.metrics["bpc/test"] == 2.0


def test_credentials_in_the_tracking_uri_are_written_nowhere(mlflow_server, tmp_path, monkeypatch, capsys):
    """A tracking URI with a user and password (``http://user:secret@host``) talks to the server, and
    neither the password nor a path of this machine reaches a file of the repository (what a pull
    request commits), the stage's output or a run's log and tags (the user and password move to
    MLFLOW_TRACKING_USERNAME/PASSWORD); a version the store lacks is named without it too."""
    from tests.repo_copy import make_tiny_repo, run

    url, _ = mlflow_server
    repo = make_tiny_repo(tmp_path / "repo", commit=False)
    import secrets
    password = "pw-" + secrets.token_hex(8)       # made here: no file of the repository holds it beforehand
    secret_uri = url.replace("http://", f"http://seqlab-user:{password}@")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", secret_uri)
    env_run = subprocess.run([sys.executable, "-m", "stages.store"], cwd=repo, capture_output=True, text=True,
                             timeout=300, env=dict(os.environ, MLFLOW_TRACKING_URI=secret_uri))
    assert env_run.returncode == 0, env_run.stderr[-3000:]
    identity = json.loads((repo / "provenance" / "store.json").read_text())
    assert identity["uri"] == url, identity
    leaked = [str(f.relative_to(repo)) for f in repo.rglob("*") if f.is_file()
              and any(word in f.read_bytes() for word in (password.encode(), str(tmp_path).encode()))]
    assert not leaked, leaked
    assert password not in env_run.stdout + env_run.stderr, env_run.stdout
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert store.tracking_uri() == url and os.environ["MLFLOW_TRACKING_PASSWORD"] == password
    with runs.model_run("seqlab-secret", "gru", "train", "hashP") as run:     # MLflow prints "View run at <uri>"
        run.log_metrics({"test_bpc": 1.0})
    printed = capsys.readouterr()
    assert f"View run gru at: {url}/#/experiments/" in printed.out and password not in printed.out + printed.err
    assert password not in json.dumps(store.client().get_run(run.id).to_dictionary())
    reason = registry.promote("seqlab-nothing", "7")["reason"]
    assert f"is not in the tracking store {url}" in reason and password not in reason, reason


# --------------------------------------------------------------------------- serving
class StubTokenizer:
    kind = "char"

    def encode(self, text):
        return np.array([2 + (ord(c) % 18) for c in text], dtype=np.int32)

    def decode(self, ids):
        return "".join(chr(ord("a") + int(i) % 26) for i in ids)


def stub_load_tokenizer(path):
    assert Path(path).name == "vocab.json"
    return StubTokenizer()


class StubModel:
    """Stands in for a saved model: random ids, plus the settings it was asked to sample with."""

    def __init__(self, folder):
        self.folder = folder

    def sample(self, prompt_ids, num_tokens, rng, temperature, top_k, top_p):
        assert prompt_ids.dtype == np.int32
        ids = list(rng.integers(0, 26, size=num_tokens))
        return ids + [int(temperature * 10), top_k, int(top_p * 10)]


def stub_load_model(folder):
    from pipeline.generation.text import HostSampler
    assert (Path(folder) / "config.json").exists()
    return HostSampler(StubModel(folder))


def serving_checks(monkeypatch) -> list:
    """The calls of MLflow's in-process serving check (``Model.log`` loads the model it saved and
    predicts its input example): seqlab logs without it (pipeline.tracking.flavors)."""
    import mlflow.models.utils
    calls = []
    monkeypatch.setattr(mlflow.models.utils, "_validate_serving_input", lambda *a, **k: calls.append(a))
    return calls


def test_generator_pyfunc_with_stub_decoder(mlflow_store, tmp_path, vocab_file, monkeypatch):
    import mlflow
    import pandas as pd

    from pipeline.models.recurrent import RecurrentParams
    folder = tmp_path / "net"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    stubbed = pyfunc.TextGenerator({"max_tokens": 4}, load_model_fn=stub_load_model,
                                   load_tokenizer_fn=stub_load_tokenizer)
    with runs.model_run("seqlab-serving", "lstm", "serve", "hashG"):
        checks = serving_checks(monkeypatch)
        info = pyfunc.log_generator(folder, vocab_file, RecurrentParams(family="lstm", units=8),
                                    python_model=stubbed)
    assert checks == []                                  # logged without running it
    pf = mlflow.pyfunc.load_model(info.model_uri)
    assert info.signature.params.to_dict()[0]["default"] == 4
    assert info.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.model"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri))
    assert json.loads((local / "serving_input_example.json").read_text())["dataframe_split"]["data"][0][0] == "The "
    assert (local / "code" / "pipeline" / "tracking" / "pyfunc.py").exists()   # decoding code travels along

    out = pf.predict(["ab", "cd"], params={"seed": 7, "temperature": 0.5})
    assert list(out.columns) == ["text"] and len(out) == 2
    assert all(len(t) == 4 + 3 for t in out["text"])                # defaults: max_tokens 4
    assert out["text"][0].endswith("fak")   # temperature 0.5 -> "f", top_k 0 -> "a", top_p 1 -> "k"
    frame = pd.DataFrame({"prompt": ["x", "y"], "seed": [1, 1], "max_tokens": [2, 6],
                          "top_k": [3, None]})
    out = pf.predict(frame, params={"top_k": 9})
    assert [len(t) for t in out["text"]] == [5, 9]
    assert out["text"][0][-2] == "d" and out["text"][1][-2] == "j"  # row 3 wins, else param 9
    assert out["text"][0][:2] == out["text"][1][:2]                 # same seed, same draws
    again = pf.predict(frame, params={"top_k": 9})
    assert again.equals(out)
    assert len(pf.predict({"prompt": "z", "max_tokens": 1})["text"][0]) == 4


def test_generator_real_decoding_path(mlflow_store, tmp_path):
    """The real helpers end to end: a saved network folder, its vocabulary, the real decoder."""
    import mlflow

    from pipeline.data.tokenizers import learn_tokenizer
    from pipeline.models import build_model
    from pipeline.models.network import save_network
    from pipeline.models.recurrent import RecurrentParams

    tok = learn_tokenizer("char", "the quick brown fox jumps over the lazy dog\n" * 5, 40)
    vocab = tmp_path / "vocab.json"
    tok.save(vocab)
    cfg = RecurrentParams(family="lstm", embed_dim=8, units=16, layers=1)
    model = build_model(cfg, tok.vocab_size, 32)
    save_network(tmp_path / "net", model, cfg, 32, tok.vocab_size)
    with runs.model_run("seqlab-real", "lstm", "train", "hashR"):
        info = pyfunc.log_generator(tmp_path / "net", vocab, cfg)
    pf = mlflow.pyfunc.load_model(info.model_uri)
    out = pf.predict(["the "], params={"max_tokens": 6, "seed": 3})
    assert isinstance(out["text"][0], str) and out["text"][0]
    assert pf.predict(["the "], params={"max_tokens": 6, "seed": 3}).equals(out)
    # one batch for all prompts; a row's text depends on its own prompt, settings and seed only
    settings = {"max_tokens": 40, "seed": 3, "temperature": 1.5}
    whole = pf.predict(["the "], params=settings)["text"][0]
    assert len(whole) >= 40                                          # 40 tokens (<unk> shows as 5 characters)
    assert pf.predict(["a", "the ", "lazy dog"], params=settings)["text"][1] == whole
    # streaming: the same text, in pieces as it is generated (first chunk: 8 tokens)
    pieces = list(pf.predict_stream("the ", params=settings))
    assert "".join(pieces) == whole and len(pieces) >= 2
    with pytest.raises(Exception, match="single input|takes one"):      # MLflow refuses first
        list(pf.predict_stream(["a", "b"], params=settings))
    # a stop string ends the text before its first occurrence
    stop = whole[20:22]
    assert pf.predict(["the "], params={**settings, "stop": stop})["text"][0] == whole[:whole.find(stop)]


def test_a_deadline_stops_generation_with_what_it_has(tmp_path):
    from pipeline.data.tokenizers import learn_tokenizer
    from pipeline.generation.compiled import CompiledDecoder
    from pipeline.generation.text import generate_texts, stream_texts
    from pipeline.models import build_model, make_stepper
    from pipeline.models.recurrent import RecurrentParams

    tok = learn_tokenizer("char", "the quick brown fox\n", 40)
    cfg = RecurrentParams(family="gru", embed_dim=8, units=16, layers=1)
    decoder = CompiledDecoder(make_stepper(build_model(cfg, tok.vocab_size, 32), cfg, 32), tok.vocab_size,
                              chunk=16, first_chunk=4)
    row = {"prompt": "the ", "max_tokens": 100, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 1, "stop": ""}
    whole = generate_texts(decoder, tok, [row])[0]
    first = next(stream_texts(decoder, tok, [row]))[0]                    # the first chunk: 4 tokens
    assert generate_texts(decoder, tok, [row], deadline=time.monotonic() - 1)[0] == first
    assert whole.startswith(first) and len(whole) > len(first)


def test_generator_of_the_ngram_model(mlflow_store, tmp_path):
    """The n-gram model is served by the same pyfunc, from its saved folder (model.npz)."""
    import mlflow

    from pipeline.data.tokenizers import learn_tokenizer
    from pipeline.models.ngram import KneserNeyLM
    from pipeline.saved.ngram import SavedNgram

    text = "the quick brown fox jumps over the lazy dog\n" * 20
    tok = learn_tokenizer("char", text, 40)
    tok.save(tmp_path / "vocab.json")
    lm = KneserNeyLM.fit(tok.encode(text), tok.vocab_size, 3)
    (tmp_path / "ngram").mkdir()
    lm.save(tmp_path / "ngram" / "model.npz")
    SavedNgram.mark(tmp_path / "ngram")
    with runs.model_run("seqlab-real", "ngram", "ngram", "hashN"):
        info = pyfunc.log_generator(tmp_path / "ngram", tmp_path / "vocab.json")
    pf = mlflow.pyfunc.load_model(info.model_uri)
    out = pf.predict(["the quick "], params={"max_tokens": 9, "temperature": 0.0})["text"][0]
    greedy = tok.decode(lm.sample(tok.encode("the quick "), 9, np.random.default_rng(0), 0.0))
    assert out == greedy and len(out) == 9


# --------------------------------------------------------------------------- unusable stores
def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _corrupt(db: Path) -> None:
    db.write_bytes(b"this is not an SQLite database\n" * 100)


def _read_only(db: Path) -> None:
    store.check_store(f"sqlite:///{db}")          # a real store first
    db.chmod(0o444)


STORE_FAULTS = [   # (case, make the fault, the message's start after "<where>: ")
    ("corrupt file", _corrupt, "not a usable SQLite database (file is not a database)"),
    ("read-only file", _read_only, "the store is read-only"),
]


@pytest.mark.parametrize("make, message", [pytest.param(m, msg, id=c) for c, m, msg in STORE_FAULTS])
def test_an_unusable_sqlite_store_is_named_in_one_line(tmp_path, monkeypatch, make, message):
    db = tmp_path / "mlflow.db"
    make(db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    with pytest.raises(SeqlabError) as e:
        store.check_store()
    assert str(e.value).startswith(f"MLFLOW_TRACKING_URI=sqlite:///{db} ({db}): {message}"), str(e.value)
    assert "\n" not in str(e.value)


def test_a_store_on_a_full_disk_or_in_a_missing_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    missing = tmp_path / "no" / "such" / "mlflow.db"
    with pytest.raises(SeqlabError, match=f"the folder {tmp_path / 'no' / 'such'} does not exist"):
        store.check_store(f"sqlite:///{missing}")
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10 * 2**20, 10 * 2**20))
    with pytest.raises(SeqlabError, match=r"only 10 MB free on its disk \(at least 64 MB needed\)"):
        store.check_store(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_a_tracking_server_that_does_not_answer_is_refused_in_seconds(monkeypatch):
    uri = f"http://127.0.0.1:{_unused_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    t0 = time.perf_counter()
    with pytest.raises(SeqlabError) as e:
        store.check_store()
    assert time.perf_counter() - t0 < store.CONNECT_SECONDS + 2
    assert str(e.value).startswith(f"MLFLOW_TRACKING_URI={uri}: the tracking server does not answer at 127.0.0.1:")
    assert "unset MLFLOW_TRACKING_URI" in str(e.value)


def test_processes_starting_on_one_new_store_at_once_all_succeed(tmp_path):
    """MLflow creates and migrates a new SQLite store on first contact; without the set-up lock two
    processes doing it at once could crash in the migration (alembic). Four at once here."""
    uri = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    (tmp_path / "shared").mkdir()
    code = ("import mlflow\nfrom pipeline.tracking import store\nstore.check_store()\nstore.configure('race')\n"
            "with mlflow.start_run():\n    mlflow.log_metric('x', 1.0)\nprint('ok')\n")
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(repo_root()))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    assert all(rc == 0 and out.strip() == "ok" for rc, out, _ in results), [(r[0], r[1][-500:], r[2][-2000:])
                                                                            for r in results]


def test_a_moved_or_copied_store_keeps_its_artifacts_and_writes_into_its_own_folder(tmp_path, monkeypatch):
    """`mv` of a repository used to break every registered model (`No such artifact: ''`), and a
    `cp -a` copy wrote its artifacts into the original's mlartifacts/: locations follow the store."""
    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    def use(folder):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        store.check_store()
        store.configure("moving")

    first = tmp_path / "first"
    first.mkdir()
    use(first)
    with mlflow.start_run() as r:
        mlflow.log_text("hello", "note.txt")
        mlflow.pyfunc.log_model(name="m", python_model=Echo(), registered_model_name="moving-model")
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    use(moved)
    assert mlflow.artifacts.load_text(f"runs:/{r.info.run_id}/note.txt") == "hello"
    assert list(mlflow.pyfunc.load_model("models:/moving-model/1").predict(["x"])) == ["x"]
    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    use(copy)
    with mlflow.start_run() as r2:
        mlflow.log_text("in the copy", "note.txt")
    assert r2.info.artifact_uri.startswith(f"file://{copy}/mlartifacts/"), r2.info.artifact_uri
    assert (copy / "mlartifacts").is_dir() and not any(r2.info.run_id in str(p) for p in moved.rglob("*"))
    assert store.follow_the_store(copy / "mlflow.db") == []                 # done once


def test_a_run_whose_stage_was_killed_is_ended_and_its_version_marked(mlflow_store, tmp_path):
    """`kill -9` of a stage leaves its MLflow run RUNNING for ever and, if it had registered,
    a version nothing else refers to: the next stage on this machine ends the run as KILLED and
    tags the version."""
    import mlflow
    code = ("import sys, time\nfrom pipeline.tracking import runs\n"
            "with runs.model_run('seqlab-killed', 'gru', 'train', 'hashK') as run:\n"
            "    print(run.id, flush=True)\n    time.sleep(600)\n")
    env = dict(os.environ, PYTHONPATH=str(repo_root()))
    stage = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        run_id = stage.stdout.readline().strip()
    finally:
        stage.send_signal(signal.SIGKILL)
        stage.wait()
    assert run_id, stage.stderr.read()[-3000:]
    client = store.client()
    assert client.get_run(run_id).info.status == "RUNNING"
    client.create_registered_model("seqlab-killed-gru")
    version = client.create_model_version("seqlab-killed-gru", f"file://{tmp_path}", run_id=run_id).version
    with runs.model_run("seqlab-killed", "lstm", "train", "hashK") as alive:
        assert client.get_run(run_id).info.status == "KILLED"
        assert client.get_run(alive.id).info.status == "RUNNING"            # its own run is not touched
    assert runs.INCOMPLETE_TAG in client.get_model_version("seqlab-killed-gru", version).tags


def _run_outside_the_repo(script: str, tmp_path: Path):
    """The JSON that ``script`` prints last, run by ``python -c`` in a fresh process in a folder
    outside the repository, without PYTHONPATH (a served model must bring its own code)."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-c", script], cwd=outside, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow   # in CI (.ci/run) after `make test`, which it keeps under 10 minutes
def test_a_transducer_is_served_from_a_fresh_process_outside_the_repo(mlflow_store, tmp_path):
    """A network of paired data served as a transducer: requests with a `source` column decode each
    source to its output, greedy or by a beam (`beam_width`, checked like every setting), in a
    fresh process outside the repo, exactly as the evaluate stage's transducer decodes them."""
    from pipeline.data.tokenizers import learn_tokenizer
    from pipeline.models import build_model
    from pipeline.models.catalog import parse_model
    from pipeline.models.network import save_network
    from pipeline.saved.network import SavedNetwork

    words = ["cat", "dog", "bird", "horse", "owl"]
    tok = learn_tokenizer("char", "".join(f"{w}\t{w[::-1].upper()}\n" for w in words), 40)
    vocab = tmp_path / "vocab.json"
    tok.save(vocab)
    cfg = parse_model({"family": "seq2seq_rnn", "embed_dim": 8, "units": 16}, "model")
    save_network(tmp_path / "net", build_model(cfg, tok.vocab_size, 24, tok.tokens.index("\t")), cfg, 24,
                 tok.vocab_size)
    with runs.model_run("seqlab-transducer", "seq2seq_rnn", "train", "hashT"):
        info = pyfunc.log_generator(tmp_path / "net", vocab, cfg)
    saved = SavedNetwork.load(tmp_path / "net")
    prompts = [tok.encode(w + "\t") for w in words]
    want = {width: [tok.decode(ids) for ids in saved.transducer(tok.tokens.index("\n"), width, 8, 0.6, 5).decode(prompts)]
            for width in (1, 3)}
    script = (
        "import json, sys, mlflow\n"
        "assert not any('pipeline' in p for p in sys.path if p), sys.path\n"
        f"pf = mlflow.pyfunc.load_model({info.model_uri!r})\n"
        f"req = {{'source': {words!r}}}\n"
        "out = {w: list(pf.predict(req, params={'beam_width': w, 'max_tokens': 8})['text']) for w in (1, 3)}\n"
        "print(json.dumps(out))\n")
    got = _run_outside_the_repo(script, tmp_path)
    assert got == {"1": want[1], "3": want[3]}
    import mlflow
    pf = mlflow.pyfunc.load_model(info.model_uri)
    for params, message in [({"beam_width": 17}, "beam_width: 17 is out of range; expected an integer from 1"),
                            ({"beam_width": 0}, "beam_width: 0 is out of range"),
                            ({"length_penalty": -1.0}, "length_penalty: -1.0 is out of range")]:
        with pytest.raises(Exception, match=message):
            pf.predict({"source": words}, params=params)
    with pytest.raises(Exception, match="both a 'prompt' and a 'source' column"):
        pf.predict({"source": words, "prompt": words})


@pytest.mark.slow   # in CI (.ci/run) after `make test`, which it keeps under 10 minutes
def test_an_image_model_is_served_from_a_fresh_process_outside_the_repo(mlflow_store, tmp_path):
    """A PixelCNN of a labelled image corpus served from its URI in a fresh process outside the repo:
    one image per prompt (the prompt names the class), as (height, width) levels, the same for the
    same seed, exactly the images the evaluate stage's sampler draws; a class it does not know is
    a clear refusal; the logged signature says the output is an image."""
    from pipeline.data.image_layout import PIXELS, ImageLayout
    from pipeline.data.tokenizers import Tokenizer
    from pipeline.generation.images import draw
    from pipeline.models import build_model
    from pipeline.models.catalog import parse_model
    from pipeline.models.network import save_network
    from pipeline.saved.network import SavedNetwork

    layout = ImageLayout(4, 5, 3, ("cat", "dog"))
    vocab = tmp_path / "vocab.json"
    Tokenizer(PIXELS, layout.tokens(), layout.options()).save(vocab)
    cfg = parse_model({"family": "pixelcnn", "embed_dim": 4, "units": 8, "layers": 2, "kernel_size": 3,
                       "first_kernel": 3}, "model")
    vocab_size = len(layout.tokens())
    save_network(tmp_path / "net", build_model(cfg, vocab_size, 24, image=layout.model_config()), cfg, 24, vocab_size)
    with runs.model_run("seqlab-images", "pixelcnn", "train", "hashI"):
        info = pyfunc.log_generator(tmp_path / "net", vocab, cfg)
    want = draw(SavedNetwork.load(tmp_path / "net").sampler(), layout, [layout.prompt("dog"), layout.prompt("cat")],
                [5, 6]).tolist()
    script = (
        "import json, sys, mlflow\n"
        "assert not any('pipeline' in p for p in sys.path if p), sys.path\n"
        f"pf = mlflow.pyfunc.load_model({info.model_uri!r})\n"
        "out = pf.predict({'prompt': ['dog', 'cat', 'dog'], 'seed': [5, 6, 5]})\n"
        "print(json.dumps({'columns': list(out.columns), 'images': [[list(r) for r in im] for im in out['image']],\n"
        "                  'outputs': str(pf.metadata.get_output_schema())}))\n")
    got = _run_outside_the_repo(script, tmp_path)
    assert got["columns"] == ["image"] and "'image': Array(Array(long))" in got["outputs"]
    images = np.asarray(got["images"])
    assert images.shape == (3, 4, 5) and images.min() >= 0 and images.max() < 3
    assert images.tolist()[:2] == want and images[2].tolist() == want[0]
    import mlflow
    pf = mlflow.pyfunc.load_model(info.model_uri)
    with pytest.raises(Exception, match="prompt: unknown class label 'bird'; expected one of cat, dog"):
        pf.predict({"prompt": ["bird"]})
    with pytest.raises(Exception, match="conditioned on the class"):
        pf.predict({"prompt": [""]})


def test_a_saved_network_compiles_each_transducer_setting_once_and_keeps_a_bounded_few(tmp_path):
    """A server's repeated request reuses the decoder (and its compiled search) of its setting; the
    settings kept are bounded (requests choose them), the oldest going first; prompts and sources
    share one stepper."""
    from pipeline.models import build_model
    from pipeline.models.catalog import parse_model
    from pipeline.models.network import save_network
    from pipeline.saved.network import KEPT_TRANSDUCERS, SavedNetwork

    cfg = parse_model({"family": "seq2seq_rnn", "embed_dim": 8, "units": 16}, "model")
    save_network(tmp_path / "net", build_model(cfg, 12, 24, 5), cfg, 24, 12)
    saved = SavedNetwork.load(tmp_path / "net")
    first = saved.transducer(3, 2, 8, 0.6, 4)
    assert saved.transducer(3, 2, 8, 0.6, 4) is first
    assert first.stepper is saved.sampler().stepper
    for tokens in range(9, 9 + KEPT_TRANSDUCERS):
        saved.transducer(3, 2, tokens, 0.6, 4)
    assert saved.transducer(3, 2, 8, 0.6, 4) is not first           # the oldest went
    assert saved.transducer(3, 2, 9 + KEPT_TRANSDUCERS - 1, 0.6, 4).stepper is first.stepper


def test_a_network_serves_the_length_penalty_it_was_evaluated_with():
    """A registered network's requests default to the run's ``eval.length_penalty``; a request's
    own value wins; the n-gram (greedy only) is registered without one."""
    from types import SimpleNamespace

    import pandas as pd

    from pipeline.tracking.registration import sampler_defaults

    generate = SimpleNamespace(max_tokens=5, temperature=0.0, top_k=0, top_p=1.0)
    served = pyfunc.TextGenerator(sampler_defaults(generate, 1.5))
    (row,) = served._rows(pd.DataFrame({"source": ["cat"]}), None)
    assert (row["length_penalty"], row["beam_width"], row["max_tokens"]) == (1.5, 1, 5)
    (row,) = served._rows(pd.DataFrame({"source": ["cat"]}), {"length_penalty": 0.2})
    assert row["length_penalty"] == 0.2
    assert "length_penalty" not in sampler_defaults(generate)
