"""The pixelcnn family's network (Keras): see :class:`PixelCNN`."""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .layers import Dropout, embedding_initializer
from .sequence_model import PACKAGE, SequenceModel

IMAGE_KEYS = ("height", "width", "levels", "level_offset", "label_offset", "labels", "prefix")
NO_IMAGE = ("the pixelcnn family models images: it needs an image corpus (data.corpus builtin:digits, "
            "builtin:mnist or a folder/array of images)")

MASKED = -1e9    # the logit of a non-level id at a pixel position (finite: no inf - inf anywhere)


def image_description(image, vocab_size: int) -> dict:
    """``image`` checked against the vocabulary: every key of :data:`IMAGE_KEYS`, as ints."""
    if image is None:
        raise ValueError(NO_IMAGE)
    missing = [k for k in IMAGE_KEYS if k not in image]
    if missing:
        raise ValueError(f"pixelcnn image description lacks {missing} (has {sorted(image)})")
    out = {k: int(image[k]) for k in IMAGE_KEYS}
    if min(out["height"], out["width"], out["levels"]) < 1 or out["labels"] < 0 or out["prefix"] < 1:
        raise ValueError(f"pixelcnn image description out of range: {out}")
    too_big = out["level_offset"] + out["levels"] > vocab_size
    if too_big or (out["labels"] and out["label_offset"] + out["labels"] > vocab_size):
        raise ValueError(f"pixelcnn image description {out} does not fit a vocabulary of {vocab_size} ids")
    if out["labels"] and out["prefix"] < 2:
        raise ValueError(f"pixelcnn image description {out}: a labelled image needs its label at position 1 "
                         "(prefix >= 2)")
    return out


def gate(z):
    a, b = ops.split(z, 2, axis=-1)
    return ops.tanh(a) * ops.sigmoid(b)


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatedPixelLayer(keras.layers.Layer):
    """One gated layer of both stacks (van den Oord et al. 2016, figure 2), convolutions by shifts.

    Vertical: ``pre_v[r, c]`` = a (k//2 + 1, k) convolution over input rows r - k//2 .. r, columns
    c - k//2 .. c + k//2 (+ the class bias); ``v_out = tanh * sigmoid(pre_v)``. It may see its own
    row: the horizontal stack only reads it shifted down one row, through the 1x1 ``link``.
    Horizontal: ``pre_h[r, c]`` = a 1-row convolution over columns c - k//2 .. c (the first
    layer: .. c - 1, so that a pixel never sees itself) + ``link(pre_v[r - 1, c])`` + the class
    bias; ``h_out = h_in + 1x1(gate(pre_h))`` (the first layer: no residual, its input is the
    pixel itself). Weights are made in ``__init__`` (the layer's methods are called directly).
    """

    def __init__(self, units, in_dim, kernel_size, first=False, labels=0, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.in_dim, self.kernel_size = int(units), int(in_dim), int(kernel_size)
        self.first, self.labels, self.dropout = bool(first), int(labels), float(dropout)
        k, c = self.kernel_size, self.units
        self.p = k // 2                                 # columns either side
        self.kh = self.p + 1                            # rows of the vertical kernel (the last one: its own row)
        self.hw = self.p if self.first else self.p + 1  # taps of the horizontal kernel
        glorot = keras.initializers.GlorotUniform
        self.v_kernel = self.add_weight(shape=(self.kh, k, self.in_dim, 2 * c), initializer=glorot(), name="v_kernel")
        self.v_bias = self.add_weight(shape=(2 * c,), initializer="zeros", name="v_bias")
        self.h_kernel = self.add_weight(shape=(1, self.hw, self.in_dim, 2 * c), initializer=glorot(), name="h_kernel")
        self.h_bias = self.add_weight(shape=(2 * c,), initializer="zeros", name="h_bias")
        self.link_kernel = self.add_weight(shape=(2 * c, 2 * c), initializer=glorot(), name="link_kernel")
        self.out_kernel = self.add_weight(shape=(c, c), initializer=glorot(), name="out_kernel")
        self.out_bias = self.add_weight(shape=(c,), initializer="zeros", name="out_bias")
        self.cond = (self.add_weight(shape=(self.labels, 4 * c), name="cond",
                                     initializer=keras.initializers.RandomNormal(stddev=0.1))
                     if self.labels else None)
        self.drop = Dropout(self.dropout) if self.dropout > 0 else None
        self.built = True

    @staticmethod
    def _w(v, dtype):
        return ops.cast(v, dtype)

    def conditions(self, label, dtype):
        """The class biases (vertical, horizontal), each (B, 2C), of int labels (B,); None unlabelled."""
        if self.cond is None:
            return None, None
        both = ops.take(self._w(self.cond, dtype), label, axis=0)
        return ops.split(both, 2, axis=-1)

    def vertical(self, rows, cond_v):
        """``pre_v`` of input ``rows`` (B, R + kh - 1, W + 2p, C_in), zero padded: (B, R, W, 2C)."""
        pre = ops.conv(rows, self._w(self.v_kernel, rows.dtype), padding="valid") + self._w(self.v_bias, rows.dtype)
        return pre if cond_v is None else pre + cond_v[:, None, None, :]

    def link(self, pre_v):
        return ops.matmul(pre_v, self._w(self.link_kernel, pre_v.dtype))

    def output(self, pre_h, h_in, training=None):
        g = gate(pre_h)
        if self.drop is not None:
            g = self.drop(g, training=training)
        o = ops.matmul(g, self._w(self.out_kernel, g.dtype)) + self._w(self.out_bias, g.dtype)
        return o if self.first else h_in + o

    def full(self, v, h, cond, training=None):
        """Both stacks over whole images (B, H, W, C_in): ``(v_out, h_out)``."""
        cond_v, cond_h = cond
        p = self.p
        pre_v = self.vertical(ops.pad(v, ((0, 0), (self.kh - 1, 0), (p, p), (0, 0))), cond_v)
        hp = ops.pad(h, ((0, 0), (0, 0), (p, 0), (0, 0)))
        if self.first:
            hp = hp[:, :, :-1, :]                  # column c sees columns c - p .. c - 1
        pre_h = ops.conv(hp, self._w(self.h_kernel, hp.dtype), padding="valid") + self._w(self.h_bias, hp.dtype)
        down = ops.pad(pre_v, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]   # row r reads pre_v of row r - 1
        pre_h = pre_h + self.link(down)
        if cond_h is not None:
            pre_h = pre_h + cond_h[:, None, None, :]
        return gate(pre_v), self.output(pre_h, h, training)

    def step(self, taps, link, cond_h, h_in):
        """The horizontal stack at one pixel: ``taps`` (B, hw, C_in) its inputs at columns c - p ..
        (c or c - 1), ``link`` (B, 2C) the row above's link: h_out (B, C)."""
        flat = ops.reshape(taps, (-1, self.hw * self.in_dim))
        kernel = ops.reshape(self._w(self.h_kernel, flat.dtype), (self.hw * self.in_dim, 2 * self.units))
        pre = ops.matmul(flat, kernel) + self._w(self.h_bias, flat.dtype) + ops.cast(link, flat.dtype)
        if cond_h is not None:
            pre = pre + cond_h
        return self.output(pre, h_in)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, in_dim=self.in_dim, kernel_size=self.kernel_size, first=self.first,
                      labels=self.labels, dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelCNN(SequenceModel):
    """Gated PixelCNN: level Embedding -> ``layers`` x :class:`GatedPixelLayer` -> relu -> 1x1(units)
    -> relu -> Dense(V, float32), on the (H, W) grid of the pixels of each row of ids.

    Ids are ``<bos> [label sep] pixels... end``: pixel i (raster order) is input position
    ``prefix + i``, and its logits come out at position ``prefix - 1 + i``, a function of pixels
    < i and the label (the id at position 1 when ``labels`` > 0). Every other position's logits
    are zeros; at a pixel position, ids that are not levels get logit -1e9 (a sample is always a
    level). The full forward pads (or crops) the pixels to H*W: later pixels never reach earlier
    outputs.

    The cache (Fast PixelCNN): per layer, the horizontal stack's inputs along the current row
    (B, k//2 + W, C_in, left zero padding included), the vertical stack's inputs of the last
    k//2 + 1 rows (B, k//2 + 1, W + 2 (k//2), C_in, top rows zeros at the start), the 1x1 links
    of the previous row for every layer (B, layers, W, 2C), and the label (B, 1). The token at
    position t (pixel i = t - prefix) is written in row 0's buffer; when it ends a row, the
    vertical stack runs over that row (W positions, every layer, ``ops.cond``); then the
    horizontal stack runs at pixel i + 1 alone. A call of T > 1 ids runs T such steps in a
    ``while_loop``. So a step costs O(layers) at one pixel plus, once a row, O(layers * W): a
    whole image costs about what one full forward does.
    """

    cached = True
    cache_batch_axis = 0

    def __init__(self, cfg, vocab_size, max_len, image=None, **kwargs):
        super().__init__(cfg, vocab_size, max_len, name=kwargs.pop("name", "pixel_cnn"), **kwargs)
        self.image = image_description(image, self.vocab_size)
        if cfg.kernel_size % 2 == 0 or cfg.first_kernel % 2 == 0 or min(cfg.kernel_size, cfg.first_kernel) < 3:
            raise ValueError(f"pixelcnn kernels must be odd and >= 3, got kernel_size={cfg.kernel_size}, "
                             f"first_kernel={cfg.first_kernel}")
        im = self.image
        self.height, self.width, self.levels = im["height"], im["width"], im["levels"]
        self.pixels, self.prefix, self.labels = self.height * self.width, im["prefix"], im["labels"]
        self.embedding = keras.layers.Embedding(self.levels, cfg.embed_dim, name="embedding",
                                                embeddings_initializer=embedding_initializer(cfg.embed_init))
        self.stack = [GatedPixelLayer(cfg.units, cfg.embed_dim if i == 0 else cfg.units,
                                      cfg.first_kernel if i == 0 else cfg.kernel_size, first=i == 0,
                                      labels=self.labels, dropout=cfg.dropout, name=f"gated_{i}")
                      for i in range(int(cfg.layers))]
        self.head = keras.layers.Dense(cfg.units, name="head")
        self.logits = keras.layers.Dense(self.vocab_size, dtype="float32", name="logits")
        mask = np.full(self.vocab_size, MASKED, np.float32)
        mask[im["level_offset"]:im["level_offset"] + self.levels] = 0.0
        self._mask = mask

    # ---- shared pieces
    def embed(self, ids):
        level = ops.clip(ops.cast(ids, "int32") - self.image["level_offset"], 0, self.levels - 1)
        return self.embedding(level)

    def _label(self, label_ids):
        return ops.clip(ops.cast(label_ids, "int32") - self.image["label_offset"], 0, max(self.labels - 1, 0))

    def _head(self, h):
        logits = self.logits(ops.relu(self.head(ops.relu(h))))
        return logits + ops.convert_to_tensor(self._mask)

    # ---- the full forward
    def call_with_cache(self, ids, cache=None, held=None, training=None, embedded=None):
        if cache is not None:
            return self._cached(ids, tuple(cache), held)
        ids = ops.cast(ids, "int32")
        e = self.embed(ids) if embedded is None else embedded
        n, p = self.pixels, self.prefix
        e = ops.pad(e, ((0, 0), (0, p + n), (0, 0)))[:, p:p + n, :]
        x = ops.reshape(e, (-1, self.height, self.width, e.shape[-1]))
        label = self._label(ops.pad(ids, ((0, 0), (0, 2)))[:, 1]) if self.labels else None
        v = h = x
        for layer in self.stack:
            v, h = layer.full(v, h, layer.conditions(label, x.dtype), training)
        logits = ops.reshape(self._head(h), (-1, n, self.vocab_size))
        logits = ops.concatenate([logits, ops.zeros_like(logits[:, :1])], axis=1)   # row n: the zeros
        j = ops.arange(ops.shape(ids)[1], dtype="int32") - (p - 1)                  # the pixel each position predicts
        return ops.take(logits, ops.where((j >= 0) & (j < n), j, n), axis=1), None

    # ---- the cache
    def empty_cache(self, batch_size):
        b, w = int(batch_size), self.width
        rows = tuple(ops.zeros((b, layer.p + w, layer.in_dim), "float32") for layer in self.stack)
        cols = tuple(ops.zeros((b, layer.kh, w + 2 * layer.p, layer.in_dim), "float32") for layer in self.stack)
        link = ops.zeros((b, len(self.stack), w, 2 * self.cfg.units), "float32")
        return (ops.zeros((b, 1), "float32"),) + rows + cols + (link,)

    def _split(self, cache):
        n = len(self.stack)
        return cache[0], list(cache[1:1 + n]), tuple(cache[1 + n:1 + 2 * n]), cache[1 + 2 * n]

    def _cached(self, ids, cache, held):
        ids = ops.cast(ids, "int32")
        held = ops.cast(held, "int32")
        if ids.shape[1] == 1:
            logits, cache = self._step(ids[:, 0], cache, held)
            return logits[:, None, :], cache
        batch, steps = ops.shape(ids)[0], ops.shape(ids)[1]
        out = ops.zeros((batch, steps, self.vocab_size), "float32")

        def body(k, out, *cache):
            logits, cache = self._step(ops.take(ids, k, axis=1), cache, held + k)
            return (k + 1, ops.slice_update(out, (0, k, 0), logits[:, None, :])) + tuple(cache)

        carry = ops.while_loop(lambda k, *_: k < steps, body, (ops.convert_to_tensor(0, "int32"), out) + cache)
        return carry[1], tuple(carry[2:])

    def _step(self, token, cache, t):
        """The logits (B, V) at position ``t`` (scalar int32) of ``token`` (B,), and the cache after it."""
        label, rows, cols, link = self._split(cache)
        w, n, p = self.width, self.pixels, self.prefix
        batch = -1 if token.shape[0] is None else token.shape[0]
        if self.labels:
            label = ops.where(t == 1, ops.cast(self._label(token), "float32")[:, None], label)
        x = self.embed(token[:, None])
        dtype = x.dtype
        conds = [layer.conditions(ops.cast(label[:, 0], "int32") if self.labels else None, dtype)
                 for layer in self.stack]
        # the token's pixel i (if it is one) joins the current row
        i = t - p
        is_pixel = (i >= 0) & (i < n)
        c_i = ops.mod(ops.clip(i, 0, n - 1), w)
        first = self.stack[0]
        at = (0, first.p + c_i, 0)
        old = ops.slice(rows[0], at, (batch, 1, first.in_dim))
        rows[0] = ops.slice_update(rows[0], at, ops.where(is_pixel, ops.cast(x, "float32"), old))
        # a complete row: the vertical stack over it, once
        done = is_pixel & (c_i == w - 1)
        cols, link = ops.cond(done, lambda: self._vertical(rows[0], cols, conds, dtype),
                              lambda: (tuple(cols), link))
        # the horizontal stack at pixel j = i + 1, the one this position predicts
        j = i + 1
        c_j = ops.mod(ops.clip(j, 0, n - 1), w)
        above = ops.cast(ops.take(link, c_j, axis=2), dtype)          # (B, layers, 2C)
        h = None
        for l, layer in enumerate(self.stack):
            if l:
                rows[l] = ops.slice_update(rows[l], (0, layer.p + c_j, 0), ops.cast(h, "float32")[:, None, :])
            taps = ops.cast(ops.slice(rows[l], (0, c_j, 0), (batch, layer.hw, layer.in_dim)), dtype)
            h = layer.step(taps, above[:, l], conds[l][1], h)
        logits = self._head(h)
        logits = ops.where((j >= 0) & (j < n), logits, ops.zeros_like(logits))
        return logits, (label,) + tuple(rows) + tuple(cols) + (link,)

    def _vertical(self, row0, cols, conds, dtype):
        """The vertical stack over the row just completed (its pixels: ``row0`` past the padding):
        every layer's input rows rolled by one, and every layer's link for the next row."""
        row = row0[:, self.stack[0].p:, :]
        new, links = [], []
        for layer, buf, (cond_v, _) in zip(self.stack, cols, conds):
            padded = ops.pad(ops.cast(row, "float32"), ((0, 0), (layer.p, layer.p), (0, 0)))
            buf = ops.concatenate([buf[:, 1:], padded[:, None]], axis=1)
            new.append(buf)
            pre = layer.vertical(ops.cast(buf, dtype), cond_v)[:, 0]
            links.append(ops.cast(layer.link(pre), "float32"))
            row = gate(pre)
        return tuple(new), ops.stack(links, axis=1)

    # ---- the rest of the contract
    def lookup_tables(self) -> list:
        return list(self.embedding.weights) + [layer.cond for layer in self.stack if layer.cond is not None]

    def get_config(self):
        return super().get_config() | {"image": dict(self.image)}
