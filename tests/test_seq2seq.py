"""The encoder-decoders (pipeline/models/seq2seq*.py): what they read and how they batch.

The conformance suite checks their contract with every family (causality on the target, the
cached decoder equal to the full forward, save and load); here: that the recurrent encoder reads
each source both ways exactly as a stock bidirectional GRU does, that rows with sources of other
lengths batch together without changing a row, that the Transformer counts target positions from
the marker, and that a family reading a source refuses data without one."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.errors import SeqlabError  # noqa: E402
from pipeline.models import build_model  # noqa: E402
from pipeline.models.source import split_prompts  # noqa: E402
from tests.family_cases import MARKER, VOCAB, built, case, forward  # noqa: E402


def example(source, target):
    return np.array([0, *source, MARKER, *target], np.int32)


def test_the_recurrent_encoder_reads_each_source_as_a_stock_bidirectional_gru():
    model = built(case("seq2seq_rnn")).model
    ids = np.stack([example([3, 4, 6, 7, 8], [9, 10]), np.pad(example([11, 12], [13, 14, 15, 16]), (0, 1))])
    x = model.embed(ids)
    lengths = np.array([6, 3], np.int32)            # <bos> and the source: the positions before the marker
    states, _, init = (np.asarray(t) for t in model.encode(x, keras.ops.convert_to_tensor(lengths)))
    half = model.cfg.units // 2
    for row, n in enumerate(lengths):
        for layer, reverse in ((model.encoder_forward, False), (model.encoder_backward, True)):
            stock = keras.layers.GRU(half, return_sequences=True, go_backwards=reverse)
            stock.build((None, None, x.shape[-1]))
            stock.set_weights(layer.get_weights())
            out = np.asarray(stock(x[row:row + 1, :n]))[0]
            got = states[row, :n, half:] if reverse else states[row, :n, :half]
            np.testing.assert_allclose(got, out[::-1] if reverse else out, atol=1e-5)
    assert init.shape == (2, model.cfg.units)


@pytest.mark.parametrize("case_id", ["seq2seq_rnn", "seq2seq_transformer"])
def test_rows_with_sources_of_other_lengths_batch_without_changing_a_row(case_id):
    """Every row's target logits are the row's own: batched with sources and targets of other
    lengths (and padding after its end) as when it is alone."""
    model = built(case(case_id)).model
    rows = [example([3, 4], [6, 7, 8]), example([9, 10, 11, 12, 13, 14], [15]), example([16], [17, 18, 3, 4, 6])]
    width = max(len(r) for r in rows)
    batch = np.stack([np.pad(r, (0, width - len(r))) for r in rows])
    together = forward(model, batch)
    for i, r in enumerate(rows):
        alone = forward(model, r)[0]
        marker = int(np.flatnonzero(r == MARKER)[0])
        np.testing.assert_allclose(together[i, marker:len(r)], alone[marker:], atol=1e-5)


def test_the_transformer_counts_target_positions_from_the_marker(monkeypatch):
    """The decoder reads position p at the p-th target position (the marker is 0), whatever the
    source's length, in the full forward and in the cached decoder alike."""
    model = built(case("seq2seq_transformer")).model
    seen = []
    original = model.target_positions.__class__.call

    def spy(layer, x, positions=None):
        seen.append(np.asarray(positions))
        return original(layer, x, positions=positions)
    monkeypatch.setattr(model.target_positions.__class__, "call", spy)
    for source in ([3], [3, 4, 8, 9]):
        ids = example(source, [6, 7])
        marker = len(source) + 1
        seen.clear()
        forward(model, ids)
        np.testing.assert_array_equal(np.clip(seen[-1][0], 0, None)[marker:], np.arange(len(ids) - marker))
        seen.clear()
        _, cache = model.start_with_cache(*split_prompts(ids[None, :marker + 1], [marker + 1], MARKER, model.max_len))
        model.call_with_cache(ids[None, marker + 1:marker + 2], cache, keras.ops.convert_to_tensor(marker + 1))
        np.testing.assert_array_equal(seen[-1], [[1]])


@pytest.mark.parametrize("case_id", ["seq2seq_rnn", "seq2seq_transformer"])
def test_prompts_of_other_lengths_start_together_as_each_alone(case_id):
    """``start_with_cache`` of prompts with sources and target prefixes of other lengths (laid out
    by ``split_prompts``) gives each row the logits and the continuation it has alone."""
    model = built(case(case_id)).model
    rows = [example([3, 4], []), example([9, 10, 11, 12, 13, 14], [15, 16]), example([16], [17]),
            np.array([0, 3, 4, 6], np.int32)]          # no marker yet: all source
    width = max(len(r) for r in rows) + 2
    ids = np.stack([np.pad(r, (0, width - len(r))) for r in rows])
    logits, cache = model.start_with_cache(*split_prompts(ids, [len(r) for r in rows], MARKER, model.max_len))
    nxt = np.array([[6], [7], [8], [MARKER]], np.int32)
    step, _ = model.call_with_cache(nxt, cache, keras.ops.convert_to_tensor(width))
    for i, r in enumerate(rows):
        alone = forward(model, np.concatenate([r, nxt[i]]))[0]
        if MARKER in r:                                 # a source position's logits are never scored
            np.testing.assert_allclose(np.asarray(logits)[i], alone[len(r) - 1], atol=1e-5)
        np.testing.assert_allclose(np.asarray(step)[i, 0], alone[len(r)], atol=1e-5)


def test_a_family_that_reads_a_source_needs_paired_data():
    with pytest.raises(SeqlabError, match="encoder-decoder: it reads a source, so it needs paired data"):
        build_model(case("seq2seq_rnn").cfg, VOCAB, 16)
    from pipeline.config.params import parse_params
    from pipeline.config.params import read_yaml
    from pipeline.models.catalog import model_configs
    from tests.conftest import ROOT
    raw = read_yaml(ROOT / "params.yaml")
    raw["models"] = {"s2s": {"family": "seq2seq_transformer", "units": 16, "heads": 2}}
    with pytest.raises(SeqlabError, match=r"models.s2s.family: 'seq2seq_transformer' is an encoder-decoder.*"
                                          r"expected data.examples: pairs"):
        model_configs(parse_params(raw))


@pytest.mark.parametrize("case_id", ["seq2seq_rnn", "seq2seq_transformer"])
def test_no_step_changes_the_cache_entries_declared_fixed(case_id):
    """A beam search leaves ``fixed_cache`` entries in place (never reordered): decoding steps
    must return them unchanged."""
    model = built(case(case_id)).model
    ids = np.stack([np.pad(example([3, 4], []), (0, 2)), example([9, 10, 11], [12])])
    _, cache = model.start_with_cache(*split_prompts(ids, [4, 6], MARKER, model.max_len))
    assert model.fixed_cache
    _, after = model.call_with_cache(np.array([[6], [7]], np.int32), cache, keras.ops.convert_to_tensor(6))
    for i in model.fixed_cache:
        np.testing.assert_array_equal(np.asarray(after[i]), np.asarray(cache[i]))


def training_rows(rows, width):
    """Example rows as the training batches hold them: tokens (R, width + 1) padded with <bos>, and
    weights (R, width) scoring each row's target after the marker (its last token the line end)."""
    tokens = np.stack([np.pad(r, (0, width + 1 - len(r))) for r in rows]).astype(np.int32)
    weights = np.zeros((len(rows), width), np.float32)
    for i, r in enumerate(rows):
        marker = int(np.flatnonzero(r == MARKER)[0])
        weights[i, marker:len(r) - 1] = 1.0
    return tokens, weights


def test_training_rows_split_at_the_marker_keep_every_scored_target():
    from pipeline.data.examples import split_at_marker
    rows = [example([3, 4], [6, 7, 8]), example([9, 10, 11, 12, 13, 14, 15, 16, 17], [15]),
            example([16], [17, 18, 3, 4, 6, 7, 8, 9, 10, 11])]
    tokens, weights = training_rows(rows, 24)
    (source, lengths, target), y, w = split_at_marker(tokens, weights, MARKER)
    assert source.shape == (3, 16) and target.shape == (3, 16)       # buckets of the longest source and target
    np.testing.assert_array_equal(lengths, [3, 10, 2])
    for i, r in enumerate(rows):
        n = lengths[i]
        np.testing.assert_array_equal(source[i, :n], r[:n])
        k = len(r) - n - 1                                           # the marker and the target, the line end last
        np.testing.assert_array_equal(target[i, :k], r[n:n + k])
        np.testing.assert_array_equal(y[i, :k], r[n + 1:n + 1 + k])
    assert w.sum() == weights.sum() and np.all(w[np.arange(16)[None, :] >= (np.array([len(r) for r in rows]) -
                                                                         lengths - 1)[:, None]] == 0)
    weights[1, 2] = 1.0                                              # a source position scored
    with pytest.raises(SeqlabError, match="scores a position of its source"):
        split_at_marker(tokens, weights, MARKER)


@pytest.mark.parametrize("case_id", ["seq2seq_rnn", "seq2seq_transformer"])
def test_training_on_split_rows_gives_the_full_forwards_target_logits(case_id):
    """``model((source, lengths, target))`` (each side over its own positions) is the full forward
    over whole rows at every target position, rows of other lengths batched together."""
    from pipeline.data.examples import split_at_marker
    model = built(case(case_id)).model
    rows = [example([3, 4], [6, 7, 8]), example([9, 10, 11, 12, 13, 14], [15]), example([16], [17, 18, 3, 4, 6])]
    tokens, weights = training_rows(rows, 12)
    (source, lengths, target), y, w = split_at_marker(tokens, weights, MARKER)
    split = np.asarray(model((source, lengths, target)))
    full = forward(model, tokens[:, :-1])
    for i, n in enumerate(lengths):
        k = int(w[i].sum())
        np.testing.assert_allclose(split[i, :k], full[i, n:n + k], atol=1e-5)


def test_an_encoder_decoder_trains_on_split_rows(tmp_path, monkeypatch):
    """train_model hands an encoder-decoder its rows split at the marker (the validation, on whole
    rows, scores the same network), and the loss falls."""
    from pipeline.config.params import TrainParams
    from pipeline.models.seq2seq_rnn_net import AttentionRNN
    from pipeline.training.loop import train_model
    rng = np.random.default_rng(3)

    def split(n):
        rows = [example(s, s[::-1]) for s in (rng.integers(6, VOCAB, rng.integers(1, 6)).tolist() for _ in range(n))]
        ids = np.concatenate([np.append(r[1:], 4) for r in rows]).astype(np.int32)   # 4: the line end
        starts = np.cumsum([0] + [len(r) for r in rows[:-1]]).astype(np.int64)
        mask = np.concatenate([np.arange(len(r)) >= int(np.flatnonzero(r == MARKER)[0]) for r in rows]).astype(np.uint8)
        return ids, starts, mask
    (train, ts, tm), (valid, vs, vm) = split(400), split(40)
    calls = []
    original = AttentionRNN.teacher_forced
    monkeypatch.setattr(AttentionRNN, "teacher_forced", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    cfg = case("seq2seq_rnn").cfg
    result = train_model(cfg, TrainParams(seq_len=16, batch_size=16, epochs=2, steps_per_epoch=20, steps_per_execution=10,
                                          learning_rate=1e-2, eval_tokens=200), train, valid, VOCAB, "h", 0,
                         tmp_path / "ckpt", lambda c, v, m: build_model(c, v, m, MARKER), train_mask=tm, valid_mask=vm,
                         train_starts=ts, valid_starts=vs)
    assert calls, "the training step never ran the split forward"
    first, last = result.history[0], result.history[-1]
    assert np.isfinite(last["train_loss"]) and last["valid_loss"] < first["valid_loss"] < np.log(VOCAB)
