"""Examples mode (``data.examples: lines``): no model sees across an example.

The promise is checked where it is made: a model's score of an example does not depend on its
neighbours (the lines permuted, or the example alone), for every family of the conformance cases
and the n-gram; training and validation windows hold one example's tokens only; prepare writes
the starts of the examples however the text is cut into pieces.
"""
import numpy as np
import pytest

from pipeline.data.examples import (ExampleSampler, StartsWriter, eval_rows, example_ends, example_rows,
                                    line_starts, row_weights)
from pipeline.data.vocab_layout import BOS_ID
from pipeline.scoring.diagnostics import sample_targets

END = 1   # the line end of these tests' examples (a real vocabulary's id of "\n" or <eol>)


class ListOut:
    def __init__(self):
        self.parts = []

    def append(self, a):
        self.parts.append(np.asarray(a))

    @property
    def array(self):
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.int64)


def examples_stream(lengths, rng, vocab=19, first=2):
    """ids of examples of the given lengths (line end included), their starts, and the examples."""
    examples = [np.append(rng.integers(first, vocab, size=n - 1), END).astype(np.int32) for n in lengths]
    starts = np.cumsum([0] + [len(e) for e in examples[:-1]]).astype(np.int64)
    return np.concatenate(examples), starts, examples


@pytest.mark.parametrize("cuts", [[], [3], [1, 2, 7, 8], [5, 11]])
def test_starts_follow_every_line_end_however_the_text_is_cut(cuts):
    ids = np.array([5, 6, END, 7, END, END, 8, 9, 9, END, 4, END], np.int32)
    out = ListOut()
    writer = StartsWriter(out)
    done = 0
    for piece in np.split(ids, cuts):
        writer.add(piece, END, done)
        done += len(piece)
    writer.close(done)
    np.testing.assert_array_equal(out.array, [0, 3, 5, 6, 10])      # none after the final line end
    assert writer.count == 5
    unfinished = ListOut()
    w = StartsWriter(unfinished)
    w.add(ids[:-1], END, 0)
    w.close(len(ids) - 1)                                            # the last line has no line end
    np.testing.assert_array_equal(unfinished.array, [0, 3, 5, 6, 10])
    np.testing.assert_array_equal(line_starts(ids[:5], END, 100), [103, 105])


def test_training_rows_hold_one_example_read_from_its_own_start():
    rng = np.random.default_rng(0)
    lengths = [3, 9, 1, 20, 5, 14]
    ids, starts, examples = examples_stream(lengths, rng)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    seq_len = 8
    sampler = ExampleSampler(starts, len(ids), seq_len)
    rows = sampler.rows(4000, seed=1, epoch=0)
    tokens, valid = example_rows(ids, rows, seq_len + 1)
    weights = row_weights(valid, rows, None)
    for (first, a, e), row, ok in zip(rows, tokens, valid):
        k = int(np.searchsorted(starts, a))
        stream = np.concatenate([[BOS_ID], examples[k]])               # the example's own stream
        assert a <= first and first - a <= max(0, e - a - seq_len)
        n = int(ok.sum())
        np.testing.assert_array_equal(row[:n], stream[first - a:first - a + n])
        assert np.all(row[n:] == BOS_ID) and not ok[n:].any()
        assert set(owner[(np.arange(first, first + seq_len + 1)[ok] - 1)[row[ok] != BOS_ID]]) <= {k}
    assert weights.shape == (len(rows), seq_len) and set(np.unique(weights)) <= {0.0, 1.0}
    # every window position of every example is drawn about equally often
    windows = np.maximum(1, np.array(lengths) - seq_len + 1)
    drawn = np.bincount(np.searchsorted(starts, rows[:, 1]), minlength=len(lengths))
    np.testing.assert_allclose(drawn / len(rows), windows / windows.sum(), atol=0.03)
    # the density: the mean fraction of a row's targets inside its example
    assert sampler.density == pytest.approx(weights.mean(), abs=0.02)
    np.testing.assert_array_equal(ExampleSampler(starts, len(ids), seq_len).rows(50, 1, 0), rows[:50])


def test_training_batches_group_rows_by_length_and_lose_no_target():
    rng = np.random.default_rng(4)
    lengths = rng.integers(1, 70, size=300)
    ids, starts, _ = examples_stream(lengths, rng)
    seq_len, steps, batch = 64, 40, 16
    sampler = ExampleSampler(starts, len(ids), seq_len)
    batches = sampler.batches(steps, batch, seed=3, epoch=1)
    assert batches.shape == (steps, batch, 4)
    # the same rows as the full-width draw, only regrouped
    drawn = sampler.rows(steps * batch, seed=3, epoch=1)
    assert sorted(map(tuple, batches[..., :3].reshape(-1, 3))) == sorted(map(tuple, drawn))
    widths = batches[:, 0, 3]
    assert np.all(batches[..., 3] == widths[:, None]) and widths.max() <= seq_len
    assert len(set(widths.tolist())) > 3 and widths.mean() < 0.75 * seq_len     # padding saved
    for rows, width in zip(batches[..., :3], widths):
        _, full = example_rows(ids, rows, seq_len + 1)
        _, cut = example_rows(ids, rows, width + 1)
        assert full[:, width + 1:].sum() == 0                  # no target inside an example is cut off
        np.testing.assert_array_equal(cut, full[:, :width + 1])
    np.testing.assert_array_equal(sampler.batches(steps, batch, seed=3, epoch=1), batches)
    assert not np.array_equal(sampler.batches(steps, batch, seed=3, epoch=2), batches)


def test_bucket_widths_are_few_and_cover_the_need():
    from pipeline.data.examples import bucket_width
    need = np.arange(1, 300)
    width = bucket_width(need, 256)
    assert np.all(width >= np.minimum(need, 256)) and width.max() == 256 and np.all(width % 8 == 0)
    inside = need <= 256
    assert np.all((width - need)[inside] < np.maximum(8, need // 4 + 1)[inside])   # padding under a quarter
    assert len(set(width[need <= 256].tolist())) <= 16
    assert bucket_width(np.array([30]), 20)[0] == 20


def test_a_loss_mask_weights_the_targets_inside_the_example():
    ids, starts, _ = examples_stream([4, 6], np.random.default_rng(1))
    mask = np.zeros(len(ids), np.uint8)
    mask[[1, 2, 7, 9]] = 1
    rows = np.array([[0, 0, 4], [4, 4, 10]])
    _, valid = example_rows(ids, rows, 8)
    w = row_weights(valid, rows, mask)
    np.testing.assert_array_equal(w[0], [0, 1, 1, 0, 0, 0, 0])   # targets ids[0..3], then padding
    np.testing.assert_array_equal(w[1], [0, 0, 0, 1, 0, 1, 0])   # targets ids[4..9]


def test_validation_windows_cut_every_example_at_its_start():
    ids, starts, examples = examples_stream([3, 12, 2, 7], np.random.default_rng(2))
    rows = eval_rows(starts, len(ids), 5, max_tokens=16)
    assert [tuple(r) for r in rows] == [(0, 0, 3), (3, 3, 15), (8, 3, 15), (13, 3, 15)]   # starts 0, 3 < 16
    from pipeline.data.windows import eval_windows
    x, y, w = eval_windows(ids, 5, 16, starts=starts)
    assert int(w.sum()) == 3 + 12
    np.testing.assert_array_equal(x[1], np.concatenate([[BOS_ID], examples[1][:4]]))
    np.testing.assert_array_equal(y[0][:3], examples[0])
    np.testing.assert_array_equal(example_ends(starts, len(ids)), [3, 15, 17, 24])


def test_diagnose_samples_only_targets_whose_context_lies_in_their_example():
    ids, starts, _ = examples_stream([5, 30, 4, 40], np.random.default_rng(3))
    targets = sample_targets(len(ids) + 1, 8, 100, seed=0, starts=starts)
    own = starts[np.searchsorted(starts, targets - 1, side="right") - 1]
    assert np.all(targets - 8 >= own)                                       # the <bos> is context
    # and not an example's last token when another follows (the view reads that one's <bos> there)
    assert len(targets) == (30 - 7 - 1) + (40 - 7) and not np.isin(targets, starts).any()
    from pipeline.data.windows import BosStream
    stream = BosStream(ids, starts)
    np.testing.assert_array_equal(stream[targets], ids[targets - 1])          # every target reads its own id
    np.testing.assert_array_equal(stream[starts], np.zeros(len(starts)))
    np.testing.assert_array_equal(stream[starts + 1], ids[starts])


# --- prepare: the starts, and paired files checked line by line ---------------------------------

def test_prepare_writes_the_example_starts_and_keeps_stream_mode_as_it_was(tmp_path):
    from pipeline.data.prepare import prepare_corpus
    from pipeline.data.prepared import load_prepared
    text = "".join(f"line {i} {'x' * (i % 7)}\n" for i in range(300)) + "no line end"
    (tmp_path / "c.txt").write_text(text)
    lines = prepare_corpus(str(tmp_path / "c.txt"), tmp_path / "l", tokenizer="char", vocab_size=100,
                           examples="lines", memory_mb=64)
    stream = prepare_corpus(str(tmp_path / "c.txt"), tmp_path / "s", tokenizer="char", vocab_size=100)
    assert lines["data_hash"] != stream["data_hash"] and "examples" not in stream
    assert not list((tmp_path / "s").glob("*_starts.npy"))
    data = load_prepared(tmp_path / "l")
    assert data.examples == "lines" and data.boundary_id == data.tokenizer.tokens.index("\n")
    assert load_prepared(tmp_path / "s").starts("train") is None
    for split in ("train", "valid", "test"):
        ids, starts = np.asarray(data.ids[split]), np.asarray(data.starts(split))
        expected = np.concatenate([[0], np.flatnonzero(ids == data.boundary_id) + 1])
        np.testing.assert_array_equal(starts, expected[expected < len(ids)])
        assert lines["splits"][split]["examples"] == len(starts)
    assert lines["splits"]["test"]["examples"] == lines["splits"]["test"]["lines"] + 1   # "no line end"


def test_pairs_score_the_targets_and_name_the_file_and_line_of_a_bad_pair(tmp_path):
    from pipeline.data.prepare import prepare_corpus
    from pipeline.data.prepared import load_prepared
    from pipeline.errors import SeqlabError
    rows = [(f"{d:02d}/{m:02d}/19{d}", f"19{d}-{m:02d}-{d:02d}") for d in range(10, 40) for m in range(1, 13)]
    good = "".join(f"{a}\t{b}\n" for a, b in rows)
    (tmp_path / "pairs.tsv").write_text(good)
    stats = prepare_corpus(str(tmp_path / "pairs.tsv"), tmp_path / "p", tokenizer="char", vocab_size=100,
                           examples="pairs")
    data = load_prepared(tmp_path / "p")
    assert stats["score_after"] == "\t" and data.examples == "pairs"
    ids, mask, starts = (np.asarray(a) for a in (data.ids["valid"], data.mask("valid"), data.starts("valid")))
    scored = data.tokenizer.decode(ids[mask == 1])
    # every target with its line end: the token a decoder predicts to stop
    assert scored == "".join(line.split("\t")[1] for line in data.tokenizer.decode(ids).splitlines(keepends=True))
    assert data.chars("valid") == len(scored) and len(starts) == stats["splits"]["valid"]["lines"]
    lines = good.splitlines(keepends=True)
    for line_no, bad, what in [(7, "no tab here\n", "no tab"), (len(lines) - 2, "\tx\n", "empty source"),
                               (300, "a\t\n", "empty target")]:
        broken = lines[:line_no - 1] + [bad] + lines[line_no:]
        (tmp_path / "bad.tsv").write_text("".join(broken))
        with pytest.raises(SeqlabError, match=rf"bad.tsv: line {line_no}: {what}"):
            prepare_corpus(str(tmp_path / "bad.tsv"), tmp_path / "p", tokenizer="char", vocab_size=100,
                           examples="pairs")
        assert load_prepared(tmp_path / "p").data_hash == stats["data_hash"]     # the old folder stays
    with pytest.raises(SeqlabError, match=r"line 1: a target of 10 characters, over max_target_chars=5"):
        prepare_corpus(str(tmp_path / "pairs.tsv"), tmp_path / "q", tokenizer="char", vocab_size=100,
                       examples="pairs", max_target_chars=5)
    assert not (tmp_path / "q").exists()


def test_pairs_of_word_targets_score_the_same_characters_in_fewer_tokens(tmp_path):
    from pipeline.data.prepare import prepare_corpus
    from pipeline.data.prepared import load_prepared
    rows = [(f"w{i}", f"P{i % 5} Q{i % 7} R") for i in range(150)]    # every word in the train split
    (tmp_path / "pairs.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in rows))
    as_chars, as_words = (load_prepared(tmp_path / kind) for kind in ("char", "char+word") if prepare_corpus(
        str(tmp_path / "pairs.tsv"), tmp_path / kind, tokenizer=kind, vocab_size=100, examples="pairs"))
    for split in ("train", "valid", "test"):
        # bits per character divide by the same characters: each target and its line end
        assert as_words.chars(split) == as_chars.chars(split)
        ids, mask = np.asarray(as_words.ids[split]), np.asarray(as_words.mask(split))
        targets = [line.split("\t")[1] for line in as_chars.tokenizer.decode(as_chars.ids[split]).splitlines(True)]
        assert [as_words.tokenizer.tokens[i] for i in ids[mask == 1]] == [t for line in targets for t in
                                                                         line.split() + ["\n"]]
        assert int(mask.sum()) * 2 == int(np.asarray(as_chars.mask(split)).sum())    # "P0 Q0 R\n": 4 for 8
    assert as_words.tokenizer.decode(as_words.ids["test"]) == as_chars.tokenizer.decode(as_chars.ids["test"])
    with pytest.raises(ValueError, match="char\\+word takes pairs only"):
        prepare_corpus(str(tmp_path / "pairs.tsv"), tmp_path / "x", tokenizer="char+word", vocab_size=100)


def test_params_take_pairs_with_the_char_tokenizer_only():
    from pipeline.config.params import parse_params
    from pipeline.data.tokenizers import tokenizer_kind
    from pipeline.errors import SeqlabError
    import yaml
    from tests.conftest import ROOT
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"] |= {"examples": "pairs", "max_target_chars": 40}
    assert parse_params(raw).data.examples == "pairs"
    assert parse_params({**raw, "data": raw["data"] | {"max_target_chars": None}}).data.max_target_chars is None
    words = parse_params({**raw, "data": raw["data"] | {"target_tokenizer": "word"}}).data
    assert tokenizer_kind(words.tokenizer, words.target_tokenizer) == "char+word"
    assert tokenizer_kind(raw["data"]["tokenizer"]) == "char"
    for bad, match in [({"tokenizer": "word"}, "expected data.score_after null"),
                       ({"score_after": "=>"}, "expected data.score_after null"),
                       ({"examples": "lines"}, "max_target_chars: applies to data.examples: pairs only"),
                       ({"target_tokenizer": "wordpiece"}, "target_tokenizer"),
                       ({"examples": "lines", "max_target_chars": None, "target_tokenizer": "word"},
                        "target_tokenizer: 'word' applies to data.examples: pairs only"),
                       ({"examples": "pair"}, "examples")]:
        with pytest.raises(SeqlabError, match=match):
            parse_params({**raw, "data": raw["data"] | bad})


# --- no leak: the score of an example does not depend on its neighbours ------------------------

def per_example(scores, starts, n):
    return [scores[a:e] for a, e in zip(starts, example_ends(starts, n))]


def permuted(examples, order):
    chosen = [examples[i] for i in order]
    starts = np.cumsum([0] + [len(e) for e in chosen[:-1]]).astype(np.int64)
    return np.concatenate(chosen), starts


def test_the_ngram_scores_every_example_from_its_own_start():
    from pipeline.models.ngram import KneserNeyLM
    rng = np.random.default_rng(4)
    train, _, _ = examples_stream(rng.integers(2, 30, 300), rng, vocab=9)
    lm = KneserNeyLM.fit(train, 9, 4, boundary_id=END)
    ids, starts, examples = examples_stream([6, 1, 15, 3, 9], rng, vocab=9)
    base = per_example(lm.logprobs(ids), starts, len(ids))
    order = [3, 0, 4, 2, 1]
    ids2, starts2 = permuted(examples, order)
    again = per_example(lm.logprobs(ids2), starts2, len(ids2))
    for i, k in enumerate(order):
        np.testing.assert_allclose(again[i], base[k], rtol=0, atol=1e-12)
        np.testing.assert_allclose(lm.logprobs(examples[k]), base[k], rtol=0, atol=1e-12)


keras = pytest.importorskip("keras")

from tests.family_cases import CASES, MAX_LEN, built, params  # noqa: E402


@pytest.mark.parametrize("case", params(CASES))
def test_a_networks_score_of_an_example_is_independent_of_its_neighbours(case):
    from pipeline.models.network import Network
    from pipeline.scoring.protocol import network_logprobs
    b = built(case)
    network = Network(b.model, b.cfg, MAX_LEN, 19)
    rng = np.random.default_rng(5)
    bound = b.stepper.max_context
    longest = MAX_LEN + 13 if bound is None else bound       # several windows, or the stepper's limit
    lengths = [7, 1, longest, 12, 3, 20]
    ids, starts, examples = examples_stream(lengths, rng)
    base, protocol = network_logprobs(network, ids, 0.5, 4, starts=starts)
    assert protocol["examples"] == "lines" and base.shape == (len(ids),) and np.all(np.isfinite(base))
    base = per_example(base, starts, len(ids))
    order = [5, 2, 0, 4, 1, 3]
    ids2, starts2 = permuted(examples, order)
    again = per_example(network_logprobs(network, ids2, 0.5, 3, starts=starts2)[0], starts2, len(ids2))
    for i, k in enumerate(order):
        np.testing.assert_allclose(again[i], base[k], atol=2e-5, err_msg=f"example {k} moved to {i}")
    for k in (0, 2):    # alone, as a split of its own, from the stream's own start
        alone, _ = network_logprobs(network, examples[k], 0.5, 4, starts=np.zeros(1, np.int64))
        np.testing.assert_allclose(alone, base[k], atol=2e-5)
    # and not what the same text scores as one stream: the neighbours would have leaked
    stream, _ = network_logprobs(network, ids, 0.5, 4)
    assert not np.allclose(stream[starts[1]:], np.concatenate(base[1:]), atol=1e-4)


def test_training_in_examples_mode_runs_and_validates_on_whole_examples(tmp_path):
    from pipeline.models import build_model
    from pipeline.models.catalog import family_of
    from pipeline.training.loop import train_model
    from pipeline.config.params import TrainParams
    from tests.tiny_models import tiny_cfg
    rng = np.random.default_rng(6)
    train, train_starts, _ = examples_stream(rng.integers(2, 40, 200), rng)
    valid, valid_starts, _ = examples_stream(rng.integers(2, 40, 40), rng)
    cfg = tiny_cfg("gru")
    assert family_of(cfg).name == "gru"
    result = train_model(cfg, TrainParams(seq_len=16, batch_size=4, epochs=1, steps_per_epoch=4, steps_per_execution=2, eval_tokens=300), train, valid, 19, "h", 0,
                         tmp_path / "ckpt", build_model, train_starts=train_starts, valid_starts=valid_starts)
    row = result.history[-1]
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["valid_loss"])
    with pytest.raises(Exception, match="example starts of both"):
        train_model(cfg, TrainParams(seq_len=16, batch_size=4, epochs=1, steps_per_epoch=2), train, valid, 19, "h", 0, tmp_path / "c2", build_model,
                    train_starts=train_starts)
