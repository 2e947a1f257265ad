"""DVC stage: fingerprint the corpus -> data/corpus.json, rewritten only when its content changed.

``data.corpus`` names the corpus by a parameter (a builtin, an URL, a path), which DVC cannot watch
as a dependency; this stage runs at every ``dvc repro`` (``always_changed``), hashes the content
(files already hashed are skipped when their size and mtime are unchanged) and leaves
``data/corpus.json`` byte-identical when nothing changed, so ``prepare`` reruns exactly when the
text did. Being first at every repro, it also validates each model entry against its family, so a
mistyped model parameter stops the run before any data is prepared, and it starts the id that the
MLflow runs of this repro share (:mod:`pipeline.repro`).
"""
import json

from pipeline.config.params import load_params
from pipeline.data.corpus import fingerprint
from pipeline.errors import SeqlabError
from pipeline.models.catalog import model_configs
from pipeline.io import read_json, write_json
from pipeline.paths import CORPUS_FINGERPRINT, CORPUS_STAT_CACHE, ROOT
from pipeline.repro import begin
from pipeline.stage import run_stage


def main(argv: list[str]) -> None:
    p = load_params()
    model_configs(p)
    d = p.data
    try:
        stats = read_json(CORPUS_STAT_CACHE)
    except (SeqlabError, ValueError):     # none yet, or unreadable: hash everything again
        stats = {}
    found = fingerprint(d.corpus, d.sha256, ROOT, stats)
    write_json(CORPUS_FINGERPRINT, found)
    write_json(CORPUS_STAT_CACHE, stats)
    print(f"corpus {d.corpus}: " + json.dumps(found["files"]) + f"; repro {begin()}")


if __name__ == "__main__":
    run_stage(main, tracked=False)
