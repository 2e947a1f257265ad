"""Music out: tunes sampled from a model of an ABC corpus, checked by music21 and exported.

The lectures' music lab, measured: :data:`TUNES` tunes are drawn (each from ``<bos>``, up to its
line end, with the ``generate`` settings and seeds ``seed + i``), turned back into ABC
(``pipeline.data.builtin_music.tune_abc``), and the fraction that music21 parses to a score with
notes is the ``sample_parse_rate`` metric. Every tune is written as ``tune_NN.abc`` and, when it
parses, ``tune_NN.mid``; music21 parses leniently (it skips what it cannot read), and its MIDI
export is stricter, so the fraction written as MIDI is a second metric, ``sample_midi_rate``. A corpus is music when its builtin says so (``Builtin.notation``, recorded
by ``prepare`` in stats.json as ``notation``).
"""
from __future__ import annotations

from pathlib import Path

from pipeline.generation.text import generate_texts

TUNES = 20
ABC = "abc"


def music_results(sampler, tokenizer, data, g, folder: Path) -> tuple[dict, str, list[Path]]:
    """(metrics, the samples file's section, the files written) of an ABC corpus; ({}, "", []) otherwise."""
    if data.stats.get("notation") != ABC:
        return {}, "", []
    from pipeline.data.builtin_music import parses, write_tune
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": "", "max_tokens": g.max_tokens, "temperature": g.temperature, "top_k": g.top_k,
             "top_p": g.top_p, "seed": g.seed + i, "stop": "\n"} for i in range(TUNES)]
    tunes = generate_texts(sampler, tokenizer, rows)
    ok = [parses(t) for t in tunes]
    files = [f for i, t in enumerate(tunes) for f in write_tune(t, folder / f"tune_{i:02d}")]
    rate, midi = sum(ok) / len(tunes), sum(f.suffix == ".mid" for f in files)
    section = (f"\n=== music: {TUNES} tunes sampled from <bos> (temperature {g.temperature}, top_k {g.top_k}, "
               f"top_p {g.top_p}, up to {g.max_tokens} tokens, seeds {g.seed}..{g.seed + TUNES - 1}); "
               f"{sum(ok)} of {TUNES} parse with music21 ({rate:.0%}), {midi} export to MIDI; ABC and MIDI in {folder}\n"
               + "".join(f"\n[{'parses' if k else 'does not parse'}] {t}\n" for t, k in zip(tunes[:5], ok)))
    return {"sample_parse_rate": rate, "sample_midi_rate": midi / len(tunes)}, section, files
