"""The model registry: version names, metrics on versions, and the promotion gate.

Registered models are named ``<experiment>-<arch>`` (:func:`registered_name`); the alias
``champion`` moves only to a better version (:func:`promote`).
"""
from __future__ import annotations

import math

from pipeline.tracking.runs import DATA_HASH_TAG
from pipeline.tracking import store

CHAMPION = "champion"


def registered_name(experiment: str, arch: str) -> str:
    """Registry name of an architecture's models: ``<experiment>-<arch>``, e.g. ``seqlab-lstm``."""
    return f"{experiment}-{arch}"


def set_version_tag(registered_name: str, version: str, key: str, value: str) -> None:
    store.client().set_model_version_tag(registered_name, str(version), key, value)


def set_version_metrics(registered_name: str, version: str, metrics: dict) -> None:
    """Tag a registered version with metrics (e.g. ``test_bpc``), stored as ``repr(float)``."""
    client = store.client()
    for key, value in metrics.items():
        client.set_model_version_tag(registered_name, str(version), key, repr(float(value)))


def _find_version(client, registered_name: str, version: str, run_id: str | None):
    """The store's ``version`` of ``registered_name`` (logged by run ``run_id`` when given), or None.

    A new store numbers its versions from 1 again, so a version number alone does not identify a
    model: with ``run_id``, a version another run logged counts as missing.
    """
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_model_version(registered_name, str(version))
    except MlflowException:
        return None
    return found if run_id is None or found.run_id == run_id else None


def holds_version(registered_name: str, version: str, run_id: str) -> bool:
    """Whether the store has ``version`` of ``registered_name``, logged by run ``run_id``."""
    return _find_version(store.client(), registered_name, version, run_id) is not None


def _metric_tag(tags: dict, metric: str) -> float | None:
    try:
        value = float(tags[metric])
    except (KeyError, TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def promote(registered_name: str, version: str, metric: str = "test_bpc",
            alias: str = CHAMPION, run_id: str | None = None) -> dict:
    """The promotion gate: move ``alias`` to ``version`` only when it is better. Lower is better.

    - No holder yet: the version takes the alias ("first version"), provided it has ``metric``.
    - The version has no ``metric`` tag: never promoted.
    - The holder has no ``metric`` tag: the evaluated version takes over.
    - Holder and version evaluated on different data (``data_hash`` tags differ): the holder is
      KEPT ("holder evaluated on different data"). Bits per character of different corpora or
      splits are not comparable, so neither winning nor losing that comparison means anything;
      moving the alias silently would let a corpus change replace (or protect) the served model
      by accident. Moving it is a human decision: re-evaluate the holder on the new data and
      call :func:`set_version_metrics` with the new ``data_hash``, or set the alias by hand
      (``MlflowClient().set_registered_model_alias``). The returned reason says so.
    - Otherwise the version takes the alias only when its metric is strictly lower.

    The outcome is written on the version as tag ``promotion``. Returns
    ``{"promoted", "reason", "holder_version", "holder_metric", "version", "version_metric",
    "is_champion"}`` where ``holder_*`` describe the holder before this call (``None`` when there
    was none), ``promoted`` says whether this call moved the alias and ``is_champion`` whether
    ``version`` holds it afterwards (true as well on a re-run: "already holds champion").
    A version the store does not have (or, with ``run_id``, that another run logged: a new
    store numbers versions from 1 again) is not promoted, and the reason says so.
    """
    from mlflow.exceptions import MlflowException

    client = store.client()
    version = str(version)
    try:
        holder = client.get_model_version_by_alias(registered_name, alias)
    except MlflowException:
        holder = None
    holder_version = str(holder.version) if holder is not None else None
    holder_metric = _metric_tag(holder.tags, metric) if holder is not None else None
    candidate = _find_version(client, registered_name, version, run_id)
    if candidate is None:  # e.g. metrics written against another tracking store
        return {"promoted": False, "reason": f"version {version} of {registered_name} is not in the tracking "
                f"store {store.public_uri()}" + (f" from run {run_id}" if run_id else "") + ": re-run its evaluate "
                "stage to register it",
                "holder_version": holder_version, "holder_metric": holder_metric, "version": version,
                "version_metric": None, "is_champion": False}
    cand_metric = _metric_tag(candidate.tags, metric)

    def result(promoted: bool, reason: str) -> dict:
        if promoted:
            client.set_registered_model_alias(registered_name, alias, version)
        client.set_model_version_tag(registered_name, version, "promotion", reason)
        return {"promoted": promoted, "reason": reason, "holder_version": holder_version,
                "holder_metric": holder_metric, "version": version, "version_metric": cand_metric,
                "is_champion": promoted or holder_version == version}

    if cand_metric is None:
        return result(False, f"version {version} has no {metric}")
    if holder is None:
        return result(True, "first version")
    if holder_version == version:
        return result(False, f"already holds {alias}")
    if holder_metric is None:
        return result(True, f"holder has no {metric}")
    if holder.tags.get(DATA_HASH_TAG) != candidate.tags.get(DATA_HASH_TAG):
        return result(False, "holder evaluated on different data")
    if cand_metric < holder_metric:
        return result(True, f"better {metric}: {cand_metric:.6g} < {holder_metric:.6g}")
    return result(False, f"not better {metric}: {cand_metric:.6g} >= {holder_metric:.6g}")
