"""An image corpus to the prepared folder: pixel tokens, one image per example, and the baseline.

The folder is the one a text corpus gets (ids, example starts, a loss mask, ``vocab.json``,
``stats.json``), in examples mode with the mask on the pixels (:mod:`pipeline.data.image_layout`),
so that every model, the n-gram included, trains and scores images unchanged; ``stats.json`` adds
the layout and the independent-pixel baseline (:func:`pixel_baseline`). Written into a temporary
sibling folder that replaces the old one at the end: never a half-written folder.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipeline.data.image_layout import END_ID, PIXELS, ImageLayout
from pipeline.data.images import load_images, quantise, shuffled_splits
from pipeline.data.prepared import finish_hash
from pipeline.data.tokenizers import Tokenizer
from pipeline.errors import SeqlabError
from pipeline.io import replaced_folder, write_json

BASELINE_ALPHA = 0.5     # the independent-pixel baseline's add-alpha smoothing (Krichevsky-Trofimov)


def pixel_baseline(train: np.ndarray, splits: dict[str, np.ndarray], levels: int) -> dict[str, float]:
    """Bits per dimension of independent per-pixel intensities, each pixel's level frequencies
    counted on train (add-:data:`BASELINE_ALPHA`), on every split: what a model gains over it is
    what it learns from the other pixels."""
    n, h, w = train.shape
    counts = np.zeros((h * w, levels), np.float64)
    np.add.at(counts, (np.tile(np.arange(h * w), n), train.reshape(-1).astype(np.int64)), 1.0)
    logp = np.log2((counts + BASELINE_ALPHA) / (n + BASELINE_ALPHA * levels))
    out = {}
    for name, images in splits.items():
        flat = images.reshape(len(images), -1).astype(np.int64)
        out[f"{name}_bpd"] = float(-logp[np.arange(h * w)[None, :], flat].mean())
    return out


def prepare_images(spec: str, out_dir: Path, *, levels: int | None = None, labels: bool = False,
                   split=(0.9, 0.05, 0.05), root: Path = Path(".")) -> dict:
    """Read ``spec``'s images and write the prepared folder (ids, example starts, pixel mask,
    vocabulary, stats with the image layout and the independent-pixel baseline); returns the stats."""
    s, levels = load_images(spec, root, levels)
    if levels < 2:
        raise SeqlabError(f"data.levels: {levels}; expected at least 2")
    if labels and s.labels is None:
        raise SeqlabError(f"data.labels: {spec} has no class labels (a folder needs one subfolder per class, "
                          "an .npz a 'labels' array); set data.labels: false")
    images = quantise(s.images, s.native_levels, levels)
    layout = ImageLayout(images.shape[1], images.shape[2], levels, s.label_names if labels else ())
    parts = shuffled_splits(s.keys, list(split), spec)
    tokenizer = Tokenizer(PIXELS, layout.tokens(), layout.options())
    with replaced_folder(out_dir) as tmp:
        h = hashlib.sha256()
        split_stats = {}
        for name, idx in parts.items():
            ids = layout.example_ids(images[idx], s.labels[idx] if labels else None)
            mask = layout.example_mask(len(idx))
            starts = np.arange(len(idx), dtype=np.int64) * layout.example_tokens
            for suffix, array in (("", ids), ("_mask", mask), ("_starts", starts)):
                np.save(tmp / f"{name}{suffix}.npy", array, allow_pickle=False)
            h.update(name.encode())
            h.update(ids.tobytes())
            h.update(mask.tobytes())
            pixels = len(idx) * layout.pixels
            split_stats[name] = {"tokens": int(ids.size), "unk_tokens": 0, "lines": len(idx), "examples": len(idx),
                                 "images": len(idx), "chars": pixels, "scored_tokens": pixels, "scored_chars": pixels}
        tokenizer.save(tmp / "vocab.json")
        h.update(b"examples=lines")
        baseline = pixel_baseline(images[parts["train"]], {k: images[v] for k, v in parts.items()}, levels)
        stats = {"source": spec, "tokenizer": PIXELS, "vocab_size": tokenizer.vocab_size, "splits": split_stats,
                 "cleaning": {}, "data_hash": finish_hash(h, tokenizer), "examples": "lines",
                 "example_end": END_ID, "loss_mask": PIXELS, "image": layout.options() | {"baseline": baseline}}
        write_json(tmp / "stats.json", stats)
    return stats
