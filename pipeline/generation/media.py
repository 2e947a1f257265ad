"""What a model of an image or a music corpus outputs besides text: one call for the stages.

``reports/media/<model>/`` (a DVC out of every corpus, empty for text) receives an image corpus's
PNG grids (:mod:`pipeline.generation.images`) or a music corpus's ABC and MIDI tunes
(:mod:`pipeline.generation.music`); their metrics join the model's and their section its samples file.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.generation.images import image_results
from pipeline.generation.music import music_results


def media_results(sampler, data, per_split: dict, g, folder: Path) -> tuple[dict, str, list[Path]]:
    """(metrics, samples-file section, files written) of ``data``'s kind: images, music or neither."""
    folder.mkdir(parents=True, exist_ok=True)
    pictures, picture_section, pngs = image_results(sampler, data, per_split, g.seed, folder)
    music, music_section, tunes = music_results(sampler, data.tokenizer, data, g, folder)
    return pictures | music, picture_section + music_section, pngs + tunes
