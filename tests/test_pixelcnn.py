"""The gated PixelCNN family: what makes it a correct autoregressive image model.

Causality in raster order and the absence of a blind spot are read off gradients of the full
forward (exact zeros, exact receptive field); the cached step (Fast PixelCNN) must give the full
forward's logits at every position, from ``<bos>`` or from a half-image prompt, because sampling
runs on it; the class label must reach every pixel; the compiled decoder must sample through it.
"""
import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.config.schema import build  # noqa: E402
from pipeline.errors import SeqlabError  # noqa: E402
from pipeline.models.family import ParamError  # noqa: E402
from pipeline.models.pixelcnn import PixelCNNFamily, PixelCNNParams  # noqa: E402
from pipeline.models.stepper import CachedStepper  # noqa: E402

H, W, LEVELS, CLASSES = 5, 6, 3, 4
N = H * W
LEVEL0, SEP, END = 4, 3, 2
FAMILY = PixelCNNFamily()


def image(labels=0, height=H, width=W, levels=LEVELS):
    return dict(height=height, width=width, levels=levels, level_offset=LEVEL0, label_offset=LEVEL0 + levels,
                labels=labels, prefix=3 if labels else 1)


def make(labels=0, seed=3, height=H, width=W, **overrides):
    keras.utils.set_random_seed(seed)
    cfg = PixelCNNParams(family="pixelcnn", **({"units": 16, "layers": 3, "embed_dim": 8} | overrides))
    FAMILY.check(cfg)
    vocab = LEVEL0 + LEVELS + labels
    return FAMILY.build(cfg, vocab, 64, image=image(labels, height, width))


def rows(labels, batch=2, seed=0, pixels=N):
    """Whole examples ``<bos> [label sep] pixels end`` (B, prefix + pixels + 1), each row its own label."""
    rng = np.random.default_rng(seed)
    pix = rng.integers(LEVEL0, LEVEL0 + LEVELS, size=(batch, pixels))
    head = [[0, LEVEL0 + LEVELS + b % labels, SEP] if labels else [0] for b in range(batch)]
    return np.concatenate([np.array(head), pix, np.full((batch, 1), END)], axis=1).astype(np.int32)


def full(model, ids):
    return np.asarray(model(ids, training=False))


def stepped(model, ids, chunks):
    """The cached stepper's logits over ``ids``, fed in chunks of the given lengths (the rest one by one)."""
    stepper = CachedStepper(model)
    state, out, at = stepper.initial_state(len(ids)), [], 0
    for n in list(chunks) + [1] * ids.shape[1]:
        if at >= ids.shape[1]:
            break
        logits, state = stepper(ids[:, at:at + n], state)
        out.append(logits)
        at += n
    assert state.held == ids.shape[1]
    return np.concatenate(out, axis=1), state


def dependence(model, ids):
    """(N, N) bool: [i, j] when pixel i's level logits have a non-zero gradient with respect to the
    vector of pixel j (``embedded=``, which replaces the model's ``embed``)."""
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("gradients taken with tf.GradientTape")
    prefix = model.image["prefix"]
    e = tf.Variable(model.embed(ids))
    mix = tf.constant(np.random.default_rng(1).normal(size=LEVELS), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        logits = model.call_with_cache(ids, embedded=e)[0][0, :, LEVEL0:LEVEL0 + LEVELS]
        scores = [tf.reduce_sum(logits[prefix - 1 + i] * mix) for i in range(model.pixels)]
    out = np.zeros((model.pixels, model.pixels), bool)
    for i, s in enumerate(scores):
        g = tape.gradient(s, e).numpy()[0]
        assert not np.any(g[:prefix]) and not np.any(g[prefix + model.pixels:])   # bos/label/end are not pixels
        out[i] = np.abs(g[prefix:prefix + model.pixels]).sum(-1) > 0
    return out


def expected_field(height, width, first_kernel, kernel_size, layers):
    """(N, N) bool: [i, j] when the architecture as specified connects pixel j to pixel i's output,
    by propagating dependence sets through both stacks (independently of the network's code)."""
    n = height * width
    x = np.eye(n, dtype=bool).reshape(height, width, n)

    def window(a, r, c, rows, left, right):            # union of a[rr, cc] over the window (zero padding outside)
        out = np.zeros(n, bool)
        for rr in rows:
            for cc in range(c - left, c + right + 1):
                if 0 <= rr < height and 0 <= cc < width:
                    out |= a[rr, cc]
        return out

    v, h = x, x
    for layer in range(layers):
        k = first_kernel if layer == 0 else kernel_size
        p = k // 2
        pre_v = np.zeros_like(x)
        pre_h = np.zeros_like(x)
        for r in range(height):
            for c in range(width):
                pre_v[r, c] = window(v, r, c, range(r - p, r + 1), p, p)
                pre_h[r, c] = window(h, r, c, [r], p, -1 if layer == 0 else 0)
                if r:
                    pre_h[r, c] |= pre_v[r - 1, c]     # the link, from the row above only
        v = pre_v
        h = pre_h if layer == 0 else h | pre_h
    return h.reshape(n, n)


# ---- 1, 2: causality and the receptive field

def test_full_forward_is_causal_in_raster_order_and_sees_every_earlier_pixel():
    """Pixel i's logits: exactly zero gradient from every pixel j >= i, non-zero from every j < i
    (3 layers, kernels 7 then 5, cover the whole 5x6 image: no blind spot anywhere)."""
    model = make()
    got = dependence(model, rows(0, batch=1))
    np.testing.assert_array_equal(got, np.tri(N, N, -1, dtype=bool))


def test_receptive_field_is_the_two_stacks_field_without_blind_spot():
    """On a larger image with a bounded field, the dependence pattern is exactly the one the gated
    architecture specifies: in particular the pixel up and two to the right, (r-1, c+2), which a
    PixelCNN of masked convolutions alone never sees, and nothing right of it in the same row."""
    height, width = 6, 10
    model = make(height=height, width=width, layers=2, first_kernel=5, kernel_size=3)
    got = dependence(model, rows(0, batch=1, pixels=height * width))
    want = expected_field(height, width, 5, 3, 2)
    np.testing.assert_array_equal(got, want)
    assert not np.any(got & ~np.tri(height * width, height * width, -1, dtype=bool))
    seen = lambda r, c, rr, cc: bool(got[r * width + c, rr * width + cc])     # noqa: E731
    assert seen(2, 3, 1, 5) and seen(4, 7, 3, 9) and seen(1, 0, 0, 2)   # up and two to the right: no blind spot
    assert seen(2, 3, 1, 6) and not seen(2, 3, 1, 7)       # kernel 5, then 3: three columns out in the row above
    assert seen(2, 3, 0, 3) and seen(2, 3, 2, 0) and not seen(4, 7, 4, 3)   # two rows up; 3 to the left, not 4
    assert not seen(2, 3, 2, 3) and not seen(2, 3, 2, 4)   # itself, and the next pixel


# ---- 3: the cache

@pytest.mark.parametrize("labels", [0, CLASSES], ids=["unlabelled", "labelled"])
def test_cached_steps_equal_the_full_forward(labels):
    """Every position of a whole image: from the prefix then one token at a time, from a prompt
    holding the upper half (and a bit) of the image, and in chunks that cross row boundaries."""
    model = make(labels)
    ids = rows(labels, batch=3)
    prefix = model.image["prefix"]
    want = full(model, ids)
    assert want.shape == (3, prefix + N + 1, model.vocab_size)
    lv = want[:, prefix - 1:prefix - 1 + N, LEVEL0:LEVEL0 + LEVELS]
    assert np.abs(lv).max() > 0.1 and np.std(lv) > 0.01          # a real comparison: spread logits
    for chunks in ([prefix], [prefix + (H // 2) * W + 2], [2, 5, 7, 1, 9, 4]):
        got, state = stepped(model, ids, chunks)
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=str(chunks))
        empty = model.empty_cache(3)
        assert [tuple(a.shape) for a in state.cache] == [tuple(a.shape) for a in empty]   # fixed shapes


def test_a_cache_follows_its_own_pixels():
    """Two rows sharing a prefix then diverging: the cached logits follow each row's own pixels
    (a stale or shared cache would give row 1 row 0's logits)."""
    model = make(CLASSES)
    ids = rows(CLASSES, batch=2)
    ids[1, :3] = ids[0, :3]
    ids[1, 3 + 8:] = np.where(ids[0, 3 + 8:] == LEVEL0, LEVEL0 + 1, LEVEL0)   # differs from pixel 8 on
    ids[:, -1] = END
    got, _ = stepped(model, ids, [3])
    want = full(model, ids)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(want[0, 3 + 9:-1] - want[1, 3 + 9:-1]).max() > 1e-3


def test_full_forward_of_any_length_and_positions_outside_the_image():
    """A row cut anywhere gives the same logits as the whole row up to the cut (missing pixels
    are padding that no earlier pixel sees); positions that predict no pixel are zeros, and at a
    pixel position only level ids have a chance."""
    model = make(CLASSES)
    ids = rows(CLASSES, batch=2)
    whole = full(model, ids)
    for cut in (1, 2, 3, 4, 11, N + 2):
        np.testing.assert_allclose(full(model, ids[:, :cut]), whole[:, :cut], atol=1e-5)
    longer = np.concatenate([ids, np.full((2, 5), END, np.int32)], axis=1)   # padding after the image
    np.testing.assert_allclose(full(model, longer)[:, :ids.shape[1]], whole, atol=1e-5)
    assert not np.any(full(model, longer)[:, ids.shape[1]:])
    assert not np.any(whole[:, :2]) and not np.any(whole[:, 2 + N:])       # before pixel 0, and the end token
    pix = whole[:, 2:2 + N]
    probs = np.exp(pix - pix.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(probs[..., LEVEL0:LEVEL0 + LEVELS].sum(-1), 1.0, atol=1e-6)


# ---- 4: the class label

def test_the_label_conditions_every_pixel_and_nothing_else_does():
    """Changing the label (position 1) changes every pixel's logits, pixel 0's included; the
    separator's id changes nothing; an unlabelled model reads position 1 as pixel 0."""
    model = make(CLASSES)
    ids = rows(CLASSES, batch=1)
    base = full(model, ids)
    other = ids.copy()
    other[0, 1] = LEVEL0 + LEVELS + (ids[0, 1] - LEVEL0 - LEVELS + 1) % CLASSES
    changed = np.abs(full(model, other) - base)[0, 2:2 + N, LEVEL0:LEVEL0 + LEVELS].max(-1)
    assert changed.min() > 1e-4, changed
    sep = ids.copy()
    sep[0, 2] = 1                                  # <unk> where the separator was
    np.testing.assert_array_equal(full(model, sep), base)
    got, _ = stepped(model, other, [1, 1, 1])      # the cache reads the label when position 1 arrives
    np.testing.assert_allclose(got, full(model, other), atol=1e-4)

    plain = make(0)
    ids0 = rows(0, batch=1)
    flipped = ids0.copy()
    flipped[0, 1] = LEVEL0 + (ids0[0, 1] - LEVEL0 + 1) % LEVELS      # pixel 0
    diff = np.abs(full(plain, flipped) - full(plain, ids0))[0, :, LEVEL0:LEVEL0 + LEVELS].max(-1)
    assert diff[0] == 0 and diff[1:1 + N].max() > 1e-4            # pixel 0's own logits never see it


# ---- 5: parameters and the saved form

def test_parameter_checks_and_missing_image():
    for key, value in (("kernel_size", 4), ("first_kernel", 6)):
        with pytest.raises(ParamError) as err:
            FAMILY.check(PixelCNNParams(family="pixelcnn", **{key: value}))
        assert err.value.key == key and "odd" in err.value.message
    FAMILY.check(PixelCNNParams(family="pixelcnn"))
    with pytest.raises(SeqlabError, match="kernel_size: expected a value >= 3"):
        build(PixelCNNParams, {"family": "pixelcnn", "kernel_size": 1}, "models.pix")
    with pytest.raises(SeqlabError, match="unknown key"):
        build(PixelCNNParams, {"family": "pixelcnn", "dilations": [1]}, "models.pix")
    cfg = PixelCNNParams(family="pixelcnn", units=8, layers=1, embed_dim=4)
    with pytest.raises(ValueError, match="needs an image corpus"):
        FAMILY.build(cfg, 10, 64)
    with pytest.raises(ValueError, match="does not fit"):
        FAMILY.build(cfg, 6, 64, image=image(0))                  # levels 4..6 outside a vocabulary of 6
    assert FAMILY.name == "pixelcnn" and FAMILY.reads_image and FAMILY.protocol == "window"


def test_config_round_trip_rebuilds_the_same_network():
    model = make(CLASSES)
    config = json.loads(json.dumps(model.get_config()))           # what a saved network stores
    assert config["image"] == image(CLASSES)
    again = type(model).from_config(config)
    assert again.image == model.image and again.get_config() == model.get_config()
    ids = rows(CLASSES, batch=2)
    assert np.abs(full(again, ids) - full(model, ids)).max() > 1e-3   # fresh weights: different
    again.set_weights(model.get_weights())
    np.testing.assert_array_equal(full(again, ids), full(model, ids))


def test_training_step_lowers_the_pixel_loss():
    """A few optimiser steps on one image with the loss on pixel positions only."""
    model = make(CLASSES)
    ids = rows(CLASSES, batch=4)
    x, y = ids[:, :-1], ids[:, 1:]
    weight = np.zeros(y.shape, np.float32)
    weight[:, 2:2 + N] = 1.0                                      # targets that are pixels
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = [float(model.train_on_batch(x, y, sample_weight=weight)) for _ in range(12)]
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses


# ---- 6: the compiled decoder

def test_compiled_decoder_samples_images_through_the_cache():
    """``CompiledDecoder`` on the cached stepper (XLA loop, scalar ``held``): greedy output equals
    greedy decoding by the full forward recomputed at every pixel; samples are level ids."""
    from pipeline.generation.compiled import CompiledDecoder
    model = make(CLASSES)
    decoder = CompiledDecoder(CachedStepper(model), model.vocab_size, chunk=16, first_chunk=3)
    # a label alone, and a label with the first row and a half of an image to complete
    half = rows(CLASSES, batch=1)[0, 1:3 + W + W // 2]
    prompts = [np.array([LEVEL0 + LEVELS + 1, SEP]), half]
    budgets = [N, N - W - W // 2]
    greedy = decoder.generate(prompts, budgets, temperature=0.0)
    for prompt, got, budget in zip(prompts, greedy, budgets):
        seq = [0] + prompt.tolist()
        for _ in range(budget):
            seq.append(int(np.argmax(keras.ops.convert_to_numpy(model(np.array([seq], np.int32)))[0, -1])))
        np.testing.assert_array_equal(got, seq[1 + len(prompt):])
    sampled = decoder.generate(prompts, budgets, temperature=1.0, seeds=[1, 2])
    assert [len(s) for s in sampled] == budgets
    sampled = np.concatenate(sampled)
    assert sampled.min() >= LEVEL0 and sampled.max() < LEVEL0 + LEVELS
    assert len(np.unique(sampled)) > 1                              # not stuck on one level
