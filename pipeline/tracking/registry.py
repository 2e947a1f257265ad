"""The model registry: version names, metrics on versions, and the promotion gate.

Registered models are named ``<experiment>-<arch>`` (:func:`registered_name`). The gate has two
halves with one rule (:func:`judge`): a run that nobody has reviewed yet (``dvc repro``, the scheduled
retrain) only *proposes* a better version as the ``challenger`` (:func:`propose`); ``champion``, the
version users load, moves when the change is accepted (``make promote``: :func:`promote`).
"""
from __future__ import annotations

import math

from pipeline.tracking.runs import DATA_HASH_TAG
from pipeline.tracking import store

CHAMPION = "champion"       # the version users load and serve: moved only by an accepted review (promote)
CHALLENGER = "challenger"   # the version an unreviewed run proposes (propose)
DEFAULT_MARGIN = 0.005      # relative gain in the metric a version needs over the champion


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


def judge(holder: dict | None, candidate: dict, metric: str, margin: float, alias: str = CHAMPION) -> tuple[bool, str]:
    """The promotion rule, on plain values: whether ``candidate`` should replace ``holder`` as
    ``alias``, and why. Each is ``{"version", "metric", "data_hash"}`` (``metric`` None when the version
    has none); lower is better. First match wins:

    - the candidate has no ``metric``: keep ("version V has no METRIC");
    - no holder: take it ("first version");
    - the holder is the candidate: nothing to do ("already holds ALIAS");
    - the holder has no ``metric``: take it;
    - they were evaluated on different data (``data_hash`` differs): **take it**, saying so. The
      two numbers are not comparable (another corpus, another split), and keeping the holder for
      good would leave the served model on data the lab no longer uses. The policy is stated in
      the reason and the review: a data change proposes the model trained and evaluated on the
      new data, and accepting the review makes it the champion;
    - the candidate is better by more than ``margin`` (relative: ``cand < holder * (1 - margin)``):
      take it. A tie or a gain inside the margin is run-to-run noise (another seed moves a small
      model's test bits per character by about half a percent), not a better model: keep.
    """
    name = f"version {candidate['version']}"
    cand, held = candidate.get("metric"), holder.get("metric") if holder else None
    if cand is None:
        return False, f"{name} has no {metric}"
    if holder is None:
        return True, "first version"
    if str(holder["version"]) == str(candidate["version"]):
        return False, f"already holds {alias}"
    if held is None:
        return True, f"holder (version {holder['version']}) has no {metric}"
    if holder.get("data_hash") != candidate.get("data_hash"):
        return True, (f"data changed: {alias} version {holder['version']} was evaluated on data {holder.get('data_hash')}, "
                      f"{name} on {candidate.get('data_hash')}; their {metric} ({held:.6g}, {cand:.6g}) are not "
                      "comparable, so the model of the new data is proposed")
    bar = held * (1 - margin)
    if cand < bar:
        return True, f"better {metric}: {cand:.6g} < {held:.6g} by more than the {margin:.2%} margin"
    if cand < held:
        return False, f"within the {margin:.2%} margin: {metric} {cand:.6g} against {held:.6g} (needs < {bar:.6g})"
    return False, f"not better {metric}: {cand:.6g} >= {held:.6g}"


def _gate(registered_name: str, version: str, metric: str, margin: float, run_id: str | None,
          alias: str | None, tag: str | None) -> dict:
    """Judge ``version`` against the ``champion`` holder; when it wins, set ``alias`` on it (the
    champion itself, or the challenger that a review accepts). Tags the version ``tag`` with the
    reason. ``alias`` None: judge only, write nothing. See :func:`propose` and :func:`promote` for
    what is returned."""
    from mlflow.exceptions import MlflowException

    client = store.client()
    version = str(version)
    try:
        holder = client.get_model_version_by_alias(registered_name, CHAMPION)
    except MlflowException:
        holder = None
    held = ({"version": str(holder.version), "metric": _metric_tag(holder.tags, metric),
             "data_hash": holder.tags.get(DATA_HASH_TAG)} if holder is not None else None)
    out = {"holder_version": held and held["version"], "holder_metric": held and held["metric"],
           "version": version, "margin": margin}
    candidate = _find_version(client, registered_name, version, run_id)
    if candidate is None:  # e.g. metrics written against another tracking store
        return out | {"accepted": False, "promoted": False, "version_metric": None, "is_champion": False,
                      "reason": f"version {version} of {registered_name} is not in the tracking store "
                      f"{store.public_uri()}" + (f" from run {run_id}" if run_id else "") + ": re-run its evaluate "
                      "stage to register it"}
    cand = {"version": version, "metric": _metric_tag(candidate.tags, metric),
            "data_hash": candidate.tags.get(DATA_HASH_TAG)}
    accepted, reason = judge(held, cand, metric, margin)
    if alias is None:
        return out | {"accepted": accepted, "promoted": False, "reason": reason, "version_metric": cand["metric"],
                      "is_champion": held is not None and held["version"] == version}
    if accepted:
        client.set_registered_model_alias(registered_name, alias, version)
        if alias == CHAMPION:
            try:
                if str(client.get_model_version_by_alias(registered_name, CHALLENGER).version) == version:
                    client.delete_registered_model_alias(registered_name, CHALLENGER)
            except MlflowException:
                pass
    client.set_model_version_tag(registered_name, version, tag, reason)
    return out | {"accepted": accepted, "promoted": accepted and alias == CHAMPION, "reason": reason,
                  "version_metric": cand["metric"],
                  "is_champion": (accepted and alias == CHAMPION) or (held is not None and held["version"] == version)}


def assess(registered_name: str, version: str, metric: str = "test_bpc", margin: float = DEFAULT_MARGIN,
           run_id: str | None = None) -> dict:
    """What the gate says of ``version`` against the champion of now, without moving or tagging
    anything (the retraining review). Returns what :func:`propose` does."""
    return _gate(registered_name, version, metric, margin, run_id, None, None)


def propose(registered_name: str, version: str, metric: str = "test_bpc", margin: float = DEFAULT_MARGIN,
            run_id: str | None = None) -> dict:
    """The gate of an unreviewed run (the report stage): when ``version`` beats the champion
    (:func:`judge`), it becomes the ``challenger``; ``champion`` does not move. The reason goes on
    the version as tag ``proposal``. Returns ``{"accepted", "promoted" (always False), "reason",
    "holder_version", "holder_metric", "version", "version_metric", "margin", "is_champion"}``
    (``holder_*``: the champion, None when there is none)."""
    return _gate(registered_name, version, metric, margin, run_id, CHALLENGER, "proposal")


def promote(registered_name: str, version: str, metric: str = "test_bpc", margin: float = DEFAULT_MARGIN,
            run_id: str | None = None) -> dict:
    """The gate of an accepted change (``make promote`` after the review): ``champion`` moves to
    ``version`` when it beats the holder (:func:`judge`, checked again: the champion may have moved
    since the proposal), and the ``challenger`` alias leaves it. The reason goes on the version as
    tag ``promotion``. Returns what :func:`propose` does, ``promoted`` saying whether this call moved
    ``champion`` and ``is_champion`` whether ``version`` holds it afterwards (true as well on a
    re-run: "already holds champion"). A version the store does not have (or, with ``run_id``, that
    another run logged: a new store numbers versions from 1 again) is not promoted, and the reason
    says so."""
    return _gate(registered_name, version, metric, margin, run_id, CHAMPION, "promotion")
