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
