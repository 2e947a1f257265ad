"""The property report of the diagnose stage: its long CSV tables (DVC plots), figures and table.

Tables are long (an ``arch`` column), so DVC's plots overlay however many models params.yaml names.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from pipeline.io import atomic_write, write_text
from pipeline.scoring.diagnostics import THRESHOLD

CURVES_PNG, ATTENTION_PNG = "properties_curves.png", "properties_attention.png"   # in reports/
ALIGNMENT_PNG = "properties_alignment.png"     # in reports/: the encoder-decoders' attention over the source
TABLES = {   # file -> (columns, the curve of a model's measures it holds)
    "context.csv": ("arch", "context_tokens", "loss"),
    "order.csv": ("arch", "kept_tokens", "loss_increase"),
    "gradients.csv": ("arch", "distance", "grad_norm", "grad_norm_init"),
    "attention.csv": ("arch", "layer", "head", "mean_distance"),
}


def curve_rows(model: str, m: dict) -> dict[str, list[dict]]:
    """The rows of every table for one model's measures ``m`` (see stages/diagnose.py)."""
    rows = {
        "context.csv": [{"arch": model, "context_tokens": n, "loss": v} for n, v in zip(m["lengths"], m["losses"])],
        "order.csv": [{"arch": model, "kept_tokens": b, "loss_increase": v} for b, v in zip(m["keeps"], m["increases"])],
        "gradients.csv": [], "attention.csv": []}
    if m.get("grad") is not None:
        rows["gradients.csv"] = [{"arch": model, "distance": k, "grad_norm": g, "grad_norm_init": g0}
                                 for k, (g, g0) in enumerate(zip(m["grad"], m["grad_init"]))]
    for layer, heads in enumerate(m.get("attention_distance") or []):
        rows["attention.csv"] += [{"arch": model, "layer": layer, "head": h, "mean_distance": d}
                                  for h, d in enumerate(heads)]
    return rows


def write_tables(folder: Path, rows: dict[str, list[dict]]) -> None:
    for name, columns in TABLES.items():
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows.get(name, []))
        write_text(Path(folder) / name, buf.getvalue())


def _fmt(v, fmt):
    return "n/a" if v is None else fmt.format(v)


def _with_interval(s: dict, key: str) -> str:
    """``8 (4–16)``: the value and its bootstrap interval over the targets, where measured."""
    lo, hi = s.get(f"{key}_low"), s.get(f"{key}_high")
    return str(s[key]) if lo is None or hi is None else f"{s[key]} ({lo}–{hi})"


def properties_markdown(summaries: dict[str, dict], bpc: dict[str, float], threshold: float = THRESHOLD,
                        figures: tuple[str, ...] = (CURVES_PNG, ATTENTION_PNG, ALIGNMENT_PNG),
                        row_width: int | None = None) -> str:
    """The property table: one row per model, the measured numbers, then the figures; on an image
    corpus (``row_width``) the tokens are pixels, and the text says what the contexts were."""
    head = ("| model | valid bpc | full context | effective context | order matters up to | "
            "gradient decay / token | gradient half-life | half-life at init | mean attention distance |")
    lines = ["# How each model uses its context", "",
             f"Measured on the same {next(iter(summaries.values()))['targets']} validation targets for every model "
             f"(README, Diagnostics). Effective context: the smallest n whose loss, seeing only the last n tokens, "
             f"is within {threshold:.0%} of the full-context loss. Order matters up to b: shuffling the tokens "
             f"older than the last b raises the loss by less than {threshold:.0%} for every b' >= b. Gradient decay: "
             "the fitted rate λ of ‖∂ℓ_T/∂e_(T−k)‖ ∝ exp(−λk), in nats per token (half-life ln 2 / λ tokens). "
             "Contexts and distances are in tokens; n/a where a measure does not apply. In brackets: the "
             f"{int(round(100 * next(iter(summaries.values())).get('interval', 0.9)))}% bootstrap interval over "
             "the targets (resampled with replacement), which says how far a larger sample could move the number.", ""]
    if row_width is not None:
        lines += [f"An image corpus: every token is a pixel, and every context is the target's image from its "
                  f"start, the pixels older than the last n blanked (shuffled, for the order); the pixel above is "
                  f"{row_width} pixels back (the dotted lines of the figure).", ""]
    lines += [head.replace("valid bpc", "valid bits/dim") if row_width else head, "|" + "---|" * head.count(" | ") + "---|"]
    for model, s in summaries.items():
        lines.append("| " + " | ".join([
            model, _fmt(bpc.get(model), "{:.4f}"), str(s["full_context_tokens"]),
            _with_interval(s, "effective_context_tokens"), _with_interval(s, "order_sensitivity_tokens"),
            _fmt(s["gradient_decay_per_token"], "{:.4f}"),
            _fmt(s["gradient_half_life_tokens"], "{:.1f}"), _fmt(s["gradient_half_life_tokens_init"], "{:.1f}"),
            _fmt(s["attention_mean_distance_tokens"], "{:.1f}")]) + " |")
    for model, s in summaries.items():
        heads = {k: v for k, v in s.items() if k.startswith("attention_distance_layer")}
        if heads:
            layers = sorted({int(k.split("layer")[1].split("_")[0]) for k in heads})
            count = len(heads) // len(layers)
            lines += ["", f"Mean attention distance of {model} (tokens), per layer and head:", "",
                      "| layer | " + " | ".join(f"head {h}" for h in range(count)) + " |",
                      "|" + "---|" * (count + 1)]
            lines += [f"| {i} | " + " | ".join(f"{heads[f'attention_distance_layer{i}_head{h}']:.1f}"
                                             for h in range(count)) + " |" for i in layers]
    lines += [""] + [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    atomic_write(path, lambda t: fig.savefig(t, format="png", dpi=100))
    plt.close(fig)


SYMBOL = {"context.csv": "n", "order.csv": "b", "gradients.csv": "k"}    # each panel's x


def plot_curves(path: Path, rows: dict[str, list[dict]], row_width: int | None = None) -> None:
    """Context benefit, order sensitivity and gradient flow, one panel each, every model overlaid;
    on an image corpus (``row_width``) counted in pixels, a dotted line where the pixel above enters."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    panels = (("context.csv", "context_tokens", ("loss",), "tokens seen (n)", "validation loss (nats)"),
              ("order.csv", "kept_tokens", ("loss_increase",), "tokens kept in order (b)", "loss increase (nats)"),
              ("gradients.csv", "distance", ("grad_norm", "grad_norm_init"), "distance k (tokens)",
               "‖∂ℓ_T/∂e_(T−k)‖ (dashed: at initialisation)"))
    colour = {model: f"C{i}" for i, model in enumerate(dict.fromkeys(r["arch"] for r in rows["context.csv"]))}
    for ax, (name, x, ys, xlabel, ylabel) in zip(axes, panels):
        for model in dict.fromkeys(r["arch"] for r in rows[name]):
            pts = [r for r in rows[name] if r["arch"] == model]
            for y, style in zip(ys, ("-", "--")):
                vals = [(r[x], r[y]) for r in pts if name != "gradients.csv" or r[y] > 0]
                ax.plot(*zip(*vals), style, color=colour[model], marker="o" if style == "-" and name != "gradients.csv"
                        else None, markersize=3, label=model if style == "-" else None)
        ax.set_xscale("symlog" if name == "order.csv" else "log", base=2)
        if name == "gradients.csv":
            ax.set_xscale("linear")
            ax.set_yscale("log")
        if row_width is not None:
            xlabel = xlabel.replace("tokens", "pixels")
            above = row_width - 1 if name == "gradients.csv" else row_width     # k counts from the pixel before
            ax.axvline(above, color="grey", linestyle=":", label=f"the pixel above ({SYMBOL[name]} = {above})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend()
    _save(fig, path)


def plot_attention(path: Path, models: list[tuple[str, list]]) -> None:
    """Heat maps of one validation window of the first model with attention: a row per layer, a
    column per head (a figure saying so when no model has attention)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not models:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no model has attention layers", ha="center", va="center")
        _save(fig, path)
        return
    model, maps = models[0]
    layers, heads = len(maps), maps[0].shape[0]
    fig, axes = plt.subplots(layers, heads, figsize=(2.6 * heads, 2.6 * layers), squeeze=False)
    for i, m in enumerate(maps):
        for h in range(heads):
            axes[i][h].imshow(m[h], cmap="viridis", vmin=0, vmax=max(float(m[h].max()), 1e-9))
            axes[i][h].set_title(f"{model} layer {i} head {h}", fontsize=8)
            axes[i][h].set_xticks([])
            axes[i][h].set_yticks([])
    _save(fig, path)


def _label(token: str) -> str:
    return {"\n": "⏎", "\t": "⇥", " ": "␣"}.get(token, token)


def plot_alignment(path: Path, examples: list[tuple[list[str], list[str]]], models: list[tuple[str, list]]) -> None:
    """The alignment picture of the lectures (Bahdanau et al. 2015, figure 3): for each
    encoder-decoder (a row) and test example (a column), the attention of each target token's
    prediction (rows of the map) over the source tokens (columns), the reference target given.
    ``examples``: (source tokens, target tokens) each; ``models``: (name, one map per example).
    A figure saying so when no model has an encoder."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not models or not examples:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no encoder-decoder (paired data only)", ha="center", va="center")
        _save(fig, path)
        return
    cols = len(examples)
    fig, axes = plt.subplots(len(models), cols, figsize=(3.6 * cols, 3.2 * len(models)), squeeze=False)
    for r, (model, maps) in enumerate(models):
        for c, ((source, target), weights) in enumerate(zip(examples, maps)):
            ax = axes[r][c]
            ax.imshow(weights, cmap="gray_r", vmin=0, vmax=1, aspect="auto")
            ax.set_xticks(range(len(source)), [_label(t) for t in source], fontsize=7)
            ax.set_yticks(range(len(target)), [_label(t) for t in target], fontsize=7)
            ax.set_title(model, fontsize=8)
            ax.set_xlabel("source", fontsize=7)
            ax.set_ylabel("target (predicted)", fontsize=7)
    _save(fig, path)
