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


def _cycle(edges) -> list[str] | None:
    """One cycle of the directed graph ``edges`` ((a, b) pairs), as a path a -> ... -> a, or None."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}      # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_circle_between_packages():
    """Packages form layers (config below models, models below scoring, ...), lazy imports counted."""
    edges = _package_imports()
    found = _cycle(edges)
    assert found is None, {" -> ".join(found): [edges[pair] for pair in zip(found, found[1:])]}


def _module_imports() -> set[tuple[str, str]]:
    """(importer, imported) between the modules of ``pipeline`` (relative and lazy imports resolved)."""
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in ROOT.glob("pipeline/**/*.py")}
    edges = set()
    for me, path in files.items():
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            edges.update((me, t) for t in targets if t in files and t != me)
    return edges


def test_no_import_circle_between_modules():
    """No module imports one that imports it back, not even lazily (a circle hidden in a function
    is still one: neither module can be read, tested or moved without the other)."""
    found = _cycle(_module_imports())
    assert found is None, " -> ".join(found)


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
