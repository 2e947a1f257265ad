"""The pixelcnn family: a gated PixelCNN (van den Oord et al. 2016) over image corpora.

Images arrive as token ids in raster order (one image per example, optionally after a class
label); the network reads them as (H, W) grids of levels with a vertical and a horizontal stack
(no blind spot), gated tanh * sigmoid units and an optional per-layer class bias, and puts each
pixel's logits back at the position that predicts it. Sampling is cached (the Fast PixelCNN
idea): a step runs the horizontal stack at one pixel and, once a row is complete, the vertical
stack over the next row only. Scored with windows like the other windowed families: an example
is one whole image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pipeline.config.schema import spec

from .family import WINDOW, EmbeddingParams, Family, ParamError

@dataclass(frozen=True)
class PixelCNNParams(EmbeddingParams):
    """``units`` is the channel count of both stacks; ``embed_dim`` the width of a level's vector;
    ``layers`` gated layers, the first with a ``first_kernel`` x ``first_kernel`` receptive field
    (its horizontal part strictly left of the pixel), the others ``kernel_size``."""
    embed_dim: int = field(default=32, metadata=spec(ge=1))
    units: int = field(default=64, metadata=spec(ge=1))
    layers: int = field(default=6, metadata=spec(ge=1))
    kernel_size: int = field(default=5, metadata=spec(ge=3))
    first_kernel: int = field(default=7, metadata=spec(ge=3))


class PixelCNNFamily(Family):
    name = "pixelcnn"
    params = PixelCNNParams
    protocol = WINDOW
    reads_image: ClassVar[bool] = True     # built with the corpus's image description (``image=``)

    def check(self, cfg: PixelCNNParams) -> None:
        for key in ("kernel_size", "first_kernel"):
            k = getattr(cfg, key)
            if k < 3 or k % 2 == 0:
                raise ParamError(key, f"expected an odd integer >= 3 (a kernel centred on its pixel), got {k}")

    def build(self, cfg, vocab_size: int, max_len: int, image=None):
        from .pixelcnn_net import PixelCNN
        return PixelCNN(cfg, vocab_size, max_len, image=image).build_once()


FAMILIES = (PixelCNNFamily(),)
