"""Tiny model configurations shared by the model and generation tests: the real ModelParams."""
from pipeline.params import ModelParams


def tiny_cfg(family, **overrides) -> ModelParams:
    """A few-hundred-parameter network of ``family``; keyword arguments override any field."""
    cfg = dict(family=family, embed_dim=12, units=16, layers=2, heads=2, ff_dim=0, kernel_size=2,
               dilations=[1, 2, 4], dropout=0.1, embed_init="default", tie_embeddings=False)
    cfg.update(overrides)
    return ModelParams(**cfg)
