"""DVC deps cannot drift from the code: every project module a stage's command imports is a dep.

For every stage of dvc.yaml (each ``foreach`` once), the test follows the imports of its command's
module transitively (module-level and function-level ones, packages' ``__init__`` included, as
Python executes them) and fails when a project file is not covered by the stage's ``deps``. The
family modules, which the registry imports by name, must be deps of every stage that builds a
network.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from pipeline.models.catalog import FAMILY_MODULES
from pipeline.saved import KINDS
from tests.conftest import ROOT

PACKAGES = ("pipeline", "stages", "families")


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(module: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages' ``__init__``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


LOAD_TIME = "# load time"      # runs where a logged model is loaded, never in the stage
CHECK_ONLY = "# check only"    # decides whether the stage may run, never what it writes


def _imports(path: Path, module: str) -> set[str]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source, str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and (
                LOAD_TIME in lines[node.lineno - 1] or CHECK_ONLY in lines[node.lineno - 1]):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {m for m in found if m.split(".")[0] in PACKAGES}


def closure(module: str) -> set[Path]:
    """Project files executed when ``python -m module`` runs (as far as imports show)."""
    seen: set[str] = set()
    files: set[Path] = set()
    todo = [module]
    while todo:
        for name in _with_parents(todo.pop()):
            if name in seen:
                continue
            seen.add(name)
            if name == "pipeline.saved.load_saved":  # loads any saved model: every kind's module, imported by name
                todo.extend(target.partition(":")[0] for target in KINDS.values())
            path = _module_file(name)
            if path is None:       # an attribute imported with `from`, not a module
                continue
            files.add(path.relative_to(ROOT))
            todo.extend(_imports(path, name))
            if name == "pipeline.models.network":   # builds a network: its family module, imported by name
                todo.extend(FAMILY_MODULES)
    return files


def stages() -> dict[str, dict]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {name: s.get("do", s) for name, s in spec.items()}


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


def _command_module(cmd: str) -> str:
    m = re.match(r"python -m ([\w.]+)", cmd)
    assert m, f"stage command {cmd!r} is not `python -m <module> ...`"
    return m.group(1)


@pytest.mark.parametrize("name", list(stages()))
def test_deps_cover_every_imported_module(name):
    stage = stages()[name]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]]
    files = closure(_command_module(stage["cmd"]))
    assert Path(f"stages/{name}.py") in files
    missing = sorted(str(f) for f in files if not covered(f, deps))
    assert not missing, f"dvc.yaml: stage {name!r} imports {missing} but does not list them (or a folder) in deps"
    if Path("pipeline/models/network.py") in files:   # builds networks: the user's families are deps too
        assert covered(Path("families/window_mlp.py"), deps), "the user-family folder must be a dep"


@pytest.mark.parametrize("name", list(stages()))
def test_deps_name_no_module_the_stage_does_not_import(name):
    """A module listed but never imported would rerun the stage for edits that cannot change it
    (the seams: editing model code does not rerun prepare or the report)."""
    stage = stages()[name]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]]
    files = {str(f) for f in closure(_command_module(stage["cmd"]))}
    extra = [d for d in deps if d.endswith(".py") and d not in files]
    assert not extra, f"dvc.yaml: stage {name!r} lists {extra} in deps but never imports them"


def test_only_the_stages_that_use_model_code_depend_on_it():
    model_code = Path("pipeline/models/family.py")
    users = {name for name, stage in stages().items() if model_code in closure(_command_module(stage["cmd"]))}
    # corpus validates every model entry against its family (it runs at every repro anyway)
    assert users == {"corpus", "ngram", "train", "evaluate", "diagnose"}, users   # not store, prepare, report


def test_the_closure_follows_function_level_and_relative_imports():
    files = closure("stages.evaluate")
    assert Path("pipeline/generation/sampling.py") in files        # via decoding
    assert Path("pipeline/models/stepper.py") in files              # relative `from .stepper import`
    assert Path("pipeline/models/__init__.py") in files             # a package's __init__ runs
    assert Path("pipeline/tracking/pyfunc.py") in files
    assert Path("pipeline/generation/sampling.py") in closure("stages.ngram")   # the n-gram samples too
    train = closure("stages.train")
    assert Path("pipeline/models/fast_rnn.py") in train                 # a family module's lazy import
    assert Path("pipeline/generation/sampling.py") not in train         # only where the generator is loaded
