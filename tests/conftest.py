"""Shared test helpers: the repo root, the shared corpora (optional), and quiet TensorFlow."""
import os
from contextlib import contextmanager
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


@contextmanager
def tracking_store(folder: Path):
    """MLFLOW_TRACKING_URI set to a sqlite store in ``folder`` (and no DVC experiment variables)
    for the duration; yields the URI."""
    uri = f"sqlite:///{(Path(folder) / 'mlflow.db').resolve()}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        for key in ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
            mp.delenv(key, raising=False)
        yield uri


# The longest modules first, so that `make test`'s two pytest-xdist workers (`--dist loadfile`)
# start them at once and finish together; the order within a module is kept.
LONGEST_FIRST = ("test_pipeline_e2e.py", "test_resume.py", "test_stage_errors.py", "test_distribute.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: other modules keep their order
