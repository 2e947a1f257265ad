"""One owner per concern, checked on the source: who imports MLflow, who names a family, who loads weights."""
import ast
from pathlib import Path

from pipeline.models.catalog import FAMILY_MODULES, builtin_families
from tests.conftest import ROOT

CODE = [*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("stages/*.py"), *ROOT.glob("benchmarks/*.py"),
        *ROOT.glob("families/*.py")]


def _tree(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_only_the_tracking_package_imports_mlflow():
    tracking = ROOT / "pipeline" / "tracking"
    offenders = [str(p.relative_to(ROOT)) for p in CODE if tracking not in p.parents
                 and any(m == "mlflow" or m.startswith("mlflow.") for m in _imported_modules(p))]
    assert not offenders, f"MLflow is pipeline.tracking's concern: {offenders}"


def test_one_loader_for_a_trained_network():
    """Weights are loaded in one place, pipeline.models.network.load_network (MLflow's own
    ``mlflow[.pyfunc].load_model`` of a logged model is not a weights loader)."""
    def mlflow_call(value):
        while isinstance(value, ast.Attribute):
            value = value.value
        return isinstance(value, ast.Name) and value.id in ("mlflow", "pyfunc")

    loaders = [str(p.relative_to(ROOT)) for p in CODE
               if any(isinstance(n, ast.Attribute) and n.attr in ("load_weights", "load_model")
                      and not mlflow_call(n.value) for n in ast.walk(_tree(p)))]
    assert loaders == ["pipeline/models/network.py"], loaders


def test_one_repo_root_discovery():
    """Only pipeline/paths.py works out where the project is."""
    finders = [str(p.relative_to(ROOT)) for p in CODE if p.parent != ROOT / "benchmarks"
               and "Path(__file__)" in p.read_text(encoding="utf-8")]
    assert finders == ["pipeline/paths.py"], finders


def test_no_family_name_outside_the_family_modules():
    """Nothing outside the family modules decides by a family's name (tests may, to pick examples)."""
    names = set(builtin_families())
    family_files = {ROOT.joinpath(*m.split(".")).with_suffix(".py") for m in FAMILY_MODULES}
    reference = {ROOT / "benchmarks" / "torch_reference.py"}     # PyTorch's own models, not seqlab families
    found = []
    for path in CODE:
        if path in family_files or path in reference:
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, found


def _package(module: str) -> str | None:
    """``pipeline.models.network`` -> ``models``; a top-level module (``pipeline.io``) is its own package."""
    parts = module.split(".")
    return parts[1] if parts[0] == "pipeline" and len(parts) > 1 else None


def _package_imports() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) -> the files that import it, every import counted (lazy ones too)."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in ROOT.glob("pipeline/**/*.py"):
        me = _package(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for module in _imported_modules(path):
            other = _package(module)
            if other and other != me:
                edges.setdefault((me, other), []).append(str(path.relative_to(ROOT)))
    return edges


# config validates the model entries of params.yaml with the families' own parameters; the one
# circle left, named here so that no other can appear unnoticed
KNOWN_CIRCLES = {frozenset({"config", "models"})}


def test_no_import_circle_between_packages():
    edges = _package_imports()
    circles = {frozenset(pair) for pair in edges if pair[::-1] in edges}
    assert circles <= KNOWN_CIRCLES, {tuple(sorted(c)): [edges[p] for p in edges if frozenset(p) == c]
                                      for c in circles - KNOWN_CIRCLES}


def test_generation_does_not_import_tracking_and_tracking_does_not_choose_decoders():
    edges = _package_imports()
    assert ("generation", "tracking") not in edges, edges.get(("generation", "tracking"))
    pyfunc = ROOT / "pipeline" / "tracking" / "pyfunc.py"
    assert not {m for m in _imported_modules(pyfunc) if m.startswith(("pipeline.generation.compiled",
                                                                    "pipeline.models.network", "pipeline.models.ngram"))}
    assert "NGRAM_FILE" not in pyfunc.read_text(encoding="utf-8")


def test_no_stage_names_the_ngram_or_asks_which_model_it_holds():
    """Outside its own stage, the n-gram is one of the compared models (``Params.compared_models``),
    loaded like every other one (``pipeline.saved``)."""
    found = []
    for path in [*ROOT.glob("stages/*.py"), ROOT / "pipeline" / "tracking" / "pyfunc.py",
                 ROOT / "pipeline" / "reporting.py", ROOT / "pipeline" / "properties.py"]:
        if path.name == "ngram.py":
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ('"ngram"', "'ngram'", "NGRAM_FILE", "model.npz", "KneserNeyLM"):
            if needle in text:
                found.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not found, found
