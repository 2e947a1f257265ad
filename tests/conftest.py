"""Shared test helpers: the repo root, the shared corpora (optional), and quiet TensorFlow."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
SHARED_CORPORA = ROOT.parent / "shared" / "corpora"


@pytest.fixture
def shared_corpora() -> Path:
    if not SHARED_CORPORA.is_dir():
        pytest.skip(f"shared corpora not present at {SHARED_CORPORA}")
    return SHARED_CORPORA
