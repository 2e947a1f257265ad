"""Where things are: the project root (found once, here) and the layout of the outputs under it.

Paths below the root are relative: stages run with the root as working directory
(``pipeline.stage.run_stage``), and DVC declares the same relative paths in ``dvc.yaml``.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent     # pipeline/


def repo_root() -> Path:
    """The project root: the nearest folder above ``pipeline/`` that holds ``dvc.yaml``.

    Falls back to the parent of ``pipeline/`` when no ``dvc.yaml`` exists yet. Inside a
    ``dvc exp run --temp`` executor this is the *temporary copy*
    (``pipeline.tracking.store.original_root`` finds the original).
    """
    for folder in PACKAGE.parents:
        if (folder / "dvc.yaml").is_file():
            return folder
    return PACKAGE.parent


ROOT = repo_root()
PRESETS = ROOT / "presets"
SNAPSHOTS = PACKAGE / "data" / "snapshots"      # texts the builtin corpora ship in the repository
PREPARED = Path("data/prepared")
CORPUS_FINGERPRINT = Path("data/corpus.json")     # what the corpus holds (stages/corpus.py)
CORPUS_STAT_CACHE = Path("data/.corpus-stat.json")  # size and mtime of files already hashed
MODELS = Path("models")
NGRAM_FILE = "model.npz"                       # the n-gram model inside its folder, models/ngram
KIND_FILE = "kind.json"                        # what a model folder holds: {"kind": ...} (pipeline.saved)
METRICS = Path("metrics")
DIAGNOSTICS = METRICS / "diagnostics"           # the diagnose stage's metrics, one file per model
PROVENANCE = Path("provenance")
STORE_IDENTITY = PROVENANCE / "store.json"        # which tracking store holds the registry (stages/store.py)
PLOTS = Path("plots")
REPORTS = Path("reports")
SAMPLES = REPORTS / "samples"
MEDIA = REPORTS / "media"    # per model: an image corpus's PNG grids, a music corpus's ABC and MIDI (empty for text)
CHECKPOINTS = Path("checkpoints")


def model_lock(arch: str) -> Path:
    """The lock a stage of model ``arch`` holds while it runs (``pipeline.lock``): beside
    the checkpoints, outside every DVC out, so that DVC never removes it."""
    return CHECKPOINTS / f"{arch}.lock"
