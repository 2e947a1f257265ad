"""DVC stage: which tracking store the pipeline logs to -> provenance/store.json.

The registry lives in the tracking store, outside DVC's view: deleting ``mlflow.db`` or pointing
``MLFLOW_TRACKING_URI`` elsewhere would leave every stage "up to date" and the registry empty. This
stage runs at every ``dvc repro`` (``always_changed``) and rewrites the store's identity
(``pipeline.tracking.store.store_identity``) identically unless the store changed; the stages that
register (ngram, evaluate) depend on it, so a new store gets its versions again.
"""
from pipeline.config.params import load_params
from pipeline.io import write_json
from pipeline.paths import STORE_IDENTITY
from pipeline.stage import run_stage
from pipeline.tracking.store import store_identity


def main(argv: list[str]) -> None:
    identity = store_identity(load_params().mlflow.experiment)
    write_json(STORE_IDENTITY, identity)
    print(f"tracking store {identity['uri']}, experiment {identity['experiment']} ({identity['experiment_id']})")


if __name__ == "__main__":
    run_stage(main)
