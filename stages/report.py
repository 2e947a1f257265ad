"""DVC stage: comparison table and figure, the property table, and the gate's proposal for every model.

The gate only proposes here (alias ``challenger``): ``dvc repro`` of a branch nobody has reviewed
must not move ``champion``; ``make promote`` (:mod:`pipeline.promote`) does, once accepted."""
import math

from pipeline.config.params import load_params
from pipeline.io import read_json, write_json, write_text
from pipeline.paths import DIAGNOSTICS, METRICS, PLOTS, PREPARED, PROVENANCE, REPORTS
from pipeline.properties import properties_markdown
from pipeline.reporting import comparison_markdown, gate_verdict, plot_learning_curves, read_history_csv, write_curves_csv
from pipeline.stage import run_stage
from pipeline.tracking.registry import propose
from pipeline.tracking.runs import model_run


def main(argv: list[str]) -> None:
    p = load_params()
    stats = read_json(PREPARED / "stats.json")
    rows = []
    for model in p.compared_models:
        m = read_json(METRICS / f"{model}.json") | read_json(PROVENANCE / f"{model}.json")
        gate = propose(m["registered_model"], str(m["version"]), metric="test_bpc",
                       margin=p.mlflow.promotion_margin, run_id=m.get("run_id"))
        rows.append({"model": model} | m | {"champion": gate_verdict(gate), "promotion": gate})
    histories = {arch: read_history_csv(PLOTS / arch / "history.csv") for arch in p.models}
    rows.sort(key=lambda r: r["test_bpc"])
    # a model trained without steps (the n-gram) is drawn as a line at its validation loss
    flat = {r["model"]: r["valid_nll"] / math.log(2) for r in rows if r["model"] not in histories}
    table = comparison_markdown(rows, stats)
    diagnostics = {r["model"]: read_json(DIAGNOSTICS / f"{r['model']}.json") for r in rows}
    image = stats.get("image")
    properties = properties_markdown(diagnostics, {r["model"]: r["valid_bpc"] for r in rows},
                                     row_width=image["width"] if image else None)
    write_json(REPORTS / "comparison.json", {"data": stats, "models": rows})
    write_text(REPORTS / "comparison.md", table)
    write_text(REPORTS / "properties.md", properties)
    write_curves_csv(REPORTS / "learning_curves.csv", histories)
    plot_learning_curves(REPORTS / "learning_curves.png", histories, flat)
    print(table)
    print(properties)
    with model_run(p.mlflow.experiment, "report", "report", stats["data_hash"]) as run:
        for name in ("comparison.md", "comparison.json", "learning_curves.csv", "learning_curves.png", "properties.md"):
            run.log_artifact(REPORTS / name)


if __name__ == "__main__":
    run_stage(main)
