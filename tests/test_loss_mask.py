"""Loss masks (data.score_after): which tokens are scored, and that training and scoring use only them."""
import math

import numpy as np
import pytest

from pipeline.config.params import TrainParams, parse_params
from pipeline.data.loss_mask import scored_chars, scored_mask
from pipeline.data.prepare import prepare_corpus
from pipeline.data.prepared import load_prepared
from pipeline.data.windows import eval_windows, windows_dataset
from pipeline.errors import SeqlabError
from pipeline.scoring.protocol import split_scores

END, MARK = 9, 7


def test_the_scored_tokens_follow_the_first_marker_of_each_line_up_to_its_end():
    ids = np.array([1, 7, 2, 7, 3, 9,     # the second marker is scored as text
                    4, 5, 9,              # no marker: nothing scored
                    7, 9,                 # a marker and nothing after it
                    6, 7, 8])             # the last line has no line end
    want = [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    np.testing.assert_array_equal(scored_mask(ids, np.array([MARK]), END), want)
    two = scored_mask(np.array([1, 7, 7, 2, 9, 7, 2, 9]), np.array([7, 7]), END)   # a two-token marker
    np.testing.assert_array_equal(two, [0, 0, 0, 1, 0, 0, 0, 0])
    assert scored_chars("ab => cd\nno\n=> x\n", "=>", False) == 3 + 2
    assert scored_chars("ab => cd\nno\n=> x", "=>", False, include_end=True) == 4 + 2   # the last line has no end
    ends = scored_mask(ids, np.array([MARK]), END, include_end=True)   # pairs: the line end is the output's last token
    np.testing.assert_array_equal(ends, [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1])


def write_corpus(folder, lines_per_split=40, seed=0):
    """Lines 'word => drow': one of five words, then the marker, then the word reversed."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for split in ("train", "valid", "test"):
        rows = list(rng.choice(["abcdef", "bbcdda", "fedcab", "aaaabb", "cdefab"], lines_per_split))
        (folder / f"{split}.txt").write_text("".join(f"{r} => {r[::-1]}\n" for r in rows))


@pytest.mark.parametrize("tokenizer", ["char", "word"])
def test_prepare_writes_the_mask_and_counts_the_scored_text(tmp_path, tokenizer):
    write_corpus(tmp_path / "corpus")
    stats = prepare_corpus(str(tmp_path / "corpus"), tmp_path / "p", tokenizer=tokenizer, vocab_size=500,
                           score_after="=>")
    plain = prepare_corpus(str(tmp_path / "corpus"), tmp_path / "q", tokenizer=tokenizer, vocab_size=500)
    assert stats["data_hash"] != plain["data_hash"]
    data = load_prepared(tmp_path / "p")
    tok = data.tokenizer
    for split in ("train", "valid"):
        ids, mask = np.asarray(data.ids[split]), np.asarray(data.mask(split))
        assert mask.dtype == np.uint8 and len(mask) == len(ids)
        scored = tok.decode(ids[mask == 1])
        lines = (tmp_path / "corpus" / f"{split}.txt").read_text().splitlines()
        answers = [line.split("=> ")[1] for line in lines]
        # char: " " + answer per line (the space after the marker is text); word: one answer word per line
        assert scored.replace(" ", "") == "".join(answers)
        assert data.chars(split) == 7 * len(lines) == stats["splits"][split]["scored_chars"]
    assert load_prepared(tmp_path / "q").mask("train") is None


def test_a_marker_that_no_line_holds_is_refused(tmp_path):
    write_corpus(tmp_path / "corpus")
    with pytest.raises(SeqlabError, match=r"data.score_after: '::' is not in the vocabulary"):
        prepare_corpus(str(tmp_path / "corpus"), tmp_path / "p", tokenizer="char", vocab_size=500, score_after="::")
    assert not (tmp_path / "p").exists()
    (tmp_path / "corpus" / "valid.txt").write_text("no marker here\n" * 5)
    with pytest.raises(SeqlabError, match=r"no line of the valid split .* has text after '=>'"):
        prepare_corpus(str(tmp_path / "corpus"), tmp_path / "p", tokenizer="char", vocab_size=500, score_after="=>")
    assert not (tmp_path / "p").exists()


def test_params_refuse_a_marker_with_spaces_for_word_tokenizers():
    raw = {"data": {"tokenizer": "word", "score_after": "a b"}, "models": {"rnn": {"family": "rnn"}}}
    with pytest.raises(SeqlabError, match=r"data.score_after: 'a b': expected .* one word without spaces"):
        parse_params(raw)


def test_split_scores_count_only_the_masked_tokens():
    lp = np.log(np.array([0.5, 0.25, 0.125, 0.5, 0.25]))
    mask = np.array([0, 1, 1, 0, 1], np.uint8)
    got = split_scores([lp[:2], lp[2:]], chars=6, mask=mask)
    assert got["tokens"] == 3
    assert got["nll"] == pytest.approx(-(lp[1] + lp[2] + lp[4]) / 3)
    assert got["bpc"] == pytest.approx((2 + 3 + 2) / 6)


def test_the_windows_carry_their_targets_weights():
    ids = np.arange(2, 42, dtype=np.int32)
    mask = (np.arange(40) % 3 == 0).astype(np.uint8)
    x, y, w = next(windows_dataset(ids, np.array([0, 5]), 8, 2, mask).as_numpy_iterator())
    for row, off in enumerate([0, 5]):
        # target j of the window at stream offset o is ids[o + j]
        np.testing.assert_array_equal(y[row], ids[off:off + 8])
        np.testing.assert_array_equal(w[row], mask[off:off + 8])
    _, vy, vw = eval_windows(ids, 8, 40, mask)
    np.testing.assert_array_equal(vw.reshape(-1), mask[:vy.size])


def test_training_with_a_mask_learns_the_answers_and_reports_their_loss(tmp_path):
    """Lines 'x x x x x > a': the five noise tokens are uniform over 8 ids, the answer is a
    deterministic function of the first. Trained on the answers only, the validation loss (the
    mean over the answers) falls far below the noise's ln 8, which an unmasked mean could not."""
    from pipeline.models import build_model
    from pipeline.models.conv import ConvParams
    from pipeline.training.loop import train_model
    rng = np.random.default_rng(0)

    def split(lines):
        noise = rng.integers(2, 10, (lines, 5))
        rows = np.concatenate([noise, np.full((lines, 1), 10), noise[:, :1] + 10, np.full((lines, 1), 20)], axis=1)
        ids = rows.reshape(-1).astype(np.int32)
        return ids, scored_mask(ids, np.array([10]), 20)

    (train, train_mask), (valid, valid_mask) = split(2000), split(200)
    assert train_mask.mean() == pytest.approx(1 / 8)
    model = ConvParams(family="conv", embed_dim=16, units=32, kernel_size=2, dilations=[1, 2, 4])
    cfg = TrainParams(seq_len=32, batch_size=16, epochs=1, steps_per_epoch=120, steps_per_execution=20,
                      learning_rate=1e-2, warmup_steps=0, eval_tokens=1024)
    r = train_model(model, cfg, train, valid, 21, "h", 0, tmp_path / "ckpt", build_model,
                    train_mask=train_mask, valid_mask=valid_mask)
    assert r.history[-1]["valid_loss"] < 0.2 * math.log(8), r.history
    # the reported loss is the mean over the answers of the model's per-token losses
    vx, vy, vw = eval_windows(valid, 32, 1024, valid_mask)
    logits = np.asarray(r.model(vx, training=False), np.float64)
    nll = -np.take_along_axis(logits - np.log(np.exp(logits).sum(-1, keepdims=True)), vy[..., None], -1)[..., 0]
    assert r.history[-1]["valid_loss"] == pytest.approx(float((nll * vw).sum() / vw.sum()), rel=1e-4)
    with pytest.raises(SeqlabError, match="one mask value per token"):
        train_model(model, cfg, train, valid, 21, "h", 0, tmp_path / "ckpt2", build_model, train_mask=train_mask)
