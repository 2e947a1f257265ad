"""Bad input through the real stage scripts: one clear line, exit status 2, no half-written output."""
import subprocess
import sys

import numpy as np
import pytest

from pipeline.errors import DivergenceError
from pipeline.config.params import TrainParams
from pipeline.models.recurrent import RecurrentParams
from tests.repo_copy import make_tiny_repo, tool_env


def stage(repo, *args):
    env = tool_env() | {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    return subprocess.run([sys.executable, "-m", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture
def repo(tmp_path):
    return make_tiny_repo(tmp_path / "repo", commit=False)


def test_non_utf8_corpus_fails_cleanly(repo):
    (repo / "corpus.txt").write_bytes(b"good text\n" * 50 + b"bad \xff byte\n")
    p = stage(repo, "stages.prepare")
    assert p.returncode == 2, p.stderr
    assert "corpus.txt: not valid UTF-8 at byte offset 504" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (repo / "data" / "prepared").exists()


def test_misspelt_param_fails_before_any_work(repo):
    text = (repo / "params.yaml").read_text().replace("seq_len:", "seqlen:")
    (repo / "params.yaml").write_text(text)
    p = stage(repo, "stages.prepare")
    assert p.returncode == 2
    assert "params.yaml: unknown key 'train.seqlen'; did you mean 'seq_len'?" in p.stderr
    assert not (repo / "data").exists()


@pytest.mark.slow   # in CI (.ci/run) after `make test`, which it keeps under 10 minutes
def test_unknown_architecture_and_short_corpus(repo):
    assert stage(repo, "stages.prepare").returncode == 0
    p = stage(repo, "stages.train", "tranformer")
    assert p.returncode == 2 and "unknown architecture 'tranformer'" in p.stderr
    text = (repo / "params.yaml").read_text().replace("seq_len: 32", "seq_len: 100000")
    (repo / "params.yaml").write_text(text)
    p = stage(repo, "stages.train", "lstm")
    assert p.returncode == 2 and "too short for train.seq_len=100000" in p.stderr
    assert not (repo / "models").exists()
    from mlflow import MlflowClient
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    assert client.search_model_versions("name='seqlab-lstm'") == []


def test_divergence_names_the_step_and_saves_nothing(tmp_path):
    from pipeline.models import build_model
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 20, 4000).astype(np.int32)
    model = RecurrentParams(family="rnn", embed_dim=8, units=16, layers=1)
    train = TrainParams(seq_len=16, batch_size=4, epochs=2, steps_per_epoch=5, steps_per_execution=5,
                        learning_rate=1e37, warmup_steps=0, clipnorm=0.0, eval_tokens=64)
    with pytest.raises(DivergenceError, match=r"training diverged: loss is (nan|inf) at step \d+ \(epoch 1\)"):
        from pipeline.training.loop import train_model
        train_model(model, train, ids, ids[:200], 20, "h", 0, tmp_path / "ckpt", build_model)
    assert not (tmp_path / "ckpt").exists()


def test_divergence_on_the_last_step_is_caught_before_anything_is_saved(tmp_path):
    """The last update overflows: every training loss was finite (each is computed before its
    update), but the validation loss and the weights are not. Nothing may be saved."""
    from pipeline.models import build_model
    from pipeline.training.loop import train_model
    ids = np.random.default_rng(0).integers(2, 20, 4000).astype(np.int32)
    model = RecurrentParams(family="rnn", embed_dim=8, units=16, layers=1)
    train = TrainParams(seq_len=16, batch_size=4, epochs=1, steps_per_epoch=1, steps_per_execution=1, warmup_steps=0,
                        learning_rate=10.0, weight_decay=1.0e38, eval_tokens=64)
    logged = []
    with pytest.raises(DivergenceError, match=r"training diverged: (validation loss is nan|weight \S+ is not finite) "
                                              r"after epoch 1 \(step 1\)"):
        train_model(model, train, ids, ids[:200], 20, "h", 0, tmp_path / "ckpt", build_model, on_epoch=logged.append)
    assert not logged and not (tmp_path / "ckpt" / "last.npz").exists()


def test_a_second_process_on_the_same_model_is_refused_and_the_lock_dies_with_its_holder(repo):
    """`kill -9` of `dvc` leaves its stage running: a second stage of the same model must not start
    beside it (it would train the same model again and register it twice)."""
    import signal
    import time

    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom pipeline.paths import model_lock\n"
         "from pipeline.lock import exclusive\n"
         "with exclusive(model_lock('rnn'), 'x'):\n    print('held', flush=True)\n    time.sleep(600)\n"],
        cwd=repo, env=tool_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for cmd in (["stages.train", "rnn"], ["stages.evaluate", "rnn"]):
            p = stage(repo, *cmd)
            assert p.returncode == 2, p.stderr
            line = p.stderr.strip().splitlines()[-1]
            assert line.startswith(f"error: a stage of model 'rnn' is already running in process {holder.pid} "), line
        assert not (repo / "models" / "rnn").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    t0 = time.perf_counter()
    got = subprocess.run([sys.executable, "-c", "from pipeline.paths import model_lock\n"
                          "from pipeline.lock import exclusive\n"
                          "with exclusive(model_lock('rnn'), 'x'):\n    print('free')\n"],
                         cwd=repo, env=tool_env(), capture_output=True, text=True, timeout=60)
    assert got.stdout.strip() == "free" and time.perf_counter() - t0 < 30   # released by the kernel


@pytest.mark.slow   # in CI (.ci/run) after `make test`, which it keeps under 10 minutes
def test_editing_the_corpus_file_reruns_prepare_and_only_then(tmp_path):
    """The corpus is named by a param, not a path: its content must still be a dependency."""
    import json

    repo = make_tiny_repo(tmp_path / "repo")

    def repro():
        p = subprocess.run(["dvc", "repro", "prepare"], cwd=repo, env=tool_env(), capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout + p.stderr

    def chars():
        return json.loads((repo / "data" / "prepared" / "stats.json").read_text())["splits"]["train"]["chars"]

    first = repro()
    assert "Running stage 'prepare'" in first
    before = chars()
    again = repro()                                        # nothing changed: the fingerprint is rewritten as it was
    assert "Running stage 'corpus'" in again and "Running stage 'prepare'" not in again, again
    text = (repo / "corpus.txt").read_text()
    (repo / "corpus.txt").write_text(text[: len(text) // 2])   # halved in place, as a user edits a file
    edited = repro()
    assert "Running stage 'prepare'" in edited, edited
    assert chars() < before


def test_a_tracking_server_that_does_not_answer_stops_the_stage_in_seconds_before_any_work(repo):
    import time
    env = tool_env() | {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=repo, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and time.perf_counter() - t0 < 30, p.stderr
    assert p.stderr.strip().splitlines() == [
        "error: MLFLOW_TRACKING_URI=http://127.0.0.1:9: the tracking server does not answer at 127.0.0.1:9 "
        f"(Connection refused); start it, or unset MLFLOW_TRACKING_URI to use {repo / 'mlflow.db'}"], p.stderr
    assert not (repo / "data").exists()
