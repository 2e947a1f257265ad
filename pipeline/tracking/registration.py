"""Registering a trained model in MLflow: its text-generator pyfunc (and, for a network, the Keras model).

Training writes a network folder and nothing else; the evaluate stage registers it
(:func:`register_trained`), so that the serving code is a dependency of the stages that register,
never of training: an edit to the serving code registers again without retraining.

A registered version is identified by what it serves: the run that trained the model and the
:func:`served_fingerprint` of the files the generator ships (the model folder, the vocabulary,
the code, the sampler defaults). Registering is idempotent: rerunning evaluate on the same network
with the same serving code finds its version. DVC can also bring a trained network back without
training it (its run cache, ``dvc checkout``, ``dvc pull``) into a tracking store that never saw
its training run (a deleted ``mlflow.db``, a new tracking server, another machine): the version
is then registered in a new run that says where it came from (:data:`RESTORED_TAG`), so that
evaluation, the registry tags and the promotion gate always refer to a version that exists.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.tracking import store
from pipeline.tracking.keras_model import log_keras_model
from pipeline.tracking.pyfunc import log_generator, shipped_code
from pipeline.tracking.registry import registered_name, set_version_tag
from pipeline.tracking.runs import DATA_HASH_TAG, model_run

RESTORED_TAG = "registered_from_dvc_cache"   # on a run registering a network whose training run the store lacks
TRAINED_IN_TAG = "trained_in_run"           # on a version: the run id its network's run.json names
SERVED_TAG = "served_fingerprint"           # on a version: served_fingerprint() of what it serves


def sampler_defaults(generate, length_penalty: float | None = None) -> dict:
    """The settings a registered generator serves with by default: the ``generate`` section's, and
    for a network the beam's ``length_penalty`` (``eval.length_penalty``: served as evaluated)."""
    found = {"max_tokens": generate.max_tokens, "temperature": generate.temperature,
             "top_k": generate.top_k, "top_p": generate.top_p}
    return found if length_penalty is None else found | {"length_penalty": float(length_penalty)}


def served_fingerprint(folder: Path, vocab_path: Path, model_cfg, defaults: dict) -> str:
    """sha256 over what a registered generator serves: every file of the model ``folder``, the
    vocabulary, the Python source it ships (:func:`~pipeline.tracking.pyfunc.shipped_code`) and
    the sampler ``defaults``. Equal fingerprints serve the same text."""
    digest = hashlib.sha256(json.dumps(defaults, sort_keys=True).encode())
    files = [(f"model/{p.relative_to(folder)}", p) for p in sorted(Path(folder).rglob("*")) if p.is_file()]
    files.append(("vocab.json", Path(vocab_path)))
    for root in shipped_code(model_cfg):
        found = [root] if root.is_file() else sorted(root.rglob("*.py"))
        files += [(f"code/{root.name}/{p.relative_to(root.parent if root.is_file() else root)}", p) for p in found]
    for name, path in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def register_generator(folder: Path, vocab_path: Path, model_cfg, name: str, data_hash: str, defaults: dict,
                       tags: dict | None = None) -> str:
    """Log the text generator of the model saved in ``folder`` (a network's, or the n-gram's) to the
    active run and register it as a new version of ``name``, tagged with ``data_hash`` (which the
    promotion gate compares) and ``tags``; returns the version. ``defaults``: the settings it serves
    with (:func:`sampler_defaults`).
    """
    info = log_generator(folder, vocab_path, model_cfg, registered_name=name, defaults=defaults)
    version = str(info.registered_model_version)
    for key, value in {DATA_HASH_TAG: data_hash, **(tags or {})}.items():
        set_version_tag(name, version, key, value)
    return version


def _served_version(name: str, trained_in: str, fingerprint: str):
    """The version of ``name`` trained in run ``trained_in`` that serves ``fingerprint``, or None."""
    for found in store.client().search_model_versions(f"name = '{name}'"):
        if found.tags.get(TRAINED_IN_TAG) == trained_in and found.tags.get(SERVED_TAG) == fingerprint:
            return found
    return None


def register_trained(experiment: str, arch: str, summary: dict, folder: Path, network, vocab_path: Path,
                     data_hash: str, generate, length_penalty: float) -> dict:
    """The registered version serving the network in ``folder``: found, or registered now.

    ``summary`` is the folder's ``run.json`` as the train stage wrote it; ``generate`` and
    ``length_penalty`` are the settings it serves with by default. The generator pyfunc is
    the registered version (what ``mlflow models serve`` and
    ``mlflow.pyfunc.load_model("models:/<name>@champion")`` load); the Keras network is logged
    beside it as the run's ``model`` artifact (``mlflow.keras``), for users who want logits. Both
    go to the training run; when the store lacks it, to a new run named ``arch``, tagged
    :data:`RESTORED_TAG` with the original run id and given the training numbers of ``summary``.
    Returns ``{"name", "run_id", "version"}``.
    """
    name = registered_name(experiment, arch)
    trained_in = summary["run_id"]
    defaults = sampler_defaults(generate, length_penalty)
    fingerprint = served_fingerprint(folder, vocab_path, network.cfg, defaults)
    found = _served_version(name, trained_in, fingerprint)
    if found is not None:
        return {"name": name, "run_id": found.run_id, "version": str(found.version)}
    with model_run(experiment, arch, "evaluate", data_hash, run_id=trained_in) as run:
        if run.id != trained_in:
            run.set_tag(RESTORED_TAG, trained_in)
            run.log_metrics({k: summary[k] for k in ("parameters", "train_seconds", "train_tokens_per_second")})
        log_keras_model(network.model, vocab_path, None, data_hash)
        trained = {f"train.{k}": str(summary[k]) for k in ("state", "kept_epoch") if k in summary}   # which epoch it is
        version = register_generator(folder, vocab_path, network.cfg, name, data_hash, defaults,
                                     {TRAINED_IN_TAG: trained_in, SERVED_TAG: fingerprint} | trained)
    if run.id != trained_in:
        print(f"{arch}: the tracking store has no training run {trained_in} (the network came from DVC's cache); "
              f"registered it as version {version} of {name}, run {run.id}")
    return {"name": name, "run_id": run.id, "version": version}
