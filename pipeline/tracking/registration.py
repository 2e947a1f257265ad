"""Registering a trained network in MLflow: the Keras model plus its text-generator pyfunc.

The train stage registers what it trained. DVC can also bring a trained network back without
training it (its run cache, ``dvc checkout``, ``dvc pull``), and the tracking store in use may then
never have seen it: a deleted ``mlflow.db``, a new tracking server, another machine. The evaluate
stage calls :func:`ensure_registered`, which registers such a network again, in a new run that
says where it came from, so that evaluation, the registry tags and the promotion gate always
refer to a version that exists.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.tracking.keras_model import log_keras_model
from pipeline.tracking.pyfunc import log_generator
from pipeline.tracking.registry import holds_version, set_version_tag
from pipeline.tracking.runs import DATA_HASH_TAG, model_run

RESTORED_TAG = "registered_from_dvc_cache"


def register_generator(folder: Path, vocab_path: Path, model_cfg, name: str, data_hash: str, generate) -> str:
    """Log the text generator of the model saved in ``folder`` (a network's, or the n-gram's) to the
    active run and register it as a new version of ``name``, tagged with ``data_hash`` (which the
    promotion gate compares); returns the version. ``generate``: the sampler defaults it serves with.
    """
    info = log_generator(folder, vocab_path, model_cfg, registered_name=name,
                         defaults={"max_tokens": generate.max_tokens, "temperature": generate.temperature,
                                   "top_k": generate.top_k, "top_p": generate.top_p})
    version = str(info.registered_model_version)
    set_version_tag(name, version, DATA_HASH_TAG, data_hash)
    return version


def register_network(network, folder: Path, vocab_path: Path, name: str, data_hash: str, generate) -> str:
    """Log ``network`` (a ``Network``, saved in ``folder``) to the active run and register its text
    generator as a new version of ``name``; returns the version.

    The registered version is the generator pyfunc (what ``mlflow models serve`` and
    ``mlflow.pyfunc.load_model("models:/<name>@champion")`` load); the Keras network is the run's
    ``model`` artifact (``mlflow.keras``), for users who want logits.
    """
    log_keras_model(network.model, vocab_path, None, data_hash)
    return register_generator(folder, vocab_path, network.cfg, name, data_hash, generate)


def ensure_registered(experiment: str, arch: str, summary: dict, folder: Path, network, vocab_path: Path,
                      data_hash: str, generate) -> dict:
    """The training run and registered version of the network in ``folder``, registering it if needed.

    ``summary`` is the folder's ``run.json`` as the train stage wrote it. When the store holds
    ``summary``'s version and that version came from ``summary``'s run, returns them unchanged.
    Otherwise it opens a new run named ``arch``, tagged
    :data:`RESTORED_TAG` with the original run id, logs the training numbers of ``summary`` and
    registers the network as a new version. Returns ``{"run_id", "version"}``.
    """
    name = summary["registered_model"]
    if holds_version(name, summary["version"], summary["run_id"]):
        return {"run_id": summary["run_id"], "version": str(summary["version"])}
    with model_run(experiment, arch, "train", data_hash) as run:
        run.set_tag(RESTORED_TAG, summary["run_id"])
        run.log_metrics({k: summary[k] for k in ("parameters", "train_seconds", "train_tokens_per_second")})
        version = register_network(network, folder, vocab_path, name, data_hash, generate)
    print(f"{arch}: the tracking store has no version {summary['version']} of {name} from run {summary['run_id']} "
          f"(the network came from DVC's cache); registered it as version {version}, run {run.id}")
    return {"run_id": run.id, "version": version}
