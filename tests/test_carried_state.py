"""Truncated BPTT with the state carried (``train.state: carried``), best-checkpoint keeping, the
per-epoch validation of stream families, and the recurrent regularisers.

- the tracks: consecutive steps read consecutive windows of each track, and a pass resets;
- the training step's forward from the carried state equals one long forward over the track;
- a run stopped after an epoch resumes with the same tracks and states (equal final weights);
- the validation of a stream family is the stream score of the first ``eval_tokens``;
- ``train.keep: best`` ends with the best epoch's weights; ``train.ema`` with the weights' moving average;
- in examples mode, tracks of whole examples, the state reset where each example starts;
- tied embeddings and the parameter checks.
The two-replica and two-worker runs are in ``test_distribute.py``.
"""
import numpy as np
import pytest

from pipeline.config.params import TrainParams
from pipeline.data.examples import example_ends, example_rows
from pipeline.data.tracks import ExampleTracks, track_length, track_offsets, windows_per_track
from pipeline.data.windows import carried_dataset, with_bos
from pipeline.errors import SeqlabError
from pipeline.models import build_model
from pipeline.models.family import ParamError
from pipeline.models.catalog import get_family
from pipeline.training import loop
from pipeline.training.loop import train_model
from pipeline.training.runtime import resolve_state
from tests.tiny_models import tiny_cfg

V = 23


def _ids(n, seed=0):
    return np.random.default_rng(seed).integers(3, V, n).astype(np.int32)


def test_tracks_are_consecutive_windows_and_a_pass_resets():
    n, T, B = 1000, 7, 4
    per, length = windows_per_track(n, T, B), track_length(n, B)
    assert (per, length) == (35, 250)
    offsets, keep = track_offsets(n, T, B, 0, 2 * per + 3)
    assert offsets.max() + T <= n                                   # every window inside [BOS] + ids
    np.testing.assert_array_equal(offsets[1:per] - offsets[:per - 1], T)   # contiguous within a pass
    np.testing.assert_array_equal(offsets[:, 1] - offsets[:, 0], length)  # one track per row
    assert keep.shape == offsets.shape and (keep == keep[:, :1]).all()          # every track's pass ends together
    np.testing.assert_array_equal(np.flatnonzero(keep[:, 0] == 0), [0, per, 2 * per])
    later, later_keep = track_offsets(n, T, B, per + 1, 5)           # a step's windows follow from its number
    np.testing.assert_array_equal(later, offsets[per + 1:per + 6])
    np.testing.assert_array_equal(later_keep, keep[per + 1:per + 6])
    with pytest.raises(SeqlabError, match="train.batch_size"):
        windows_per_track(100, 30, 8)


def test_carried_batches_read_the_tracks(tmp_path):
    ids, T, B, steps = _ids(600), 8, 3, 5
    batches = list(carried_dataset(ids, T, B, steps, epoch=1))
    stream, length = with_bos(ids), track_length(len(ids), B)
    per = windows_per_track(len(ids), T, B)
    for s, (x, y, w, keep) in enumerate(batches):
        k = (steps + s) % per
        for b in range(B):
            at = b * length + k * T
            np.testing.assert_array_equal(x.numpy()[b], stream[at:at + T])
            np.testing.assert_array_equal(y.numpy()[b], stream[at + 1:at + T + 1])
        assert np.all(keep.numpy() == float(k != 0)) and np.all(w.numpy() == 1)


@pytest.mark.parametrize("family", ["lstm", "gru", "rnn"])
def test_carried_forward_equals_one_long_forward(family):
    """The training step's forward (``token_losses`` from ``CarriedState.read``, then ``write``) over a
    pass of consecutive windows gives the logits of one forward over each whole track."""
    import tensorflow as tf
    from pipeline.training.carried import CarriedState
    ids, T, B = _ids(400, 1), 6, 2
    cfg = tiny_cfg(family, dropout=0.0)
    model = build_model(cfg, V, T)
    carried = CarriedState(model, tf.distribute.get_strategy(), B)
    per, length = windows_per_track(len(ids), T, B), track_length(len(ids), B)
    pieces = []
    for x, _, _, keep in carried_dataset(ids, T, B, per, epoch=0):
        logits, new = model.call_with_cache(x, cache=carried.read(keep), training=False)
        carried.write(new)
        pieces.append(np.asarray(logits))
    stream = with_bos(ids)
    whole = np.asarray(model(np.stack([stream[b * length:b * length + per * T] for b in range(B)])))
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, atol=2e-5)
    # the next pass starts afresh: its first window gives the fresh forward's logits
    x, _, _, keep = next(iter(carried_dataset(ids, T, B, per, epoch=1)))   # steps per .. 2 per - 1
    assert not np.any(keep.numpy())
    logits, _ = model.call_with_cache(x, cache=carried.read(keep), training=False)
    np.testing.assert_allclose(np.asarray(logits), whole[:, :T], atol=2e-5)


def _examples(n_examples, seed=4):
    """Ids of ``n_examples`` lines of 1-40 tokens (3 ends a line) and their starts."""
    rng = np.random.default_rng(seed)
    lines = [np.append(rng.integers(4, V, rng.integers(0, 40)), 3) for _ in range(n_examples)]
    starts = np.cumsum([0] + [len(x) for x in lines[:-1]]).astype(np.int64)
    return np.concatenate(lines).astype(np.int32), starts


def test_example_tracks_read_each_example_once_in_order():
    ids, starts = _examples(50)
    T, B = 8, 4
    tracks = ExampleTracks(starts, len(ids), T, B)
    ends = example_ends(starts, len(ids))
    assert tracks.count.sum() == len(tracks.rows) == int(np.sum(-(-(ends - starts) // T)))
    assert tracks.density == pytest.approx(len(ids) / (len(tracks.rows) * T))
    seen = []
    for b in range(B):   # each track: its examples' windows in order, each window inside one example
        rows, keep = tracks.batches(0, int(tracks.count[b]))
        for (first, a, e), k in zip(rows[:, b], keep[:, b]):
            assert a <= first < e and (k == 0) == (first == a)
            if first == a:
                seen.append(a)
            else:
                assert seen[-1] == a    # the next window of the example the state was carried from
    assert seen == starts.tolist()
    rows, _ = tracks.batches(int(tracks.count[0]), 1)     # a track starts again after its last window
    np.testing.assert_array_equal(rows[0, 0], tracks.rows[0])
    with pytest.raises(SeqlabError, match="train.batch_size"):
        ExampleTracks(starts[:3], int(starts[3]), 64, 4)


def test_carried_examples_equal_each_examples_own_forward():
    """Row by row the carried windows of an example give the logits of one forward over that example
    from its own <bos>: nothing leaks from the example before it in the track."""
    import tensorflow as tf
    from pipeline.training.carried import CarriedState
    ids, starts = _examples(24, seed=5)
    T, B = 8, 3
    model = build_model(tiny_cfg("lstm", dropout=0.0), V, T)
    carried = CarriedState(model, tf.distribute.get_strategy(), B)
    tracks = ExampleTracks(starts, len(ids), T, B)
    steps = int(tracks.count.max())
    rows, _ = tracks.batches(0, steps)
    got = {}
    for s, (x, y, w, keep) in enumerate(carried_dataset(ids, T, B, steps, epoch=0, starts=starts)):
        logits, new = model.call_with_cache(x, cache=carried.read(keep), training=False)
        carried.write(new)
        for b in range(B):
            first, a, e = rows[s, b]
            if s < tracks.count[b]:
                n = int(w.numpy()[b].sum())
                got.setdefault(int(a), []).append(np.asarray(logits)[b, :n])
    for a, e in zip(starts, example_ends(starts, len(ids))):
        stream, _ = example_rows(ids, [(a, a, e)], int(e - a) + 1)
        whole = np.asarray(model(stream[:, :-1]))[0]
        np.testing.assert_allclose(np.concatenate(got[int(a)]), whole, atol=2e-5)


def test_examples_mode_trains_carried_and_validates_per_example(tmp_path):
    import tensorflow as tf
    ids, starts = _examples(300, seed=6)
    valid, vstarts = _examples(40, seed=7)
    t = TrainParams(seq_len=16, batch_size=4, epochs=1, steps_per_epoch=6, steps_per_execution=3, eval_tokens=300,
                    state="carried", precision="float32")
    r = train_model(tiny_cfg("gru", dropout=0.0), t, ids, valid, V, "h", 0, tmp_path / "ex", build_model,
                    train_starts=starts, valid_starts=vstarts)
    assert r.settings["state"] == "carried"
    total, n = 0.0, 0   # the whole examples within eval_tokens, each from its own <bos>
    for a, e in zip(vstarts, example_ends(vstarts, len(valid))):
        if e > 300:
            break
        stream, _ = example_rows(valid, [(a, a, e)], int(e - a) + 1)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=stream[:, 1:], logits=r.model(stream[:, :-1]))
        total, n = total + float(tf.reduce_sum(nll)), n + int(e - a)
    assert r.history[-1]["valid_loss"] == pytest.approx(total / n, abs=1e-5)


def _train(tmp_path, name, cfg=None, on_epoch=None, **train):
    ids = _ids(3000, 2)
    t = TrainParams(**({"seq_len": 12, "batch_size": 4, "epochs": 3, "steps_per_epoch": 5, "steps_per_execution": 5,
                        "warmup_steps": 0, "learning_rate": 1e-2, "eval_tokens": 200, "precision": "float32"} | train))
    return train_model(cfg or tiny_cfg("lstm", dropout=0.0), t, ids, _ids(300, 3), V, "h", 0, tmp_path / name,
                       build_model, on_epoch=on_epoch)


def _weights(result):
    return [np.asarray(w) for w in result.model.get_weights()]


def test_a_stopped_run_resumes_with_its_tracks_and_states(tmp_path):
    """Stopped after epoch 1's checkpoint (mid-pass: a pass is 62 steps), the rerun continues the same
    tracks from the saved states and ends with the uninterrupted run's weights; zeroed states would not."""
    whole = _train(tmp_path, "whole")
    assert whole.settings["state"] == "carried"

    class Stop(Exception):
        pass

    def stop_at_2(row):   # before epoch 2's checkpoint is written
        if row["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        _train(tmp_path, "stopped", on_epoch=stop_at_2)
    saved = np.load(tmp_path / "stopped" / "last.npz")
    assert saved["s0"].shape == (4, 16) and np.abs(saved["s0"]).max() > 0   # the tracks' states after epoch 1
    resumed = _train(tmp_path, "stopped")
    assert resumed.resumed_from_epoch == 1 and resumed.steps_run == 10
    for a, b in zip(_weights(whole), _weights(resumed)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert [h["valid_loss"] for h in resumed.history] == pytest.approx([h["valid_loss"] for h in whole.history])

    with pytest.raises(Stop):   # the same, with the saved states zeroed: another run
        _train(tmp_path, "zeroed", on_epoch=stop_at_2)
    path = tmp_path / "zeroed" / "last.npz"
    with np.load(path) as z:
        arrays = {k: (np.zeros_like(z[k]) if k.startswith("s") else z[k]) for k in z.files}
    np.savez(path, **arrays)
    zeroed = _train(tmp_path, "zeroed")
    assert max(float(np.abs(a - b).max()) for a, b in zip(_weights(whole), _weights(zeroed))) > 1e-4


def test_stream_family_validation_is_the_stream_score(tmp_path):
    """The per-epoch validation loss of a stream family is the mean NLL of the first eval_tokens
    scored as one stream from <bos> (one forward here), not of windows from a zero state."""
    import tensorflow as tf
    r = _train(tmp_path, "v", epochs=1)
    valid = _ids(300, 3)[:200]
    logits = r.model(with_bos(valid)[None, :-1])
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=valid[None], logits=logits)
    assert r.history[-1]["valid_loss"] == pytest.approx(float(tf.reduce_mean(nll)), abs=1e-5)


def test_keep_best_ends_with_the_best_epochs_weights(tmp_path, monkeypatch):
    losses, seen = iter([2.0, 1.0, 1.5]), []
    monkeypatch.setattr(loop.TrainingRun, "validation", lambda self: lambda: next(losses))
    end_epoch = loop.TrainingRun.end_epoch

    def record(self, row, kept=None):
        seen.append([v.numpy().copy() for v in self.model_vars])
        end_epoch(self, row, kept)

    monkeypatch.setattr(loop.TrainingRun, "end_epoch", record)
    r = _train(tmp_path, "best", keep="best", state="windows")
    assert r.settings["kept_epoch"] == 2 and r.settings["state"] == "windows"
    for a, b in zip(seen[1], [v.numpy() for v in r.model.variables]):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(seen[2], seen[1]))


def test_ema_validates_and_ends_with_the_moving_average_of_the_weights(tmp_path):
    """With ``train.ema`` the training itself is unchanged (the same losses: validation puts the
    trained weights back), each epoch validates the moving average, and the run ends with it."""
    import tensorflow as tf
    plain, ema = _train(tmp_path, "plain", epochs=2), _train(tmp_path, "ema", epochs=2, ema=0.8)
    assert [h["train_loss"] for h in ema.history] == [h["train_loss"] for h in plain.history]
    assert ema.history[-1]["valid_loss"] != plain.history[-1]["valid_loss"]
    assert not any(np.allclose(a, b) for a, b in zip(_weights(ema), _weights(plain)) if a.size > 1)
    valid = _ids(300, 3)[:200]
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=valid[None], logits=ema.model(with_bos(valid)[None, :-1]))
    assert ema.history[-1]["valid_loss"] == pytest.approx(float(tf.reduce_mean(nll)), abs=1e-5)


def test_state_settings_that_cannot_apply_are_refused(tmp_path):
    with pytest.raises(SeqlabError, match="train.state: carried: family 'conv'"):
        _train(tmp_path, "c", cfg=tiny_cfg("conv"), state="carried", epochs=1)
    resolved = {(f, examples): resolve_state("auto", get_family(f), build_model(tiny_cfg(f), V, 8), examples)
                for f in ("lstm", "transformer") for examples in (False, True)}
    assert resolved == {("lstm", False): "carried", ("lstm", True): "windows",
                        ("transformer", False): "windows", ("transformer", True): "windows"}


def test_tied_embeddings():
    with pytest.raises(ParamError, match="tie_embeddings"):
        get_family("lstm").check(tiny_cfg("lstm", tie_embeddings=True))
    cfg = tiny_cfg("gru", units=12, tie_embeddings=True, embed_dropout=0.2, recurrent_dropout=0.1)
    get_family("gru").check(cfg)
    model = build_model(cfg, V, 8)
    names = [v.path for v in model.trainable_variables]
    assert not any("logits" in n for n in names), names
    ids = _ids(16).reshape(2, 8)
    h = model.rnns[-1](model.rnns[0](model.embedding(ids))[0])[0]
    table = model.embedding.embeddings.numpy()
    expected = np.asarray(h) @ table.T + model.embedding.output_bias.numpy()
    np.testing.assert_allclose(np.asarray(model(ids)), expected, atol=1e-5)
