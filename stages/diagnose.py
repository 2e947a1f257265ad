"""DVC stage: how every model uses its context -> metrics/diagnostics/, plots/diagnostics/, the figures.

One process loads every network in turn (one TensorFlow start-up for all); every measure runs on
the same sample of validation targets for every model, the n-gram included where it applies. The
report stage turns metrics/diagnostics/ into the table of reports/properties.md.
"""
import numpy as np

from pipeline.config.params import load_params
from pipeline.data.prepared import load_prepared
from pipeline.data.windows import BosStream
from pipeline.errors import SeqlabError
from pipeline.io import read_json, write_json
from pipeline.paths import DIAGNOSTICS, MODELS, PLOTS, PREPARED, PROVENANCE, REPORTS
from pipeline.data.examples import example_spans
from pipeline.data.vocab_layout import BOS_ID
from pipeline.properties import (ALIGNMENT_PNG, ATTENTION_PNG, CURVES_PNG, curve_rows, plot_alignment, plot_attention,
                                 plot_curves, write_tables)
from pipeline.saved import load_saved
from pipeline.data.image_layout import LEVEL_OFFSET
from pipeline.scoring.diagnostics import ImageContexts, fit_decay, measure_context, sample_targets, windows
from pipeline.stage import run_stage
from pipeline.tracking.runs import model_run

ALIGNED_EXAMPLES = 3     # test examples drawn in the alignment figure


def diagnose(folder, p, stream, targets, examples, image: ImageContexts | None = None) -> dict:
    """Every measure of one saved model: its use of context, then its probes (where they apply),
    and its alignments on ``examples`` (encoder-decoders). On an image corpus every model is
    measured on whole images up to the target, up to all its pixels."""
    saved = load_saved(folder)
    if image is None:
        cap, order_width = saved.context_limits(p.diagnose.max_context)
        probe_ctx, probe_y = windows(stream, targets, cap), stream[targets].astype(np.int32)
    else:
        cap = order_width = image_cap(p, image)
        probe_ctx, probe_y = image_probes(stream, image)
    m = measure_context(saved.context_scorer(), stream, targets, cap, p.diagnose.seed, order_width=order_width,
                        image=image)
    return m | saved.probes(probe_ctx, probe_y, p.seed) | {"alignment": saved.alignments(examples)}


def image_view(data, targets: np.ndarray) -> ImageContexts | None:
    """Where each target's image starts, for an image corpus (None for text)."""
    layout = data.image
    if layout is None:
        return None
    starts = np.asarray(data.starts("valid"), np.int64)
    origins = starts[np.searchsorted(starts, targets - 1, side="right") - 1]
    return ImageContexts(origins, layout.prefix, LEVEL_OFFSET, layout.width, layout.pixels)


def image_cap(p, image: ImageContexts) -> int:
    """The most pixels a context curve keeps: the whole image before the last pixel, or less."""
    return int(min(p.diagnose.max_context, image.max_pixels))


def image_probes(stream, image: ImageContexts) -> tuple[np.ndarray, np.ndarray]:
    """Gradient probes of an image corpus: in each sampled image, the middle pixel of the last row,
    its context the image from ``<bos>`` (one width for every row: distance k = W - 1 is the pixel above)."""
    at = image.prefix + image.max_pixels - image.width // 2       # stream offset of the probed pixel
    origins = np.unique(image.origins)
    return (np.stack([stream[o:o + at] for o in origins.tolist()]).astype(np.int32),
            np.asarray(stream[origins + at], np.int32))


def alignment_examples(data, count: int = ALIGNED_EXAMPLES) -> list[np.ndarray]:
    """The first ``count`` test examples of paired data, each ``<bos>`` + its ids; [] for other data."""
    if data.marker_id is None:
        return []
    ids, spans = data.ids["test"], example_spans(data.starts("test"), len(data.ids["test"]))
    return [np.concatenate([[BOS_ID], np.asarray(ids[a:e])]) for (a, e), _ in zip(spans, range(count))]


def token_labels(tokenizer, ids: np.ndarray, marker_id: int) -> tuple[list[str], list[str]]:
    """(source tokens from <bos>, predicted target tokens) of one example: the alignment's axes."""
    marker = int(np.flatnonzero(ids == marker_id)[0])
    return [tokenizer.tokens[int(i)] for i in ids[:marker]], [tokenizer.tokens[int(i)] for i in ids[marker + 1:]]


PER_HEAD = "attention_distance_layer"   # attention_distance_layer<i>_head<h>: one number per head


def summarise(m: dict) -> dict:
    """The numbers of metrics/diagnostics/<model>.json (None where a measure does not apply)."""
    rate, half = fit_decay(m["grad"]) if m.get("grad") is not None else (None, None)
    rate0, half0 = fit_decay(m["grad_init"]) if m.get("grad_init") is not None else (None, None)
    dist = m.get("attention_distance")
    per_head = {f"{PER_HEAD}{i}_head{h}": d for i, heads in enumerate(dist or []) for h, d in enumerate(heads)}
    return m["summary"] | {"gradient_decay_per_token": rate, "gradient_half_life_tokens": half,
                           "gradient_decay_per_token_init": rate0, "gradient_half_life_tokens_init": half0,
                           "attention_mean_distance_tokens": float(np.mean(dist)) if dist else None} | per_head


def main(argv: list[str]) -> None:
    p = load_params()
    data = load_prepared(PREPARED)
    stream = BosStream(data.ids["valid"], data.starts("valid"))
    if len(stream) <= p.diagnose.max_context:
        raise SeqlabError(f"diagnose.max_context: {p.diagnose.max_context} tokens of context need a longer "
                          f"validation split than its {len(stream) - 1} tokens; lower diagnose.max_context")
    # an image's targets: any pixel below the first row (its context is the image so far)
    before = p.diagnose.max_context if data.image is None else data.image.prefix + data.image.width
    targets = sample_targets(len(stream), before, p.diagnose.targets, p.diagnose.seed,
                             data.mask("valid"), data.starts("valid"))
    if not len(targets):
        within = " within its example" if data.starts("valid") is not None else ""
        raise SeqlabError(f"diagnose: no scored validation target has diagnose.max_context={p.diagnose.max_context} "
                          f"tokens before it{within}; lower diagnose.max_context")
    measures, examples, image = {}, alignment_examples(data), image_view(data, targets)
    for model in p.compared_models:
        measures[model] = diagnose(MODELS / model, p, stream, targets, examples, image)
        print(f"diagnose {model}: done")
    summaries = {model: summarise(m) for model, m in measures.items()}
    rows = {}
    for model, m in measures.items():
        for name, part in curve_rows(model, m).items():
            rows.setdefault(name, []).extend(part)
    for model, s in summaries.items():
        write_json(DIAGNOSTICS / f"{model}.json", s)
    write_tables(PLOTS / "diagnostics", rows)
    plot_curves(REPORTS / CURVES_PNG, rows, row_width=None if image is None else image.width)
    plot_attention(REPORTS / ATTENTION_PNG, [(model, m["attention_window"]) for model, m in measures.items()
                                            if m.get("attention_window")])
    aligned = [(model, m["alignment"]) for model, m in measures.items() if m["alignment"]]
    plot_alignment(REPORTS / ALIGNMENT_PNG, [token_labels(data.tokenizer, e, data.marker_id) for e in examples], aligned)
    print("\n".join(f"{model}: {s}" for model, s in summaries.items()))
    for model, s in summaries.items():
        provenance = read_json(PROVENANCE / f"{model}.json")
        with model_run(p.mlflow.experiment, model, "diagnose", data.data_hash, run_id=provenance["run_id"]) as run:
            # one number per head is a table (plots/diagnostics/attention.csv), not dozens of charts
            run.log_metrics({f"diagnose_{k}": v for k, v in s.items() if not k.startswith(PER_HEAD)})
            run.log_artifact(DIAGNOSTICS / f"{model}.json", "diagnose")
            if measures[model].get("attention_distance"):
                run.log_artifact(PLOTS / "diagnostics" / "attention.csv", "diagnose")
            run.log_artifact(REPORTS / CURVES_PNG, "diagnose")
            if measures[model]["alignment"]:
                run.log_artifact(REPORTS / ALIGNMENT_PNG, "diagnose")


if __name__ == "__main__":
    run_stage(main)
