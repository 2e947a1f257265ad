"""``python -m pipeline.promote`` (``make promote``): accept a change: ``champion`` moves to the
versions it names, where the gate agrees.

``dvc repro`` only proposes (the report stage sets the ``challenger`` alias): an unreviewed branch
must not change what users load. Accepting the change is this command: a person after ``make run``
on their own machine (``make run`` calls it), or the ``promote`` job when a retraining pull request
is merged. It reads the versions from the checkout's ``provenance/<model>.json`` (what the accepted
change committed), so it promotes exactly what was reviewed, even if a later run has proposed
another challenger since. The rule is :func:`pipeline.tracking.registry.judge`, checked again
against the champion of now.

Every named version is looked up first: when the store lacks one (another store, a version number
of a deleted store), nothing moves and the command exits non-zero.
"""
from __future__ import annotations

from pipeline.config.params import load_params
from pipeline.errors import SeqlabError
from pipeline.io import read_json
from pipeline.paths import PROVENANCE
from pipeline.stage import run_stage
from pipeline.tracking.registry import holds_version, promote
from pipeline.tracking.store import public_uri


def main(argv: list[str]) -> None:
    p = load_params()
    named = []
    for model in p.compared_models:
        prov = read_json(PROVENANCE / f"{model}.json")
        named.append((model, prov["registered_model"], str(prov["version"]), prov.get("run_id")))
    lacking = [f"{name} version {version} (run {run_id})" for _, name, version, run_id in named
               if not holds_version(name, version, run_id)]
    if lacking:
        raise SeqlabError(f"the tracking store {public_uri()} lacks {', '.join(lacking)}, which provenance/ names; "
                          "nothing was promoted (run `dvc repro` against this store, or point MLFLOW_TRACKING_URI "
                          "at the store the change was trained with)")
    for model, name, version, run_id in named:
        gate = promote(name, version, margin=p.mlflow.promotion_margin, run_id=run_id)
        verdict = "promoted" if gate["promoted"] else ("champion" if gate["is_champion"] else "kept")
        holder = f"version {gate['holder_version']}" if gate["holder_version"] else "none"
        print(f"{model}: {name} version {version}: {verdict} (champion before: {holder}; {gate['reason']})")


if __name__ == "__main__":
    run_stage(main)
