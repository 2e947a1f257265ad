"""Copies of the repo for tests that run the real tools (DVC, stage scripts) on tiny data."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

ARCHS = ("rnn", "lstm", "gru", "conv", "transformer", "mlp")   # mlp: the example family from outside pipeline/
EXTERNAL = "families.window_mlp:WindowMLP"
TINY_PARAMS = {
    "seed": 7,
    "data": {"corpus": "corpus.txt", "tokenizer": "char", "split": [0.8, 0.1, 0.1]},
    "ngram": {"order": 3},
    # jit_compile false: compiling the tiny steps with XLA costs more than they run (XLA is tested elsewhere)
    "train": {"seq_len": 32, "batch_size": 8, "epochs": 2, "steps_per_epoch": 6, "steps_per_execution": 3,
              "warmup_steps": 2, "eval_tokens": 512, "jit_compile": "false"},
    "models": {
        "rnn": {"family": "rnn", "embed_dim": 8, "units": 16, "layers": 1},
        "lstm": {"family": "lstm", "embed_dim": 8, "units": 16, "layers": 2},
        "gru": {"family": "gru", "embed_dim": 8, "units": 16, "layers": 1},
        "conv": {"family": "conv", "embed_dim": 8, "units": 16, "dilations": [1, 2, 4]},
        "transformer": {"family": "transformer", "embed_dim": 16, "units": 16, "layers": 1, "heads": 2,
                        "embed_init": "default"},
        "mlp": {"family": "families.window_mlp:WindowMLP", "embed_dim": 8, "context": 4, "hidden": 16},
    },
    "eval": {"batch_size": 64},
    "generate": {"prompts": ["The "], "max_tokens": 20, "seed": 3},
    "diagnose": {"targets": 8, "max_context": 32},
}


# what `make run` leaves in a checkout (DVC outputs, their .gitignore files, dvc.lock): never copied
GENERATED = ("data/", "models/", "metrics/", "provenance/", "plots/", "reports/", "dvc.lock")


def tracked_files(root: Path) -> list[str]:
    """The checkout's source: git's files, tracked or not yet, without what a pipeline run generated."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                         check=True, capture_output=True, text=True).stdout
    return [f for f in out.split("\0") if f and (root / f).is_file() and not f.startswith(GENERATED)]


def tool_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}")
    return p


def make_tiny_repo(dest: Path, params: dict = TINY_PARAMS, commit: bool = True) -> Path:
    for rel in tracked_files(ROOT):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    from pipeline.data.corpus import load_corpus
    docs = load_corpus("builtin:python-docs", [0.9, 0.05, 0.05]).train
    (dest / "corpus.txt").write_text(docs[:40_000], encoding="utf-8")
    from pipeline.config.presets import apply_preset   # `models` replaces the repo's section, as a preset does
    full = apply_preset(yaml.safe_load((ROOT / "params.yaml").read_text()), params)
    (dest / "params.yaml").write_text(yaml.safe_dump(full, sort_keys=False))
    if not commit:
        return dest
    git = ["git", "-c", "user.name=seqlab-test", "-c", "user.email=test@example.org"]
    run(["git", "init", "-q", "-b", "main"], dest)
    run(git + ["add", "-A"], dest)
    run(git + ["commit", "-q", "-m", "tiny"], dest)
    return dest
