"""Which ``dvc repro`` an MLflow run belongs to.

DVC gives its stages no id of the repro that runs them. The ``corpus`` stage runs first at every
repro (``always_changed``; every stage that logs a run depends on it), so it starts a new id
(:func:`begin`); every run that a later stage opens or resumes carries it as the tag
``seqlab.repro`` (``pipeline.tracking.runs.run_tags``), so the runs table can filter and group the
runs of one repro. The id lives in DVC's own scratch folder, ``.dvc/tmp``, which git ignores and
each ``dvc exp run --temp`` copy has for itself.
"""
from __future__ import annotations

import time
import uuid

from pipeline.paths import ROOT

REPRO_FILE = ROOT / ".dvc" / "tmp" / "seqlab-repro"
REPRO_TAG = "seqlab.repro"


def begin() -> str | None:
    """A new id (UTC start time and a random suffix) for the repro starting now; None outside a DVC
    repository."""
    if not REPRO_FILE.parent.parent.is_dir():
        return None
    from pipeline.io import write_text
    REPRO_FILE.parent.mkdir(exist_ok=True)
    rid = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    write_text(REPRO_FILE, rid + "\n")
    return rid


def current() -> str | None:
    """The id of the latest repro of this checkout (a stage run by hand joins it), or None."""
    try:
        return REPRO_FILE.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
