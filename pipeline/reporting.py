"""Human-readable outputs: learning-curve CSVs, sample files, the comparison table and figure."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from pipeline.io import atomic_write, write_text

# one row per epoch; `tokens_seen` and `train_seconds` (time in training steps so far) are the x axes
# of the learning-curve plots besides `step`
HISTORY_COLUMNS = ("epoch", "step", "tokens_seen", "train_seconds", "train_loss", "valid_loss",
                   "valid_bits_per_token", "learning_rate", "seconds", "tokens_per_second")


def write_history_csv(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    write_text(path, buf.getvalue())


def read_history_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except FileNotFoundError:
        from pipeline.errors import SeqlabError
        raise SeqlabError(f"{path}: not found (run the stage that produces it first: dvc repro)") from None


CURVE_COLUMNS = ("arch", "epoch", "step", "tokens_seen", "train_seconds", "train_loss", "valid_loss")


def write_curves_csv(path: Path, histories: dict[str, list[dict]]) -> None:
    """Every architecture's learning curve in one long table (an ``arch`` column), so that DVC's
    top-level plots overlay however many architectures params.yaml names."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for arch, hist in histories.items():
        w.writerows({"arch": arch, **row} for row in hist)
    write_text(path, buf.getvalue())


def format_samples(model: str, samples: list[tuple[str, str]], g) -> str:
    head = (f"# {model}: {len(samples)} samples, max_tokens={g.max_tokens}, temperature={g.temperature}, "
            f"top_k={g.top_k}, top_p={g.top_p}, seed={g.seed} + prompt index\n")
    return head + "".join(f"\n=== prompt: {prompt!r}\n{prompt}{text}\n" for prompt, text in samples)


def transduction_section(metrics: dict, table: str) -> str:
    """The samples file's part for a paired corpus: the test transduction metrics (greedy, and the
    beam's where there is one) and the first sources with their outputs and references."""
    def head(prefix):
        return ", ".join(f"{label} {metrics[prefix + k.removeprefix('test_')]:.4g}"
                         for k, label, _ in TRANSDUCTION_COLUMNS if prefix + k.removeprefix("test_") in metrics)
    text = (f"\n=== transduction: every test source decoded up to its line end ({metrics['test_sources']} "
            f"sources)\ngreedy: {head('test_')}\n")
    if "test_beam_width" in metrics:
        text += f"beam ({metrics['test_beam_width']}): {head('test_beam_')}\n"
    return text + f"\n{table}"


# paired corpora (data.examples: pairs): what the outputs score on the test sources, greedy then beam
TRANSDUCTION_COLUMNS = (("test_exact_match", "exact match", "{:.4f}"), ("test_cer", "CER", "{:.4f}"),
                        ("test_ter", "token ER", "{:.4f}"), ("test_chrf", "chrF", "{:.1f}"),
                        ("test_bleu", "BLEU", "{:.1f}"))
BEAM_COLUMNS = (("test_beam_exact_match", "beam exact match", "{:.4f}"), ("test_beam_ter", "beam token ER", "{:.4f}"))

COLUMNS = (("model", "model", "{}"), ("family", "family", "{}"), ("parameters", "params", "{:,}"),
           ("train_seconds", "train s", "{:.1f}"), ("train_tokens_per_second", "tokens/s", "{:,.0f}"),
           ("valid_ppl", "valid ppl", "{:.3f}"), ("valid_bpc", "valid bpc", "{:.4f}"),
           ("test_ppl", "test ppl", "{:.3f}"), ("test_bpc", "test bpc", "{:.4f}"), ("champion", "champion", "{}"))


# image corpora: bits per dimension and nats per image instead of perplexity and bits per character
IMAGE_COLUMNS = (("valid_bpd", "valid bits/dim", "{:.4f}"), ("test_bpd", "test bits/dim", "{:.4f}"),
                 ("test_nats_per_image", "test nats/image", "{:.2f}"))

# music corpora (pipeline.generation.music): the fraction of sampled tunes that music21 parses
MUSIC_COLUMNS = (("sample_parse_rate", "tunes that parse", "{:.0%}"), ("sample_midi_rate", "to MIDI", "{:.0%}"))


def gate_verdict(gate: dict) -> str:
    """The champion column of a model: ``yes`` (it is the champion), ``proposed (why)`` (it is the
    challenger that accepting this change promotes) or ``no (why)``."""
    if gate["is_champion"]:
        return "yes"
    return f"{'proposed' if gate['accepted'] else 'no'} ({gate['reason']})"


def comparison_markdown(rows: list[dict], stats: dict) -> str:
    def cell(row, key, fmt):
        v = row.get(key)
        return "" if v is None else fmt.format(v)
    image = stats.get("image")
    if image:
        columns = COLUMNS[:5] + IMAGE_COLUMNS + COLUMNS[-1:]
    elif any("sample_parse_rate" in r for r in rows):
        columns = COLUMNS[:-1] + MUSIC_COLUMNS + COLUMNS[-1:]
    elif any("test_exact_match" in r for r in rows):
        columns = COLUMNS[:-1] + TRANSDUCTION_COLUMNS + BEAM_COLUMNS + COLUMNS[-1:]
    else:
        columns = COLUMNS
    lines = [f"# Model comparison on {stats['source']} ({stats['tokenizer']} tokens, vocabulary "
             f"{stats['vocab_size']}, data {stats['data_hash']})", ""]
    if image:
        base, pixels = image["baseline"], image["height"] * image["width"]
        lines += [f"{image['height']}x{image['width']} images, {image['levels']} levels, one image per example"
                  + (", conditioned on its class" if image["labels"] else "") + "; every pixel of each split is "
                  "scored under one protocol (see README, Metrics); rows are sorted by test bits per dimension. "
                  f"Independent per-pixel intensities (counted on train): valid {base['valid_bpd']:.4f}, test "
                  f"{base['test_bpd']:.4f} bits/dim ({base['test_bpd'] * math.log(2) * pixels:.2f} nats/image).", ""]
    else:
        lines += ["All models score every token of each split under one protocol (see README, Metrics); "
                  "rows are sorted by test bits per character.", ""]
    lines += ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(cell(row, k, f) for k, _, f in columns) + " |")
    return "\n".join(lines) + "\n"


def plot_learning_curves(path: Path, histories: dict[str, list[dict]], flat: dict[str, float]) -> None:
    """Validation bits per token by training step of every trained network (``histories``), and a
    dashed line per model trained without steps (``flat``: its validation bits per token)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for arch, hist in sorted(histories.items()):
        ax.plot([h["step"] for h in hist], [h["valid_bits_per_token"] for h in hist], marker="o", label=arch)
    for model, bpt in sorted(flat.items()):
        ax.axhline(bpt, color="grey", linestyle="--", label=f"{model} (valid)")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation bits per token")
    ax.set_title("Learning curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda t: fig.savefig(t, format="png", dpi=110))
    plt.close(fig)
