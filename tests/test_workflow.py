"""The scheduled retraining workflow: valid against GitHub's workflow schema (offline, the
schema ships with check-jsonschema) and doing what DESIGN.md asks of it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "retrain.yml"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def _on(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))   # YAML 1.1 reads the key `on` as True


def _steps(workflow: dict) -> list[dict]:
    return [s for job in workflow["jobs"].values() for s in job["steps"]]


def _runs(workflow: dict) -> str:
    return "\n".join(s.get("run", "") for s in _steps(workflow))


def test_valid_against_github_workflow_schema():
    assert CHECK_JSONSCHEMA.exists(), f"{CHECK_JSONSCHEMA} missing: install requirements.txt"
    out = subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows",
                          str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_schedule_on_an_off_minute_and_manual_dispatch(workflow):
    on = _on(workflow)
    crons = [entry["cron"] for entry in on["schedule"]]
    assert crons
    for cron in crons:
        fields = cron.split()
        assert len(fields) == 5, cron
        assert fields[0].isdigit() and int(fields[0]) not in (0, 30), cron   # not on the hour
    assert "workflow_dispatch" in on


def test_concurrency_never_races(workflow):
    assert workflow["concurrency"]["group"] == "retrain"
    assert workflow["concurrency"]["cancel-in-progress"] is False


def test_permissions(workflow):
    assert workflow["permissions"] == {"contents": "write", "pull-requests": "write"}


def test_python_311_with_pip_cache_on_requirements(workflow):
    setup = [s for s in _steps(workflow) if s.get("uses", "").startswith("actions/setup-python@")]
    assert len(setup) == 1
    assert str(setup[0]["with"]["python-version"]) == "3.11"
    assert setup[0]["with"]["cache"] == "pip"
    assert setup[0]["with"]["cache-dependency-path"] == "requirements.txt"


def test_retrains_with_the_makefile_target_a_person_uses(workflow):
    """The job runs `make retrain` (pipeline/retrain.py: dvc update, pull and push with the run cache
    when a remote is set, dvc repro, the review); tests/test_retrain.py runs these steps for real."""
    runs = _runs(workflow)
    assert re.search(r"^make retrain\b", runs, re.M) and not re.search(r"^make (run|promote)\b", runs, re.M)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^retrain:.*\n\t.*-m pipeline\.retrain$", makefile, re.M)
    assert "\t$(BIN)/dvc repro\n\t$(BIN)/python -m pipeline.promote\n" in makefile   # make run accepts its own run


def test_a_merged_retraining_promotes_and_nothing_else_does():
    promote = yaml.safe_load((WORKFLOW.parent / "promote.yml").read_text(encoding="utf-8"))
    on = _on(promote)
    assert on["push"] == {"branches": ["main"], "paths": ["provenance/**"]} and "workflow_dispatch" in on
    assert re.search(r"^make promote\b", _runs(promote), re.M)
    assert promote["concurrency"]["group"] == "retrain"
    out = subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows",
                          str(WORKFLOW.parent / "promote.yml")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_reports_uploaded_and_results_proposed_as_pull_request(workflow):
    steps = _steps(workflow)
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert any("reports/" in str(s["with"]["path"]).split() and "review.md" in str(s["with"]["path"]).split()
               for s in uploads)
    pr = [s for s in steps if s.get("uses", "").startswith("peter-evans/create-pull-request@")]
    assert len(pr) == 1
    assert re.fullmatch(r"peter-evans/create-pull-request@v\d+", pr[0]["uses"])  # pinned major
    paths = pr[0]["with"]["add-paths"]
    for wanted in ("dvc.lock", "metrics/", "reports/", "*.dvc"):
        assert wanted in paths
    assert pr[0]["with"]["body-path"] == "review.md"


def test_tracking_uri_from_secret_or_variable(workflow):
    text = WORKFLOW.read_text(encoding="utf-8")
    assert "secrets.MLFLOW_TRACKING_URI" in text and "vars.MLFLOW_TRACKING_URI" in text
    assert "MLFLOW_TRACKING_URI=" in _runs(workflow)


def test_the_review_says_what_changed_and_what_the_gate_decided(tmp_path):
    from pipeline.retrain import imported_data, review_markdown

    gate = {"version": "3", "holder_version": "2", "holder_metric": 2.0, "accepted": True, "is_champion": False,
            "reason": "better test_bpc: 1.9 < 2 by more than the 0.50% margin"}
    comparison = {"data": {"source": "corpus.txt", "tokenizer": "char", "data_hash": "new"},
                  "models": [{"model": "gru", "test_bpc": 1.9, "gate": gate},
                             {"model": "ngram", "test_bpc": 3.0, "gate": gate | {"accepted": False, "is_champion": True,
                                                                                 "reason": "already holds champion"}}]}
    text = review_markdown(comparison, "| Path | Metric |", "HEAD", "old", ["dvc.lock", "metrics"], ["corpus.txt"])
    assert "**changed** since `HEAD` (data hash `old` there) (imported data updated: `corpus.txt`)." in text
    assert "| gru | 3 | 1.9000 | 2 | 2.0000 | **proposed** | better test_bpc: 1.9 < 2 by more than" in text
    assert "| ngram | 3 | 3.0000 | 2 | 2.0000 | champion | already holds champion |" in text
    assert "| Path | Metric |" in text and "Changed: `dvc.lock`, `metrics`" in text
    same = review_markdown(comparison, "", "HEAD", "new", [], [])
    assert "unchanged since `HEAD`." in same and "nothing was retrained" in same and "No metric changed." in same
    assert "holds no results to compare with" in review_markdown(comparison, "", "main", None, ["dvc.lock"], [])

    (tmp_path / "corpus.txt.dvc").write_text("deps:\n- path: https://example.org/c.txt\nouts:\n- path: corpus.txt\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "added.dvc").write_text("outs:\n- path: added\n")            # dvc add: not an import
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "x.dvc").write_text("deps:\n- path: y\n")                     # DVC's own folder
    assert imported_data(tmp_path) == [Path("corpus.txt.dvc")]


def test_a_missing_remote_stops_the_retrain_in_one_line_before_any_work(tmp_path):
    from tests.repo_copy import make_tiny_repo, run, tool_env

    repo = make_tiny_repo(tmp_path / "repo")
    run([str(Path(sys.executable).parent / "dvc"), "remote", "add", "-d", "storage", str(tmp_path / "nowhere")], repo)
    p = subprocess.run([sys.executable, "-m", "pipeline.retrain"], cwd=repo, capture_output=True, text=True,
                       env=tool_env() | {"COLUMNS": "20"}, timeout=300)   # narrow: DVC's tables wrap
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.strip().splitlines() == [
        f"error: DVC remote 'storage': the folder {tmp_path / 'nowhere'} does not exist; create it, or fix the "
        "remote in .dvc/config (dvc remote modify)"], p.stderr
    assert not (tmp_path / "nowhere").exists() and not (repo / "dvc.lock").exists() and not (repo / "review.md").exists()
