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


def test_uses_the_makefile_and_dvc_remote_only_when_configured(workflow):
    runs = _runs(workflow)
    assert re.search(r"^make run\b", runs, re.M), "retrain with the Makefile target a person uses"
    assert "dvc remote list" in runs
    steps = _steps(workflow)

    def runs_command(step, command):       # a line that runs it, not one that mentions it
        return re.search(rf"^\s*(\S*/)?{command}\b", step.get("run", ""), re.M) is not None

    pull = [i for i, s in enumerate(steps) if runs_command(s, "dvc pull")]
    push = [i for i, s in enumerate(steps) if runs_command(s, "dvc push")]
    make = [i for i, s in enumerate(steps) if runs_command(s, "make run")]
    assert len(pull) == len(push) == len(make) == 1
    assert pull[0] < make[0] < push[0]
    for i in pull + push:
        assert "remote" in steps[i].get("if", ""), steps[i]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^run:", makefile, re.M) and "dvc repro" in makefile


def test_reports_uploaded_and_results_proposed_as_pull_request(workflow):
    steps = _steps(workflow)
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert any(str(s["with"]["path"]).strip().rstrip("/") == "reports" for s in uploads)
    pr = [s for s in steps if s.get("uses", "").startswith("peter-evans/create-pull-request@")]
    assert len(pr) == 1
    assert re.fullmatch(r"peter-evans/create-pull-request@v\d+", pr[0]["uses"])  # pinned major
    paths = pr[0]["with"]["add-paths"]
    for wanted in ("dvc.lock", "metrics/", "reports/"):
        assert wanted in paths


def test_tracking_uri_from_secret_or_variable(workflow):
    text = WORKFLOW.read_text(encoding="utf-8")
    assert "secrets.MLFLOW_TRACKING_URI" in text and "vars.MLFLOW_TRACKING_URI" in text
    assert "MLFLOW_TRACKING_URI=" in _runs(workflow)
