"""The diagnose stage's measures on constructions with known answers."""
import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.models import build_model  # noqa: E402
from pipeline.models.ngram import KneserNeyLM  # noqa: E402
from pipeline.saved.ngram import SavedNgram  # noqa: E402
from pipeline.scoring import diagnostics as d  # noqa: E402
from pipeline.scoring import network_probes as probes  # noqa: E402
from tests.tiny_models import tiny_cfg  # noqa: E402


def tuple_stream(k: int, count: int, seed: int = 0) -> np.ndarray:
    """Tuples (u, v_1 … v_{k-2}, u + 4): the last token of each needs the context k − 1 back."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(2, 6, size=(count, k))
    rows[:, -1] = rows[:, 0] + 4
    return rows.reshape(-1)


@pytest.mark.parametrize("k, cap", [(2, 8), (3, 8), (5, 8), (4, 3)])   # (4, 3): the stage's cap, order - 1
def test_an_ngram_of_order_k_has_effective_context_k_minus_1(k, cap):
    ids = tuple_stream(k, 3000)
    lm = KneserNeyLM.fit(ids, 12, k)
    stream = np.concatenate([[0], tuple_stream(k, 400, seed=1)]).astype(np.int32)
    targets = d.sample_targets(len(stream), 16, 200, seed=0)
    # a cap beyond what the model can use: the curve is flat from k - 1 on (n = 1, 2, 4, …, cap)
    m = d.measure_context(SavedNgram(lm).context_scorer(), stream, targets, cap, seed=0, order_width=16)
    assert m["summary"]["effective_context_tokens"] == k - 1
    losses = dict(zip(m["lengths"], m["losses"]))
    assert all(losses[n] == pytest.approx(losses[cap], abs=1e-12) for n in m["lengths"] if n >= k - 1)
    assert m["summary"]["order_sensitivity_tokens"] == k - 1   # shuffling beyond k - 1 never matters
    # no sample could say otherwise: the bootstrap interval is the point itself
    assert m["summary"]["effective_context_tokens_low"] == m["summary"]["effective_context_tokens_high"] == k - 1
    assert m["summary"]["order_sensitivity_tokens_low"] == m["summary"]["order_sensitivity_tokens_high"] == k - 1


def test_the_bootstrap_interval_widens_with_noise_and_holds_the_point():
    rng = np.random.default_rng(0)
    noisy = np.stack([np.zeros(40), rng.normal(0, 1, 40)])           # row 1 beats row 0 about half the time
    assert d.bootstrap_interval(lambda m: int(m[1] > m[0]), noisy, seed=0) == (0, 1)
    clear = np.stack([np.zeros(40), 5 + rng.normal(0, 1, 40)])
    assert d.bootstrap_interval(lambda m: int(m[1] > m[0]), clear, seed=0) == (1, 1)


def test_the_ngram_scorer_caps_the_order_without_a_start_of_stream():
    lm = KneserNeyLM.fit(tuple_stream(3, 2000), 12, 3)
    full = lm.next_logprobs_after([3, 4])
    assert np.allclose(full, lm.next_logprobs_after([9, 9, 3, 4]))           # only order - 1 ids count
    assert not np.allclose(lm.next_logprobs_after([]), lm.next_logprobs([]))  # next_logprobs adds <bos>


def test_a_convolutions_gradient_is_zero_exactly_beyond_its_receptive_field():
    cfg = tiny_cfg("conv", dilations=[1, 2], kernel_size=2, dropout=0.0)
    keras.utils.set_random_seed(0)
    model = build_model(cfg, 20, 16)
    field = model.receptive_field
    assert field == 4
    rng = np.random.default_rng(0)
    norms = probes.gradient_norms(model, rng.integers(2, 20, (8, 12)).astype(np.int32),
                                  rng.integers(2, 20, 8).astype(np.int32))
    assert norms.shape == (12,)
    assert np.all(norms[:field] > 0) and np.all(norms[field:] == 0.0)
    rate, half = d.fit_decay(norms)   # fitted only where the gradient exists
    assert rate is not None and math.isfinite(rate)


class OrderBeyond(keras.layers.Layer):
    """Sum of the embeddings (order-free) besides a causal convolution of the last ``b`` ones."""

    def call(self, x):
        return keras.ops.cumsum(x, axis=1)


def order_blind_beyond(b: int, vocab: int = 16):
    ids = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(vocab, 8, name="embedding")(ids)
    near = keras.layers.Conv1D(8, b, padding="causal")(x)
    h = keras.layers.Concatenate()([near, OrderBeyond()(x)])
    return keras.Model(ids, keras.layers.Dense(vocab, kernel_initializer=keras.initializers.RandomNormal(stddev=2.0))(h))


def test_a_model_that_ignores_order_beyond_b_shows_no_increase_beyond_b():
    b = 3
    keras.utils.set_random_seed(1)
    model = order_blind_beyond(b)
    rng = np.random.default_rng(0)
    stream = np.concatenate([[0], rng.integers(2, 16, 600)]).astype(np.int32)
    targets = d.sample_targets(len(stream), 16, 64, seed=0)
    base, increases = d.order_curve(probes.network_scorer(model), stream, targets, 16, [0, 1, 2, 3, 4, 8], seed=0)
    inc = dict(zip([0, 1, 2, 3, 4, 8], increases))
    assert all(abs(inc[k]) < 1e-5 for k in (3, 4, 8))
    assert all(abs(inc[k]) > 1e-3 for k in (0, 1, 2))
    assert d.order_distance([0, 1, 2, 3, 4, 8], increases, base, 16, threshold=1e-4) <= b


def test_the_network_scorer_reads_each_context_as_if_alone():
    keras.utils.set_random_seed(2)
    model = build_model(tiny_cfg("gru", dropout=0.0), 20, 16)
    rng = np.random.default_rng(3)
    ctx, y = rng.integers(2, 20, (3, 10)).astype(np.int32), rng.integers(2, 20, 3).astype(np.int32)
    lengths = np.array([10, 4, 1])
    padded = ctx.copy()
    for r, n in enumerate(lengths):   # the scorer reads ctx[r, :n]; the rest is padding
        padded[r, n:] = 7
    got = probes.network_scorer(model, batch_size=2)(padded, lengths, y)
    for r, n in enumerate(lengths):
        logits = np.asarray(model(ctx[r:r + 1, :n]))[0, -1].astype(np.float64)
        want = logits[y[r]] - np.log(np.sum(np.exp(logits)))
        assert got[r] == pytest.approx(want, abs=1e-5)


def test_the_gradient_at_distance_0_matches_a_finite_difference():
    import tensorflow as tf
    keras.utils.set_random_seed(4)
    model = build_model(tiny_cfg("lstm", dropout=0.0), 20, 16)
    rng = np.random.default_rng(5)
    ctx, y = rng.integers(2, 20, (1, 9)).astype(np.int32), rng.integers(2, 20, 1).astype(np.int32)
    norm0 = probes.gradient_norms(model, ctx, y)[0]
    e = tf.cast(model.embed(ctx), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(e)
        loss = tf.reduce_sum(probes.last_position_losses(model, ctx, e, y))
    direction = tape.gradient(loss, e).numpy()
    direction[:, :-1] = 0
    direction /= np.linalg.norm(direction)        # the unit gradient at the last position
    eps = 1e-2
    up, down = (float(tf.reduce_sum(probes.last_position_losses(model, ctx, e + s * eps * direction, y)))
                for s in (1, -1))
    assert (up - down) / (2 * eps) == pytest.approx(norm0, rel=2e-2)


def test_the_decay_fit_recovers_a_known_half_life():
    norms = 3.0 * 2.0 ** (-np.arange(40) / 5.0)
    rate, half = d.fit_decay(np.concatenate([norms, np.zeros(10)]))   # zeros beyond a field are skipped
    assert rate == pytest.approx(math.log(2) / 5) and half == pytest.approx(5.0)
    assert d.fit_decay(np.ones(10)) == (pytest.approx(0.0, abs=1e-12), None)


def test_effective_context_and_order_distance_by_hand():
    assert d.doubling(6) == [1, 2, 4, 6] and d.doubling(8) == [1, 2, 4, 8]
    assert d.effective_context([1, 2, 4, 8], [3.0, 2.019, 2.0199, 2.0]) == 2
    assert d.order_distance([0, 1, 2, 4], [1.0, 0.001, 0.5, 0.0], base=2.0, width=8) == 4
    assert d.order_distance([0, 1], [1.0, 1.0], base=2.0, width=8) == 8


def test_attention_weights_are_the_blocks_own_and_distances_are_known():
    tf = pytest.importorskip("tensorflow")
    keras.utils.set_random_seed(6)
    model = build_model(tiny_cfg("transformer", dropout=0.0), 20, 16)
    ctx = np.random.default_rng(7).integers(2, 20, (2, 10)).astype(np.int32)
    maps = probes.attention_maps(model, ctx)
    assert len(maps) == 2 and maps[0].shape == (2, 2, 10, 10)
    assert np.allclose(maps[0].sum(-1), 1) and np.all(np.triu(maps[0], 1) == 0)   # causal rows
    block = model.blocks[0]
    x = model.block_input(model.embed(ctx))          # the first block's input
    h = block.qkv(block.ln1(x))
    q, k, v = (block._heads(t, 10) for t in tf.split(h, 3, axis=-1))
    want = keras.ops.dot_product_attention(q, k, v, is_causal=True).numpy()      # (B, T, H, Dh)
    got = np.einsum("bhqk,bkhd->bqhd", maps[0], v.numpy())
    assert np.allclose(got, want, atol=1e-5)
    assert probes.attention_maps(build_model(tiny_cfg("gru"), 20, 16), ctx) == []
    uniform = np.tril(np.ones((4, 4))) / np.arange(1, 5)[:, None]                  # mean distance i / 2
    assert probes.mean_attention_distance(uniform[None, None]) == pytest.approx([np.mean(np.arange(4) / 2)])


def test_the_property_table_has_a_row_per_model_and_n_a_where_a_measure_does_not_apply():
    from pipeline.properties import properties_markdown
    base = {"targets": 4, "full_context_tokens": 6, "effective_context_tokens": 2, "order_sensitivity_tokens": 3,
            "gradient_decay_per_token": None, "gradient_half_life_tokens": None,
            "gradient_half_life_tokens_init": None, "attention_mean_distance_tokens": None}
    net = base | {"gradient_decay_per_token": 0.1, "gradient_half_life_tokens": 6.93,
                  "gradient_half_life_tokens_init": 2.0, "attention_mean_distance_tokens": 1.5,
                  "attention_distance_layer0_head0": 1.0, "attention_distance_layer0_head1": 2.0}
    table = properties_markdown({"ngram": base, "net": net}, {"ngram": 1.5, "net": 2.0})
    assert "| ngram | 1.5000 | 6 | 2 | 3 | n/a | n/a | n/a | n/a |" in table
    assert "| net | 2.0000 | 6 | 2 | 3 | 0.1000 | 6.9 | 2.0 | 1.5 |" in table
    assert "| 0 | 1.0 | 2.0 |" in table and "within 1%" in table
    sure = base | {"effective_context_tokens_low": 1, "effective_context_tokens_high": 4,
                   "order_sensitivity_tokens_low": 3, "order_sensitivity_tokens_high": 3, "interval": 0.9}
    assert "| sure | 1.5000 | 6 | 2 (1–4) | 3 (3–3) | n/a |" in properties_markdown({"sure": sure}, {"sure": 1.5})


def test_the_diagnose_section_is_validated():
    from pipeline.config.params import parse_params
    from pipeline.errors import SeqlabError
    base = {"models": {"m": {"family": "gru"}}}
    assert parse_params(base | {"diagnose": {"targets": 5}}).diagnose.targets == 5
    with pytest.raises(SeqlabError, match=r"diagnose\.targets: expected a value >= 1"):
        parse_params(base | {"diagnose": {"targets": 0}})
    with pytest.raises(SeqlabError, match="did you mean 'max_context'"):
        parse_params(base | {"diagnose": {"max_contxt": 8}})
