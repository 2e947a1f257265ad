"""Tiny model configurations shared by the model and generation tests: each family's real parameters."""
import dataclasses

from pipeline.models.family import ModelParams
from pipeline.models.catalog import get_family

# a few-hundred-parameter network of any family: the fields a family has are taken from here
TINY = dict(embed_dim=12, units=16, layers=2, heads=2, ff_dim=0, kernel_size=2, dilations=[1, 2, 4], dropout=0.1,
            embed_init="default", tie_embeddings=False,
            context=4, hidden=16,   # the example family's (families/window_mlp.py)
            first_kernel=3)         # the PixelCNN's (odd kernels: kernel_size is raised to 3 for it below)
ODD_KERNELS = ("first_kernel",)     # a family with this field centres its kernels on a pixel: kernel_size 3


def tiny_cfg(family, **overrides) -> ModelParams:
    """A tiny network of ``family``; keyword arguments override (and must be fields of the family)."""
    params = get_family(family).params
    known = {f.name for f in dataclasses.fields(params)}
    tiny = {k: v for k, v in TINY.items() if k in known}
    if known.intersection(ODD_KERNELS):
        tiny["kernel_size"] = 3
    return params(family=family, **(tiny | overrides))
