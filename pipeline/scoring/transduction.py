"""Transduction measured: every test source of a paired corpus decoded, its output scored against
all of its references.

Perplexity says how likely a model finds the reference targets; a user of a transducer asks what it
outputs. Every model (the n-gram and every network, prefix models of the same examples) decodes
``source<TAB>`` greedily up to the example's end (its line end), and the outputs are scored:

- ``exact_match``: the fraction of sources whose output equals one of their references (cmudict
  lists several pronunciations of a word: every one is a reference); 1 - exact match is the word
  error rate of grapheme-to-phoneme work;
- ``cer`` and ``ter``: character and token (whitespace-separated: phonemes, words) edit distance
  to the closest reference over that reference's length, summed over the sources;
- ``chrf`` and ``bleu``: sacreBLEU's corpus chrF and BLEU (its default settings, every reference).

The sources and references are read back from the prepared test split, as the tokenizer reads
them (lowercased with ``data.lowercase``; a character never seen in training reads ``<unk>``),
the form a model can output.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.data.examples import example_spans
from pipeline.data.pairs import SEPARATOR, split_pair
from pipeline.generation.text import transduce

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


def transduction_table(sources: list[str], outputs: list[str], refs: list[list[str]],
                       rows: int = TABLE_ROWS) -> str:
    """Markdown: the first ``rows`` sources, each with its output, its references and whether it matched."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\t", " ") or " "
    lines = ["| source | output | references | match |", "|---|---|---|---|"]
    for s, o, rs in list(zip(sources, outputs, refs))[:rows]:
        lines.append(f"| {cell(s)} | {cell(o)} | {' / '.join(cell(r) for r in rs)} | {'yes' if o in rs else 'no'} |")
    return "\n".join(lines) + "\n"


def measure_transduction(sampler, data, max_tokens: int, batch_size: int) -> tuple[dict, str]:
    """Decode every test source of prepared paired ``data`` with ``sampler`` (any model's, see
    :mod:`pipeline.saved`): the ``test_*`` metrics and the table of the first sources."""
    sources, refs = split_references(data.ids["test"], data.starts("test"), data.tokenizer)
    outputs = transduce(sampler, data.tokenizer, sources, SEPARATOR, "\n", max_tokens, batch_size)
    metrics = {f"test_{k}": v for k, v in transduction_metrics(outputs, refs).items()}
    return metrics, transduction_table(sources, outputs, refs)
