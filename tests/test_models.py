"""Model families: training, initialisers, the conv family's dilations, parameter errors.

What every family must do (shapes, dtypes, causality, stepping, saving, serving) is checked on
every family by ``tests/test_family_conformance.py``.
"""
import dataclasses

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.errors import SeqlabError  # noqa: E402
from pipeline.models import build_model  # noqa: E402
from pipeline.models.catalog import builtin_families, parse_model  # noqa: E402
from pipeline.data.vocab_layout import BOS_ID  # noqa: E402
from tests.family_cases import FAMILY_CASES, image_of, marker_of, params  # noqa: E402
from tests.tiny_models import tiny_cfg  # noqa: E402

VOCAB = 23
MAX_LEN = 32


def families_with(field: str) -> list[str]:
    """The built-in families whose parameters have ``field``."""
    return [name for name, family in builtin_families().items()
            if field in {f.name for f in dataclasses.fields(family.params)}]


@pytest.mark.parametrize("case", params(FAMILY_CASES))
def test_training_reduces_loss(case):
    keras.utils.set_random_seed(2)
    model = build_model(case.cfg, VOCAB, MAX_LEN, case.marker, case.image)
    pattern = np.array([4, 5, 6, 7, 8, 4, 6, 8], np.int32)      # every id a level of an image model
    stream = np.tile(pattern, 20)
    x = np.stack([np.concatenate([[BOS_ID], stream[i:i + 23]]) for i in range(8)]).astype(np.int32)
    y = np.stack([stream[i:i + 24] for i in range(8)]).astype(np.int32)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = [float(model.train_on_batch(x, y)) for _ in range(25)]   # loss before each update
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses


@pytest.mark.parametrize("family", families_with("embed_init"))
def test_embedding_init(family):
    vocab = 200
    for init, lo, hi in (("normal", 0.9, 1.1), ("default", 0.0, 0.06)):
        cfg = tiny_cfg(family, embed_init=init, embed_dim=64)
        model = build_model(cfg, vocab, MAX_LEN, marker_of(family), image_of(family, vocab))
        table = np.asarray(model.embed(np.arange(vocab, dtype=np.int32)[None]))[0]   # every token's vector
        assert table.shape == (vocab, 64)
        assert lo < table.std() < hi, (family, init, table.std())


@pytest.mark.parametrize("family", families_with("recurrent_init"))
def test_uniform_recurrent_init_is_pytorchs(family):
    units = 400
    bound = 1 / np.sqrt(units)
    model = build_model(tiny_cfg(family, units=units, layers=2, recurrent_init="uniform"), VOCAB, MAX_LEN)
    weights = [model.rnns[i].cell for i in range(2)]
    arrays = [np.asarray(w) for cell in weights for w in cell.weights] + \
             [np.asarray(w) for w in model.head.weights]
    for a in arrays:   # every recurrent weight and bias, the output kernel and bias: U(-1/sqrt(units), ...)
        assert np.abs(a).max() <= np.float32(bound) and a.std() > 0.7 * bound / np.sqrt(3), a.shape   # bound in float32
    assert len({a.tobytes() for a in arrays}) == len(arrays)      # independent draws
    default = build_model(tiny_cfg(family, units=units, layers=2), VOCAB, MAX_LEN)
    if family == "lstm":                                           # Keras's forget-gate bias of 1 is gone
        assert np.allclose(np.asarray(default.rnns[0].cell.bias)[units:2 * units], 1.0)
        assert np.abs(np.asarray(weights[0].bias)[units:2 * units]).max() <= bound


def test_conv_dilations_and_receptive_field():
    cfg = tiny_cfg("conv", kernel_size=2, dilations=[1, 2, 4, 8, 1, 2, 4, 8])
    model = build_model(cfg, VOCAB, MAX_LEN)
    assert [b.dilation for b in model.blocks] == [1, 2, 4, 8, 1, 2, 4, 8]
    assert model.receptive_field == 1 + 2 * 15
    assert build_model(tiny_cfg("conv", kernel_size=3, dilations=[1, 3]), VOCAB, MAX_LEN).receptive_field == 1 + 2 * 4
    with pytest.raises(ValueError):
        build_model(tiny_cfg("conv", dilations=[]), VOCAB, MAX_LEN)


def test_unknown_family_and_bad_heads():
    with pytest.raises(SeqlabError, match="did you mean 'lstm'"):
        tiny_cfg("lsmt")
    with pytest.raises(SeqlabError, match="not divisible by heads"):
        parse_model({"family": "transformer", "units": 18, "heads": 4}, "models.x")
