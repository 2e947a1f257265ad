"""How an image is a sequence of tokens: the one layout every part of seqlab reads (no Keras, no I/O).

An image of ``height`` x ``width`` pixels with ``levels`` intensity levels is one example: its
pixels in raster order (row by row, left to right), one token per pixel, then the end-of-image
token. With class labels the example starts with the label's token and the separator, so a model
learns p(image | class) (the lectures' one-to-many case) and a prompt of ``[<bos>, label, sep]``
draws an image of that class. The ids are fixed by the layout, not learned from the data, so a
level or a class that the train split never shows still has its token:

    0 <bos> · 1 <unk> · 2 end of image · 3 separator · 4 .. 4+levels-1 the levels · then the labels

Only the pixels are trained and scored (the loss mask), so bits per "character" of the scoring
protocol are bits per pixel, i.e. bits per dimension. The vocabulary file records the layout
(:meth:`ImageLayout.options`), so that decoding, serving and plots need nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.vocab_layout import BOS, UNK
from pipeline.errors import SeqlabError

PIXELS = "pixels"          # the tokenizer kind of an image corpus
END_OF_IMAGE, SEPARATOR = "\n", "\t"
END_ID, SEPARATOR_ID, LEVEL_OFFSET = 2, 3, 4
LABEL_PREFIX = "label:"


@dataclass(frozen=True)
class ImageLayout:
    height: int
    width: int
    levels: int
    labels: tuple[str, ...] = ()      # class names, in id order; () when the corpus is not conditioned

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def label_offset(self) -> int:
        return LEVEL_OFFSET + self.levels

    @property
    def prefix(self) -> int:
        """Stream positions before the first pixel: ``<bos>``, and the label with its separator."""
        return 3 if self.labels else 1

    @property
    def example_tokens(self) -> int:
        """Tokens of one example: its label and separator, its pixels, the end of image."""
        return self.prefix - 1 + self.pixels + 1

    def tokens(self) -> list[str]:
        """The vocabulary: the reserved ids, one token per level, one per label."""
        return ([BOS, UNK, END_OF_IMAGE, SEPARATOR] + [str(v) for v in range(self.levels)]
                + [LABEL_PREFIX + name for name in self.labels])

    def options(self) -> dict:
        return {"height": self.height, "width": self.width, "levels": self.levels, "labels": list(self.labels)}

    @classmethod
    def from_options(cls, options: dict) -> "ImageLayout":
        return cls(int(options["height"]), int(options["width"]), int(options["levels"]),
                   tuple(str(x) for x in options.get("labels", ())))

    def model_config(self) -> dict:
        """What a 2-D family is built with (``image=``): the shape and where each kind of id lies."""
        return {"height": self.height, "width": self.width, "levels": self.levels,
                "level_offset": LEVEL_OFFSET, "label_offset": self.label_offset,
                "labels": len(self.labels), "prefix": self.prefix}

    # ---- images <-> ids ----
    def label_id(self, label: int | str) -> int:
        """The token of class ``label``: its name, or its index."""
        if not self.labels:
            raise SeqlabError("this image corpus has no class labels (data.labels: false): a prompt cannot name one")
        if str(label) in self.labels:
            return self.label_offset + self.labels.index(str(label))
        if isinstance(label, (int, np.integer)) and 0 <= label < len(self.labels):
            return self.label_offset + int(label)
        raise SeqlabError(f"unknown class label {label!r}; expected one of {', '.join(self.labels)}")

    def example_ids(self, images: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """int32 (N * example_tokens,): each image's example (label and separator when labelled,
        its pixels in raster order, the end of image), one after another."""
        images = np.asarray(images)
        n = len(images)
        body = images.reshape(n, self.pixels).astype(np.int32) + LEVEL_OFFSET
        parts = [body, np.full((n, 1), END_ID, np.int32)]
        if self.labels:
            if labels is None:
                raise ValueError("a labelled layout needs the images' labels")
            lab = np.asarray(labels, np.int32).reshape(n, 1) + self.label_offset
            parts = [lab, np.full((n, 1), SEPARATOR_ID, np.int32)] + parts
        return np.concatenate(parts, axis=1).reshape(-1)

    def example_mask(self, n: int) -> np.ndarray:
        """uint8 loss mask of ``n`` examples: 1 on the pixels only."""
        one = np.zeros(self.example_tokens, np.uint8)
        one[self.prefix - 1:self.prefix - 1 + self.pixels] = 1
        return np.tile(one, n)

    def prompt(self, label: int | str | None = None, top: np.ndarray | None = None) -> np.ndarray:
        """The prompt a sampler continues after its ``<bos>``: the class's label and separator
        (required when the corpus is labelled, refused when not), then the given ``top`` rows of
        pixels (levels, (rows, width)) for a completion."""
        if label is None and self.labels:
            raise SeqlabError(f"this image corpus is conditioned on the class: a prompt names one of "
                              f"{', '.join(self.labels)}")
        head = [self.label_id(label), SEPARATOR_ID] if label is not None else []
        if top is None:
            return np.asarray(head, np.int32)
        return np.concatenate([np.asarray(head, np.int32), np.asarray(top, np.int32).reshape(-1) + LEVEL_OFFSET])

    def image(self, pixel_ids) -> np.ndarray:
        """uint8 (height, width) levels from the ids of one image's pixels (sampled ids that are not
        levels, which a model trained on pixels all but never draws, read as level 0); short rows
        are filled with 0."""
        ids = np.asarray(pixel_ids, np.int64).reshape(-1)[:self.pixels]
        levels = np.where((ids >= LEVEL_OFFSET) & (ids < self.label_offset), ids - LEVEL_OFFSET, 0)
        out = np.zeros(self.pixels, np.uint8 if self.levels <= 256 else np.uint16)
        out[:len(levels)] = levels
        return out.reshape(self.height, self.width)


def layout_of(tokenizer) -> ImageLayout | None:
    """The image layout a vocabulary records (None: not an image corpus)."""
    return ImageLayout.from_options(tokenizer.options) if tokenizer.kind == PIXELS else None
