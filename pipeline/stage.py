"""What every stage script shares: the working directory and the error exit.

A stage turns a :class:`SeqlabError` into one line on stderr and exit status 2; outputs are only
written at the end (atomically), so a failed stage leaves nothing half-written.
"""
from __future__ import annotations

import os
import sys
from typing import Callable

from pipeline.errors import SeqlabError
from pipeline.paths import ROOT


def quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_stage(main: Callable[[list[str]], None], tracked: bool = True) -> None:
    """Run ``main`` in the repository; a ``tracked`` stage (one that logs to MLflow) first checks
    that the tracking store can take it, within seconds, before any work."""
    quiet_tensorflow()
    os.chdir(ROOT)
    try:
        if tracked:
            from pipeline.tracking.store import check_store  # check only
            check_store()
        main(sys.argv[1:])
    except SeqlabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
