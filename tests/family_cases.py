"""The one list of model families the tests run: every built-in family of the catalog, the example
family from the user's own code, and the variants of them that take other code paths.

A family registered in the catalog (``pipeline.models.catalog.FAMILY_MODULES``) is a case here
without any edit, with its tiny parameters (``tests.tiny_models.tiny_cfg``), and so gets the whole
conformance suite (``tests/test_family_conformance.py``). :data:`VARIANTS` only adds cases: further
settings of a family that change what its network computes. Tests that mean "every family" take
their list from here (:data:`CASES`, or :data:`FAMILY_CASES` for one case per family); tests of
one family's maths pick their examples with :func:`case`.

Models built here (:func:`built`, :func:`decoder`) are cached per process and shared by the test
modules: a test must not change their weights.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from pipeline.data.image_layout import LEVEL_OFFSET, ImageLayout
from pipeline.data.vocab_layout import BOS_ID
from pipeline.models.catalog import builtin_families, get_family
from pipeline.models.family import ModelParams
from tests.tiny_models import tiny_cfg

USER_FAMILY = "families.window_mlp:WindowMLP"     # the example family from outside pipeline/
VOCAB = 19
MAX_LEN = 24          # the training context: windowed families see at most this many positions
SEED = 11             # the weights of every cached model
MARKER = 5            # random_ids puts it at SOURCE: every row is an example "<bos> x MARKER ..." that
SOURCE = 2            # the encoder-decoders read as source x and target after the marker

# Every case: N(0, 1) token vectors (families that have the setting), so that logits are spread
# well apart and greedy decoding has no near-ties between numerically different computations.
CASE_DEFAULTS = {"embed_init": "normal"}

# Further cases: family -> {variant: overrides of its tiny parameters}. Each family also has its
# plain case (tiny parameters, dropout 0.1, learned positions for the Transformer).
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "conv": {
        "k3": dict(kernel_size=3, dilations=[1, 2]),
        "k1-nodropout": dict(kernel_size=1, dilations=[1, 1], dropout=0.0),   # receptive field 1: no queue
    },
    "transformer": {
        # tied output projection, embed_dim != units (projections in and out), own ff width, no dropout layers
        "tied-nodropout": dict(tie_embeddings=True, embed_dim=8, ff_dim=24, dropout=0.0),
    },
    USER_FAMILY: {
        "direct-nodropout": dict(context=3, hidden=8, direct=True, dropout=0.0),
    },
}


@dataclass(frozen=True)
class FamilyCase:
    id: str            # the test id: the family's name [-variant]
    family: str        # as params.yaml names it (a built-in name or module:Name)
    cfg: ModelParams

    @property
    def marker(self) -> int | None:
        """The marker id the case's network is built with: MARKER for an encoder-decoder."""
        return marker_of(self.family)

    @property
    def source(self) -> int:
        """Positions that are source (causality and a cache's first call owe nothing before them)."""
        return SOURCE if self.marker is not None else 0

    @property
    def image(self) -> dict | None:
        """The image layout the case's network is built with: :data:`IMAGE` for a 2-D image model."""
        return image_of(self.family)

    @property
    def live(self) -> int:
        """Positions whose logits the network computes from its input: all of them, but for an image
        model only those that predict a pixel (it outputs zeros past its image's last pixel)."""
        image = self.image
        return MAX_LEN if image is None else image["prefix"] - 1 + image["height"] * image["width"]

    @property
    def name(self) -> str:
        """The family's own name (``window_mlp`` for the example family)."""
        return get_family(self.family).name


def marker_of(family: str) -> int | None:
    """The marker id a network of ``family`` is built with in the tests: MARKER for an
    encoder-decoder (it reads a source), None otherwise."""
    return MARKER if get_family(family).reads_source else None


def image_of(family: str, vocab: int = VOCAB) -> dict | None:
    """The image layout a network of ``family`` is built with in the tests: 4x5 images of ``vocab - 4``
    levels, unlabelled (so every id but <bos> and the three markers is a level), for a family
    that reads images; None otherwise. An example (20 pixels and its end) fits in MAX_LEN."""
    return ImageLayout(4, 5, vocab - LEVEL_OFFSET).model_config() if get_family(family).reads_image else None


def families() -> list[str]:
    """Every family the tests cover: the catalog's built-in families, then the example user family."""
    return [*builtin_families(), USER_FAMILY]


def _cfg(family: str, overrides: dict) -> ModelParams:
    known = {f.name for f in dataclasses.fields(get_family(family).params)}
    return tiny_cfg(family, **{k: v for k, v in CASE_DEFAULTS.items() if k in known}, **overrides)


def _cases() -> list[FamilyCase]:
    unknown = set(VARIANTS) - set(families())
    if unknown:
        raise LookupError(f"tests/family_cases.py: VARIANTS name unregistered families {sorted(unknown)}")
    out = []
    for family in families():
        name = get_family(family).name
        out.append(FamilyCase(name, family, _cfg(family, {})))
        for variant, overrides in VARIANTS.get(family, {}).items():
            out.append(FamilyCase(f"{name}-{variant}", family, _cfg(family, overrides)))
    return out


CASES: list[FamilyCase] = _cases()
FAMILY_CASES: list[FamilyCase] = [c for c in CASES if c.id == c.name]     # one (the plain) case per family


def params(cases: list[FamilyCase] = CASES) -> list:
    """``cases`` as pytest parameters, with their ids."""
    return [pytest.param(c, id=c.id) for c in cases]


def case(case_id: str) -> FamilyCase:
    """The case called ``case_id`` (for tests of one family)."""
    for c in CASES:
        if c.id == case_id:
            return c
    raise LookupError(f"no family case {case_id!r}; cases: {[c.id for c in CASES]}")


def random_ids(rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
    """int32 ids (batch, length) of the tiny vocabulary, each row starting with BOS and, from
    SOURCE + 1 ids on, an example: MARKER first at SOURCE (an encoder-decoder's source ends there)."""
    ids = rng.integers(1, VOCAB, size=(batch, length)).astype(np.int32)
    ids[:, 0] = BOS_ID
    ids[:, 1:SOURCE] = np.where(ids[:, 1:SOURCE] == MARKER, MARKER + 1, ids[:, 1:SOURCE])
    if length > SOURCE:
        ids[:, SOURCE] = MARKER
    return ids


def forward(model, ids) -> np.ndarray:
    """The full forward pass (inference) over ids (B, T) or one sequence (T,): float logits (B, T, V)."""
    ids = np.asarray(ids, np.int32)
    return np.array(model(ids.reshape(1, -1) if ids.ndim == 1 else ids, training=False))


@dataclass
class Built:
    cfg: ModelParams
    model: Any
    stepper: Any


_BUILT: dict[str, Built] = {}
_DECODERS: dict[str, Any] = {}


def built(c: FamilyCase) -> Built:
    """``c``'s network (VOCAB, MAX_LEN, weights from :data:`SEED`) and its stepper, built once per process."""
    if c.id not in _BUILT:
        import keras

        from pipeline.models import build_model, make_stepper
        keras.utils.set_random_seed(SEED)
        model = build_model(c.cfg, VOCAB, MAX_LEN, c.marker, c.image)
        _BUILT[c.id] = Built(c.cfg, model, make_stepper(model, c.cfg, MAX_LEN))
    return _BUILT[c.id]


def decoder(c: FamilyCase):
    """The compiled decoder of ``c``'s stepper (chunks of 16, the first of 3), built once per process."""
    if c.id not in _DECODERS:
        from pipeline.generation.compiled import CompiledDecoder
        _DECODERS[c.id] = CompiledDecoder(built(c).stepper, VOCAB, chunk=16, first_chunk=3)
    return _DECODERS[c.id]
