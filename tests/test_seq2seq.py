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


def test_the_transformer_counts_target_positions_from_the_marker():
    """The same target after a longer source: its decoder positions are the same (relative to the
    marker), so with the source's influence removed (no cross-attention) the logits would match;
    with it they must differ. Checked through the position table the decoder reads."""
    model = built(case("seq2seq_transformer")).model
    short, long = example([3], [6, 7]), example([3, 4, 8, 9], [6, 7])
    for ids in (short, long):
        x = model._inputs(model.embed(ids[None]), None)
        marker = int(np.flatnonzero(ids == MARKER)[0])
        h = np.asarray(model._target_inputs(x, 0, keras.ops.convert_to_tensor([marker]), None))[0]
        table = np.asarray(model.target_positions.position_embeddings)
        np.testing.assert_allclose(h[marker:] - np.asarray(x)[0, marker:], table[:len(ids) - marker], atol=1e-6)


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
