"""Retraining end to end with the real components: the workflows' own ``run:`` steps, in order, read
from ``.github/workflows/retrain.yml`` and ``promote.yml`` (their ``uses:`` steps stood in by local
equivalents: a fresh ``git clone`` for checkout, a commit merged into the origin for the pull
request), against a real ``mlflow server`` with an SQL backend, proxied artifacts and the basic-auth
app (the account from the environment, as the workflow's secrets give it), a folder DVC remote and
a corpus imported with ``dvc import-url`` that changes between runs.

Slow (several ``dvc repro`` of a tiny pipeline): ``make test-slow``, and ``.ci/run`` runs it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import mlflow_server
from tests.conftest import ROOT
from tests.repo_copy import TINY_PARAMS, make_tiny_repo, run, tool_env

pytestmark = pytest.mark.slow

WORKFLOWS = ROOT / ".github" / "workflows"
GIT = ["git", "-c", "user.name=seqlab-test", "-c", "user.email=test@example.org"]
PARAMS = TINY_PARAMS | {"data": TINY_PARAMS["data"] | {"corpus": "corpus.txt"},
                        "models": {"gru": TINY_PARAMS["models"]["gru"]}}


class Workflow:
    """Runs one workflow file's job the way GitHub would, on this machine: ``run:`` steps in bash
    with the step's ``env:`` (``${{ secrets.X || vars.X }}`` from ``secrets``), ``$GITHUB_ENV``
    carried to later steps, ``if:`` on ``env.`` comparisons and ``always()``, stopping at the first
    failing step (later steps run only with ``always()``)."""

    def __init__(self, name: str, origin: Path, secrets: dict[str, str]):
        self.spec = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
        self.origin, self.secrets = origin, secrets

    def run(self, workdir: Path) -> dict:
        env = tool_env() | {k: str(v) for k, v in self.spec.get("env", {}).items()}
        github_env = workdir.parent / f"{workdir.name}.github_env"
        github_env.write_text("")
        result = {"workdir": workdir, "failed": None, "proposed": False, "output": ""}
        (job,) = self.spec["jobs"].values()
        for step in job["steps"]:
            condition = str(step.get("if", "")).strip()
            if result["failed"] and "always()" not in condition:
                continue
            if not self._holds(condition, env, failed=result["failed"] is not None):
                continue
            uses = step.get("uses", "")
            if uses.startswith("actions/checkout@"):
                run(["git", "clone", "-q", str(self.origin), str(workdir)], self.origin.parent)
                (workdir / ".venv").symlink_to(ROOT / ".venv")     # what `make install` would build
            elif uses.startswith("peter-evans/create-pull-request@"):
                result["proposed"] = self._propose(workdir, step["with"])
            elif uses:                                             # setup-python, upload-artifact
                continue
            else:
                step_env = env | {"GITHUB_ENV": str(github_env)} | {
                    k: self._expression(v) for k, v in step.get("env", {}).items()}
                p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", step["run"]], cwd=workdir, env=step_env,
                                   capture_output=True, text=True, timeout=1800)
                result["output"] += f"\n=== {step.get('name', step['run'][:40])} (exit {p.returncode})\n"
                result["output"] += p.stdout + p.stderr
                if p.returncode != 0:
                    result["failed"] = step.get("name", step["run"])
                for line in github_env.read_text().splitlines():
                    key, _, value = line.partition("=")
                    env[key] = value
        return result

    def _expression(self, value) -> str:
        match = re.fullmatch(r"\$\{\{\s*(.+?)\s*\}\}", str(value))
        if not match:
            return str(value)
        for alternative in match.group(1).split("||"):
            kind, _, key = alternative.strip().partition(".")
            if kind in ("secrets", "vars") and self.secrets.get(key):
                return self.secrets[key]
        return ""

    @staticmethod
    def _holds(condition: str, env: dict, failed: bool) -> bool:
        if not condition:
            return True
        terms = [t.strip() for t in condition.split("&&")]
        ok = True
        for term in terms:
            if term == "always()":
                continue
            match = re.fullmatch(r"env\.(\w+)\s*(==|!=)\s*''", term)
            assert match, f"the stand-in runner does not know the condition {term!r}"
            empty = not env.get(match.group(1), "")
            ok &= empty if match.group(2) == "==" else not empty
        return ok

    @staticmethod
    def _propose(workdir: Path, settings: dict) -> bool:
        """The pull request: its paths committed on its branch, when anything changed."""
        paths = [p for p in settings["add-paths"].split() if p]
        run(["git", "checkout", "-q", "-b", settings["branch"]], workdir)
        for path in paths:                  # one at a time: a pattern that matches nothing is no error
            subprocess.run(GIT + ["add", "--", path], cwd=workdir, capture_output=True, text=True)
        staged = run(["git", "diff", "--cached", "--name-only"], workdir).stdout.split()
        if not staged:
            return False
        run(GIT + ["commit", "-q", "-m", settings["commit-message"]], workdir)
        return True


def _merge(workdir: Path) -> None:
    """Merging the pull request: its branch becomes the origin's main."""
    run(["git", "push", "-q", "origin", "HEAD:main"], workdir)


def _aliases(client, name: str) -> dict:
    return {a: v for a, v in client.get_registered_model(name).aliases.items()}


def _training_runs(client, experiment_id: str) -> set[str]:
    return {r.info.run_id for r in client.search_runs([experiment_id], max_results=1000)
            if "train" in r.data.tags.get("stages", "").split(",")}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = mlflow_server.start(tmp_path_factory.mktemp("server"), auth=True)
    try:
        yield s.wait()
    finally:
        s.stop()


def test_scheduled_retraining_proposes_and_a_merge_promotes(server, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    user, password = mlflow_server.ADMIN
    secrets = {"MLFLOW_TRACKING_URI": server.url, "MLFLOW_TRACKING_USERNAME": user,
               "MLFLOW_TRACKING_PASSWORD": password}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, secrets[key])
    client = MlflowClient(server.url)

    # the data registry: a file that a team replaces, imported by the project with `dvc import-url`
    source = tmp_path / "registry" / "corpus.txt"
    source.parent.mkdir()
    from pipeline.data.corpus import load_corpus
    text = load_corpus("builtin:python-docs", [0.9, 0.05, 0.05]).train
    source.write_text(text[:30_000], encoding="utf-8")
    remote = tmp_path / "dvc-remote"
    remote.mkdir()                                        # a folder remote is made by the team, not by push
    origin = make_tiny_repo(tmp_path / "origin", PARAMS, commit=False)
    run(["git", "init", "-q", "-b", "main"], origin)
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], origin)
    (origin / "corpus.txt").unlink()                      # the tiny repo's own corpus: imported instead
    run(["dvc", "import-url", str(source), "corpus.txt"], origin)
    run(GIT + ["add", "-A"], origin)
    run(GIT + ["commit", "-q", "-m", "project with an imported corpus"], origin)
    run(["git", "config", "receive.denyCurrentBranch", "updateInstead"], origin)
    retrain = Workflow("retrain.yml", origin, secrets)
    promote = Workflow("promote.yml", origin, secrets)

    # 1. the first retrain registers and proposes; champion does not move before the merge
    first = retrain.run(tmp_path / "w1")
    assert first["failed"] is None and first["proposed"], first["output"][-6000:]
    assert _aliases(client, "seqlab-gru") == {"challenger": "1"} and "champion" not in _aliases(client, "seqlab-ngram")
    review = (first["workdir"] / "review.md").read_text()
    assert "| gru | 1 |" in review and "**proposed** | first version |" in review, review
    assert list(remote.rglob("*")), "dvc push filled the remote"
    _merge(first["workdir"])
    merged = promote.run(tmp_path / "p1")
    assert merged["failed"] is None, merged["output"][-4000:]
    assert _aliases(client, "seqlab-gru") == {"champion": "1"} and _aliases(client, "seqlab-ngram") == {"champion": "1"}
    exp = client.get_experiment_by_name("seqlab")
    trained = _training_runs(client, exp.experiment_id)
    versions = len(client.search_model_versions("name='seqlab-gru'"))

    # 2. again, from a fresh clone, with the same data: nothing trained, registered or proposed
    second = retrain.run(tmp_path / "w2")
    assert second["failed"] is None and not second["proposed"], second["output"][-6000:]
    assert "Running stage 'train@gru'" not in second["output"]
    assert _training_runs(client, exp.experiment_id) == trained
    assert len(client.search_model_versions("name='seqlab-gru'")) == versions
    assert "Nothing changed against the base revision" in (second["workdir"] / "review.md").read_text()

    # 3. new data arrives: retrained, the gate says why, and the merge moves champion
    source.write_text(text[:30_000] + text[30_000:45_000], encoding="utf-8")
    third = retrain.run(tmp_path / "w3")
    assert third["failed"] is None and third["proposed"], third["output"][-6000:]
    review = (third["workdir"] / "review.md").read_text()
    assert "**changed** since `HEAD`" in review and "imported data updated: `corpus.txt`" in review, review
    assert "| gru | 2 |" in review and "data changed: champion version 1" in review, review
    assert _aliases(client, "seqlab-gru") == {"champion": "1", "challenger": "2"}
    _merge(third["workdir"])
    assert promote.run(tmp_path / "p2")["failed"] is None
    assert _aliases(client, "seqlab-gru") == {"champion": "2"}
    assert client.get_model_version("seqlab-gru", "2").tags["promotion"].startswith("data changed")

    # 4. a retrain that fails (the server does not answer) exits non-zero, pushes and proposes nothing
    before = sorted(p.relative_to(remote) for p in remote.rglob("*"))
    down = Workflow("retrain.yml", origin, secrets | {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_server.free_port()}"})
    failed = down.run(tmp_path / "w4")
    assert failed["failed"] and "Retrain" in failed["failed"] and not failed["proposed"]
    assert "the tracking server does not answer" in failed["output"]
    assert sorted(p.relative_to(remote) for p in remote.rglob("*")) == before
    assert _aliases(client, "seqlab-gru") == {"champion": "2"}
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")

    # 5. so does one whose training diverges (a change merged to main with a learning rate that overflows)
    params = yaml.safe_load((origin / "params.yaml").read_text())
    params["models"]["gru"]["train"] = {"learning_rate": 10.0, "weight_decay": 1.0e38}
    (origin / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(GIT + ["commit", "-q", "-am", "a learning rate that diverges"], origin)
    diverged = retrain.run(tmp_path / "w5")
    assert diverged["failed"] and "Retrain" in diverged["failed"] and not diverged["proposed"]
    assert "training diverged" in diverged["output"], diverged["output"][-3000:]
    assert sorted(p.relative_to(remote) for p in remote.rglob("*")) == before
    assert _aliases(client, "seqlab-gru") == {"champion": "2"}
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    assert len(client.search_model_versions("name='seqlab-gru'")) == 2
