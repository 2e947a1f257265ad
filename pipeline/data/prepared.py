"""The prepared-data folder: token ids per split, the vocabulary, and corpus statistics.

``stats.json`` holds what every metric needs (characters per split for bits per character) and a
``data_hash`` over ids and vocabulary, recorded on MLflow runs and model versions so that the
promotion gate only compares models evaluated on the same data.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.data.splits import SPLITS
from pipeline.errors import SeqlabError
from pipeline.io import read_json
from pipeline.data.image_layout import layout_of
from pipeline.data.tokenizers import Tokenizer, load_tokenizer


@dataclass
class PreparedData:
    ids: dict[str, np.ndarray]
    tokenizer: Tokenizer
    stats: dict
    masks: dict[str, np.ndarray] = field(default_factory=dict)   # per split, with a loss mask (data.score_after)
    example_starts: dict[str, np.ndarray] = field(default_factory=dict)   # per split, in examples mode

    @property
    def data_hash(self) -> str:
        return self.stats["data_hash"]

    def mask(self, split: str) -> np.ndarray | None:
        """uint8 per token: 1 where the token is trained and scored; None when every token is."""
        return self.masks.get(split)

    def starts(self, split: str) -> np.ndarray | None:
        """int64 first token index of every example (``data.examples: lines``); None in stream mode."""
        return self.example_starts.get(split)

    @property
    def examples(self) -> str:
        """``lines`` (each line one example) or ``stream``."""
        return self.stats.get("examples", "stream")

    @property
    def boundary_id(self) -> int | None:
        """The token that ends an example (after which every model starts afresh); None in stream mode."""
        end = self.stats.get("example_end", -1)
        return int(end) if self.example_starts and end > 0 else None

    @property
    def marker_id(self) -> int | None:
        """The id of the tab that ends every source of paired data (``data.examples: pairs``), which
        the encoder-decoders are built with; None for other data."""
        if self.examples != "pairs":
            return None
        return int(self.tokenizer.tokens.index("\t"))

    @property
    def image(self):
        """The :class:`~pipeline.data.image_layout.ImageLayout` of an image corpus; None for text."""
        return layout_of(self.tokenizer)

    def chars(self, split: str) -> int:
        """Characters of the scored text of ``split`` (all of it without a loss mask): bits per character.
        An image corpus's are its pixels, so its bits per character are bits per dimension."""
        s = self.stats["splits"][split]
        return int(s["scored_chars"] if split in self.masks else s["chars"])


def data_hash(ids: dict[str, np.ndarray], tokenizer: Tokenizer) -> str:
    """sha256 over each split's name and int32 ids, then the vocabulary (16 hex digits); fed in
    pieces by :mod:`pipeline.data.prepare`, which hashes the ids as it writes them."""
    h = hashlib.sha256()
    for s in SPLITS:
        h.update(s.encode())
        h.update(np.ascontiguousarray(ids[s], dtype=np.int32).tobytes())
    return finish_hash(h, tokenizer)


def finish_hash(h, tokenizer: Tokenizer) -> str:
    h.update(repr(tokenizer.to_json()).encode())
    return h.hexdigest()[:16]


def load_prepared(folder: Path, mmap: bool = True) -> PreparedData:
    """The prepared folder; the ids memory-mapped (read-only, paged in as used) unless ``mmap`` is False."""
    folder = Path(folder)
    if not (folder / "stats.json").exists():
        raise SeqlabError(f"{folder}: no prepared data (run `dvc repro prepare` first)")
    mode = "r" if mmap else None
    ids = {s: np.load(folder / f"{s}.npy", allow_pickle=False, mmap_mode=mode) for s in SPLITS}
    stats = read_json(folder / "stats.json")
    masks = {s: np.load(folder / f"{s}_mask.npy", allow_pickle=False, mmap_mode=mode) for s in SPLITS
             if stats.get("score_after") or stats.get("loss_mask")}
    starts = {s: np.load(folder / f"{s}_starts.npy", allow_pickle=False, mmap_mode=mode) for s in SPLITS
              if stats.get("examples")}
    return PreparedData(ids, load_tokenizer(folder / "vocab.json"), stats, masks, starts)
