"""Interrupted training resumes where it stopped, and seeded runs reproduce, in real subprocesses.

- ``python -m stages.train rnn`` is killed with SIGKILL during an epoch once
  ``checkpoints/rnn/last.npz`` exists; the rerun resumes after the checkpoint's epoch (same data
  order, learning-rate position and optimizer state, its step counter included), trains only the
  remaining epochs, and ends where an uninterrupted run ends: per-epoch losses within
  ``LOSS_TOL`` and final weights within ``WEIGHT_TOL`` (measured on CPU: identical).
- Two fresh runs with the same seed give the same per-epoch losses within ``LOSS_TOL``
  (measured on CPU: identical).

About 80 s on two otherwise idle CPU cores (three training stages with MLflow, two short training runs).
"""
import json
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from pipeline.reporting import read_history_csv
from tests.repo_copy import make_tiny_repo, tool_env

LOSS_TOL = 1e-6     # absolute, per-epoch train and valid losses (around 4 nats)
WEIGHT_TOL = 1e-6   # absolute, every final weight
EPOCHS, STEPS = 4, 30
PARAMS = {
    "seed": 7,
    "data": {"corpus": "corpus.txt", "tokenizer": "char", "split": [0.8, 0.1, 0.1]},
    "train": {"seq_len": 64, "batch_size": 16, "epochs": EPOCHS, "steps_per_epoch": STEPS,
              "steps_per_execution": 10, "warmup_steps": 20, "eval_tokens": 1024},
    "models": {"rnn": {"family": "rnn", "embed_dim": 16, "units": 48, "layers": 1}},
}
TIMEOUT = 600


def _env(repo) -> dict:
    return tool_env() | {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}


def _stage(repo, *args) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", *args], cwd=repo, env=_env(repo), capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert p.returncode == 0, f"{args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = make_tiny_repo(tmp_path_factory.mktemp("resume") / "repo", PARAMS, commit=False)
    _stage(repo, "stages.prepare")
    return repo


def _weights(path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _epoch_lines(log: str) -> list[int]:
    return [int(line.split()[1].split("/")[0]) for line in log.splitlines() if line.startswith("epoch ")]


@pytest.mark.slow   # in CI (.ci/run) after `make test`, which it keeps under 10 minutes
def test_killed_training_resumes_from_the_last_checkpoint(repo, tmp_path):
    ckpt = repo / "checkpoints" / "rnn" / "last.npz"
    # the uninterrupted run
    full = _stage(repo, "stages.train", "rnn")
    assert _epoch_lines(full.stdout) == list(range(1, EPOCHS + 1)) and not ckpt.exists()
    baseline = tmp_path / "baseline"
    shutil.copytree(repo / "models" / "rnn", baseline)
    shutil.copy(repo / "plots" / "rnn" / "history.csv", baseline / "history.csv")

    # the same run, killed with SIGKILL right after its first checkpoint, during the next epoch
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        p = subprocess.Popen([sys.executable, "-m", "stages.train", "rnn"], cwd=repo, env=_env(repo), stdout=out,
                             stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + TIMEOUT
            while not ckpt.exists() and p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert ckpt.exists(), f"no checkpoint appeared:\n{log.read_text()[-3000:]}"
            p.kill()  # SIGKILL: no cleanup, no atexit
        finally:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=60)
    assert p.returncode == -9
    with np.load(ckpt, allow_pickle=False) as z:
        done = json.loads(str(z["meta"]))["epoch"]
    killed_log = log.read_text()
    print(f"killed after the checkpoint of epoch {done}; epochs finished: {_epoch_lines(killed_log)}")
    assert 1 <= done < EPOCHS
    assert _epoch_lines(killed_log)[-1] in (done, done + 1)  # killed in epoch done + 1 (or its evaluation)
    assert "registered" not in killed_log

    # the rerun resumes: only the remaining epochs, from the restored step counter
    resumed = _stage(repo, "stages.train", "rnn")
    assert (f"resuming from the checkpoint after epoch {done} (checkpoints/rnn/last.npz) at step {done * STEPS}"
            in resumed.stdout)
    assert _epoch_lines(resumed.stdout) == list(range(done + 1, EPOCHS + 1))
    run = json.loads((repo / "models" / "rnn" / "run.json").read_text())
    assert run["resumed_from_epoch"] == done and run["steps"] == EPOCHS * STEPS
    assert not ckpt.exists()

    # ... and ends where the uninterrupted run ended
    want, got = read_history_csv(baseline / "history.csv"), read_history_csv(repo / "plots" / "rnn" / "history.csv")
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == list(range(1, EPOCHS + 1))
    loss_gap = max(abs(a[k] - b[k]) for a, b in zip(want, got) for k in ("train_loss", "valid_loss", "learning_rate"))
    w_want, w_got = _weights(baseline / "model.weights.h5"), _weights(repo / "models" / "rnn" / "model.weights.h5")
    assert w_want.keys() == w_got.keys() and w_want
    weight_gap = max(float(np.abs(w_want[k] - w_got[k]).max()) for k in w_want)
    print(f"resumed vs uninterrupted: loss gap {loss_gap:.1e}, weight gap {weight_gap:.1e}")
    assert loss_gap <= LOSS_TOL and weight_gap <= WEIGHT_TOL


DRIVER = """
import json, sys
from pipeline.models import build_model
from pipeline.models.catalog import model_config
from pipeline.config.params import load_params
from pipeline.data.prepared import load_prepared
from pipeline.training.loop import train_model
p = load_params()
data = load_prepared("data/prepared")
r = train_model(model_config(p, "rnn"), p.train_for("rnn"), data.ids["train"], data.ids["valid"], data.tokenizer.vocab_size,
                data.data_hash, p.seed, sys.argv[1], build_model)
print("LOSSES", json.dumps([[h["train_loss"], h["valid_loss"]] for h in r.history]))
"""


def test_fresh_runs_with_the_same_seed_reproduce(repo, tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path / f"ckpt{i}")], cwd=repo, env=_env(repo),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    losses = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, err[-3000:]
            losses.append(np.array(json.loads(out.split("LOSSES ", 1)[1])))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=60)
    assert losses[0].shape == (EPOCHS, 2)
    gap = float(np.abs(losses[0] - losses[1]).max())
    print(f"two fresh seeded runs: per-epoch loss gap {gap:.1e}")
    assert gap <= LOSS_TOL
