"""What the benchmarks share: the matmul peak, measured in the benchmark's own run (they report
ratios to it), and the JSON lines they print and save."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable


def matmul_peak_gflops(n: int = 4096, repeats: int = 3) -> float:
    """Best float32 n x n x n matrix product rate, with and without XLA (TensorFlow's two CPU
    matmul paths differ by up to 1.5x on some CPUs); the whole product is fetched, so that no
    compiler can compute less of it."""
    import tensorflow as tf
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    best = float("inf")
    for jit in (False, True):
        mm = tf.function(lambda x, y: tf.linalg.matmul(x, y), jit_compile=jit)
        mm(a, b).numpy()
        for _ in range(repeats):
            t0 = time.perf_counter()
            mm(a, b).numpy()
            best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def emit(rows: Iterable[dict], out: str | None) -> list[dict]:
    """Print each row as a JSON line as it comes; with ``out``, also write them all to that file."""
    done = []
    for row in rows:
        print(json.dumps(row), flush=True)
        done.append(row)
    if out:
        Path(out).write_text("".join(json.dumps(r) + "\n" for r in done))
    return done


def saved_networks(models: str, archs: list[str] | None) -> list[Path]:
    """The network folders under ``models`` (``archs``: only these), or exit with a clear message."""
    import sys

    from pipeline.models.network import CONFIG
    root = Path(models)
    folders = sorted(p for p in root.iterdir() if (p / CONFIG).is_file()) if root.is_dir() else []
    if archs:
        folders = [root / a for a in archs]
    if not folders:
        sys.exit(f"--models {root}: no saved networks (folders with {CONFIG}); run `make run` first")
    return folders
