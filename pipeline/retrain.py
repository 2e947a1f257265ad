"""``python -m pipeline.retrain`` (``make retrain``): one retraining, the same for a person and for the
scheduled job, ending in the review of what it proposes.

In order, stopping at the first failure (exit status non-zero, nothing pushed, nothing proposed):

1. the tracking store must answer (and take the credentials), and a folder remote must exist,
   before anything runs;
2. **new data in**: ``dvc update`` of every imported data file (``dvc import-url``, ``dvc import``
   from a data registry): the newest version of the corpus. A corpus the repository holds (a
   builtin, a committed or ``dvc add``-ed file or folder) changes by a commit instead;
3. with a DVC remote: ``dvc pull --run-cache --allow-missing``, so that unchanged stages (same code,
   params and data) are restored rather than run again: unchanged data retrains nothing;
4. ``dvc repro``: the report stage's gate proposes better versions as ``challenger``; nothing here
   moves ``champion`` (``make promote`` does, once the change is accepted);
5. with a DVC remote: ``dvc push --run-cache``, so the next retrain, anywhere, starts from this one;
6. the review (``review.md``, the pull request's body, not committed): what the data is and whether it
   changed, ``dvc metrics diff`` against the base revision, and the gate's decision for every model
   with its reason.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.errors import SeqlabError
from pipeline.config.params import BASELINE, load_params
from pipeline.paths import PROVENANCE, REPORTS, ROOT

REVIEW = Path("review.md")   # the pull request's body; not committed (each week's would churn the diff)
CHANGED_PATHS = ("dvc.lock", "metrics", "provenance", "reports", "plots")   # what a retraining proposes


def _dvc(*args: str, what: str, capture: bool = False) -> str:
    """Run ``dvc ARGS`` in the repository, its output streamed (or, ``capture``, returned); a failure
    raises one line naming the step (DVC's own error lines are above it)."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ROOT, text=True,
                          capture_output=capture)
    if proc.returncode != 0:
        if capture:
            sys.stderr.write(proc.stderr)
        raise SeqlabError(f"{what}: dvc {' '.join(args)} failed (exit {proc.returncode}); nothing was pushed "
                          "or proposed")
    return proc.stdout if capture else ""


def imported_data(root: Path = ROOT) -> list[Path]:
    """The ``.dvc`` files of imported data (``dvc import-url``/``dvc import``: they have ``deps``),
    relative to ``root``; DVC's own folder and virtual environments are not searched."""
    found = []
    for path in sorted(root.rglob("*.dvc")):
        rel = path.relative_to(root)
        if rel.parts[0] in (".dvc", ".venv", ".git") or not path.is_file():
            continue
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise SeqlabError(f"{rel}: not a readable .dvc file ({e})") from None
        if isinstance(spec, dict) and spec.get("deps"):
            found.append(rel)
    return found


def _remotes() -> dict[str, str]:
    """The DVC remotes of the repository, name -> URL, from ``dvc config --list`` (one
    ``remote.NAME.url=URL`` line each; ``dvc remote list`` draws a table that wraps long URLs onto
    lines of their own when the output is narrow)."""
    listed = _dvc("config", "--list", what="reading the DVC config", capture=True)
    remotes = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.startswith("remote.") and key.endswith(".url"):
            remotes[key[len("remote."):-len(".url")]] = value.strip()
    return remotes


def check_remotes(remotes: dict[str, str]) -> None:
    """A remote on this machine's disk (a folder or ``file://``) must exist: ``dvc pull
    --allow-missing`` would read a mistyped folder as an empty remote and retrain everything, and
    ``dvc push`` would create it. (Cloud remotes answer for themselves in ``dvc pull``.)"""
    for name, url in remotes.items():
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme in ("", "file"):
            folder = Path(url[len("file://"):] if scheme else url).expanduser()
            folder = folder if folder.is_absolute() else ROOT / ".dvc" / folder   # DVC: relative to .dvc/
            if not folder.is_dir():
                raise SeqlabError(f"DVC remote {name!r}: the folder {folder} does not exist; create it, or fix the "
                                  "remote in .dvc/config (dvc remote modify)")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, text=True, capture_output=True).stdout


def review_markdown(comparison: dict, metrics_diff: str, base: str, hash_before: str | None,
                    changed: list[str], updated: list[str]) -> str:
    """The review of one retraining, as Markdown for a pull request body. ``hash_before``: the data
    hash the base revision's results were computed on (None: it holds none)."""
    stats = comparison["data"]
    if hash_before is None:
        data = f"the base revision `{base}` holds no results to compare with."
    elif hash_before == stats["data_hash"]:
        data = f"unchanged since `{base}`."
    else:
        data = f"**changed** since `{base}` (data hash `{hash_before}` there)"
        data += (" (imported data updated: " + ", ".join(f"`{u}`" for u in updated) + ")." if updated else ".")
    lines = ["# Retraining review", "",
             f"Data: `{stats['source']}` ({stats['tokenizer']} tokens, data hash `{stats['data_hash']}`): {data}", ""]
    if not changed:
        lines += ["Nothing changed against the base revision: nothing was retrained and there is nothing to "
                  "review.", ""]
    lines += ["## Promotion", "",
              "The gate compares each model's test bits per character with its `champion` of now (a version "
              "must be better by the stated margin; a data change is proposed and says so). Merging this change "
              "runs `make promote`, which moves `champion` to the versions marked *proposed*.", "",
              "| model | version | test bpc | champion | its test bpc | decision | reason |",
              "|---|---|---|---|---|---|---|"]
    for row in comparison["models"]:
        gate = row["gate"]
        decision = "champion" if gate["is_champion"] else ("**proposed**" if gate["accepted"] else "kept out")
        held = gate["holder_metric"]
        lines.append(f"| {row['model']} | {gate['version']} | {row['test_bpc']:.4f} | "
                     f"{gate['holder_version'] or '-'} | {'-' if held is None else f'{held:.4f}'} | {decision} | "
                     f"{gate['reason']} |")
    lines += ["", f"## Metrics against `{base}`", "", metrics_diff.strip() or "No metric changed.", ""]
    if changed:
        lines += ["Changed: " + ", ".join(f"`{c}`" for c in changed), ""]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from pipeline.io import read_json, write_text
    from pipeline.tracking.registry import assess
    from pipeline.tracking.store import check_store, public_uri

    ap = argparse.ArgumentParser(prog="python -m pipeline.retrain", description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD", help="the revision the review compares with (default: %(default)s, "
                                                   "the checked-out commit)")
    args = ap.parse_args(argv)
    check_store()
    print(f"tracking store {public_uri()}")
    before = json.loads(_git("show", f"{args.base}:{(PROVENANCE / (BASELINE + '.json')).as_posix()}") or "{}")
    remotes = _remotes()
    check_remotes(remotes)
    updated = []
    for target in imported_data():
        print(f"dvc update {target}")
        pointer = target.read_bytes()
        _dvc("update", str(target), what=f"bringing in the newest {target.with_suffix('')}")
        if target.read_bytes() != pointer:
            updated.append(str(target.with_suffix("")))
    remote = bool(remotes)
    if remote:
        _dvc("pull", "--run-cache", "--allow-missing", what="restoring what the remote holds")
    else:
        print("no DVC remote configured: every stage whose inputs changed since this checkout's dvc.lock runs")
    _dvc("repro", what="reproducing the pipeline")
    if remote:
        _dvc("push", "--run-cache", what="pushing the results to the DVC remote")
    comparison = read_json(REPORTS / "comparison.json")
    margin = load_params().mlflow.promotion_margin
    for row in comparison["models"]:      # the gate of now: the report may be restored from an earlier run
        row["gate"] = assess(row["registered_model"], str(row["version"]), margin=margin, run_id=row.get("run_id"))
    diff = _dvc("metrics", "diff", args.base, "--md", what="comparing the metrics with the base revision",
                capture=True)
    changed = [p for p in CHANGED_PATHS if _git("status", "--porcelain", "--", p).strip()]
    text = review_markdown(comparison, diff, args.base, before.get("data_hash"), changed, updated)
    write_text(ROOT / REVIEW, text)
    print(text)


if __name__ == "__main__":
    from pipeline.stage import run_stage
    run_stage(main, tracked=False)   # the store is checked inside, before anything runs
