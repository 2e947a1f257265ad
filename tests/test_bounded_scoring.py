"""Training and scoring read memory-mapped ids without building the split: the windows, the pieces of
log-probs, their metrics, and the memory that scoring holds."""
import tracemalloc

import numpy as np
import pytest

from pipeline.data.windows import eval_windows, epoch_offsets, stream_at, window_rows, with_bos
from pipeline.errors import SeqlabError
from pipeline.scoring.protocol import split_metrics, split_scores, window_plan
from pipeline.scoring.stream import log_softmax, stream_logprobs, stream_pieces

VOCAB = 19
SEQ_LEN = 24


def memmapped(tmp_path, ids, name="ids.npy") -> np.memmap:
    """``ids`` written as an int32 .npy and memory-mapped read-only, as ``load_prepared`` does."""
    out = np.lib.format.open_memmap(tmp_path / name, mode="w+", dtype=np.int32, shape=(len(ids),))
    out[:] = ids
    out.flush()
    del out
    ids = np.load(tmp_path / name, mmap_mode="r")
    assert isinstance(ids, np.memmap)
    return ids


def random_ids(n, seed=0):
    return np.random.default_rng(seed).integers(1, VOCAB, size=n).astype(np.int32)


# ---- windows -----------------------------------------------------------------------------------

def test_window_rows_are_slices_of_the_bos_stream(tmp_path):
    ids = memmapped(tmp_path, random_ids(50))
    stream = with_bos(ids)
    starts = [0, 1, 7, 50 - SEQ_LEN, 0]
    rows = window_rows(ids, starts, SEQ_LEN + 1)
    assert rows.dtype == np.int32 and rows.shape == (len(starts), SEQ_LEN + 1)
    for row, s in zip(rows, starts):
        np.testing.assert_array_equal(row, stream[s:s + SEQ_LEN + 1])
    np.testing.assert_array_equal(stream_at(ids, [[0, 50], [3, 1]]), [[stream[0], stream[50]], [stream[3], stream[1]]])
    with pytest.raises(SeqlabError, match="out of range"):
        window_rows(ids, [50 - SEQ_LEN + 1], SEQ_LEN + 1)


def test_windows_dataset_yields_the_given_windows_from_a_memmap(tmp_path):
    pytest.importorskip("tensorflow")
    from pipeline.data.windows import windows_dataset

    ids = memmapped(tmp_path, random_ids(200))
    stream = with_bos(ids)
    offsets = np.array([0, 17, 200 - SEQ_LEN, 3, 0, 99, 150])    # the last one: a partial batch, dropped
    ds = windows_dataset(ids, offsets, SEQ_LEN, batch_size=2)
    assert [tuple(s.shape) for s in ds.element_spec] == [(2, SEQ_LEN), (2, SEQ_LEN)]
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 3
    for i, (x, y) in enumerate(batches):
        for row, off in enumerate(offsets[2 * i:2 * i + 2]):
            window = stream[off:off + SEQ_LEN + 1]
            np.testing.assert_array_equal(x[row], window[:-1])
            np.testing.assert_array_equal(y[row], window[1:])


def test_train_dataset_draws_the_epoch_offsets_and_shards_them(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from pipeline.data.windows import train_dataset

    ids = memmapped(tmp_path, random_ids(300))
    stream = with_bos(ids)
    steps, batch, seed, epoch = 3, 8, 4, 2
    offsets = epoch_offsets(len(ids), SEQ_LEN, steps * batch, seed, epoch).reshape(steps, batch)
    got = list(train_dataset(ids, SEQ_LEN, batch, steps, seed, epoch).as_numpy_iterator())
    assert len(got) == steps
    for (x, y), offs in zip(got, offsets):
        np.testing.assert_array_equal(x, np.stack([stream[o:o + SEQ_LEN] for o in offs]))
        np.testing.assert_array_equal(y, np.stack([stream[o + 1:o + SEQ_LEN + 1] for o in offs]))
    # 2 workers x 2 replicas: each pipeline yields its half of every global batch as 2 per-replica batches
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=4)
        shard = list(train_dataset(ids, SEQ_LEN, batch, steps, seed, epoch, context).as_numpy_iterator())
        assert len(shard) == 2 * steps
        for step in range(steps):
            x = np.concatenate([shard[2 * step][0], shard[2 * step + 1][0]])
            np.testing.assert_array_equal(x, got[step][0][4 * worker:4 * worker + 4])


def test_eval_windows_read_only_the_first_tokens():
    ids = random_ids(1000)

    class Guarded:
        """Only slices ending by ``limit`` may be read."""
        def __len__(self):
            return len(ids)

        def __getitem__(self, key):
            assert isinstance(key, slice) and key.stop is not None and key.stop <= 100, key
            return ids[key]

    x, y, _ = eval_windows(Guarded(), 10, 100)
    np.testing.assert_array_equal(x.reshape(-1), with_bos(ids)[:100])
    np.testing.assert_array_equal(y.reshape(-1), ids[:100])


# ---- bounded scoring equals the array forms -----------------------------------------------------

_NETWORKS = {}


def network(family):
    """A tiny trained-shape network of ``family`` (random weights), built once."""
    keras = pytest.importorskip("keras")
    from pipeline.models import build_model
    from pipeline.models.network import Network
    from tests.tiny_models import tiny_cfg

    if family not in _NETWORKS:
        keras.utils.set_random_seed(3)
        cfg = tiny_cfg(family)
        _NETWORKS[family] = Network(build_model(cfg, VOCAB, SEQ_LEN), cfg, SEQ_LEN, VOCAB)
    return _NETWORKS[family]


def reference_logprobs(net, ids, stride):
    """The obvious whole-array computation: a full forward pass (stream), or every window of the plan
    scored on its own (sliding window)."""
    from pipeline.models.family import STREAM
    from pipeline.models.catalog import family_of

    stream = with_bos(ids)
    if family_of(net.cfg).protocol == STREAM:
        return log_softmax(np.array(net.model(stream[None, :-1], training=False)))[0][np.arange(len(ids)), ids]
    out = np.full(len(ids), np.nan)
    for s, first, end in window_plan(len(ids), SEQ_LEN, stride):
        lp = log_softmax(np.array(net.model(stream[None, s:end], training=False)))[0]
        out[first:end] = lp[np.arange(first - s, end - s), stream[first + 1:end + 1]]
    return out


@pytest.mark.parametrize("family", ["gru", "conv", "transformer"])
def test_bounded_metrics_equal_the_array_metrics(tmp_path, family):
    from pipeline.scoring.protocol import network_logprobs, network_pieces

    net = network(family)
    n = 700
    ids = memmapped(tmp_path, random_ids(n, seed=1))
    pieces, protocol = network_pieces(net, ids, 0.5, 4)
    pieces = list(pieces)
    bound = 256 if protocol["protocol"] == "stream" else 4 * SEQ_LEN      # a chunk, or a batch of windows
    assert len(pieces) > 1 and max(len(p) for p in pieces) <= bound
    assert all(p.dtype == np.float64 for p in pieces)
    bounded = split_scores(iter(pieces), chars=2 * n)
    lp, protocol_array = network_logprobs(net, np.array(ids), 0.5, 4)   # in memory
    assert protocol_array == protocol
    np.testing.assert_array_equal(np.concatenate(pieces), lp)
    array = split_metrics(lp, chars=2 * n)
    assert bounded["tokens"] == array["tokens"] == n
    for key in ("nll", "ppl", "bpc"):
        assert bounded[key] == pytest.approx(array[key], rel=1e-9)
    np.testing.assert_allclose(lp, reference_logprobs(net, ids, protocol.get("stride", 0)), atol=1e-4)


def test_stream_pieces_continue_the_state_across_pieces(tmp_path):
    stepper = network("gru").stepper()
    ids = memmapped(tmp_path, random_ids(100, seed=2))
    pieces = list(stream_pieces(stepper, ids, chunk=7))
    assert [len(p) for p in pieces] == [7] * 14 + [2]
    np.testing.assert_allclose(np.concatenate(pieces), reference_logprobs(network("gru"), ids, 0), atol=1e-4)
    np.testing.assert_array_equal(np.concatenate(pieces), stream_logprobs(stepper, ids, chunk=7))
    assert list(stream_pieces(stepper, ids[:0])) == [] and stream_logprobs(stepper, ids[:0]).shape == (0,)
    assert split_scores(iter(()), chars=0)["tokens"] == 0


# ---- memory ---------------------------------------------------------------------------------------

class BigramStepper:
    """A numpy stream stepper (logits from the previous token, state: positions seen), fast enough to
    score millions of tokens in a test."""
    max_context = None

    def __init__(self, vocab):
        self.table = np.random.default_rng(0).normal(size=(vocab, vocab)).astype(np.float32)

    def initial_state(self, batch_size):
        return np.zeros((batch_size,), np.int64)

    def __call__(self, ids, state):
        return self.table[ids], state + ids.shape[1]


def peak_traced_bytes(fn):
    """(result, peak bytes traced by tracemalloc, numpy's buffers included) while ``fn()`` runs."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_scoring_a_large_memmapped_split_holds_one_piece(tmp_path):
    n = 2_000_000
    ids = memmapped(tmp_path, random_ids(n, seed=3))
    stepper = BigramStepper(VOCAB)
    metrics, peak = peak_traced_bytes(lambda: split_scores(stream_pieces(stepper, ids), chars=n))
    assert peak < n * 8 / 4, f"peak {peak} bytes traced while scoring {n} tokens"
    table = log_softmax(stepper.table)
    expected = split_metrics(table[with_bos(ids)[:-1], ids], chars=n)
    assert metrics["tokens"] == n
    assert metrics["nll"] == pytest.approx(expected["nll"], rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gru", "transformer"])
def test_evaluate_path_memory_on_a_large_split(tmp_path, family):
    """The evaluate stage's own path (``network_pieces``, default chunking) with a real network."""
    from pipeline.scoring.protocol import network_pieces

    n = 2_000_000
    ids = memmapped(tmp_path, random_ids(n, seed=4))
    net = network(family)
    split_scores(network_pieces(net, ids[:1000], 0.5, 32)[0], chars=1000)   # traced and compiled first
    metrics, peak = peak_traced_bytes(lambda: split_scores(network_pieces(net, ids, 0.5, 32)[0], chars=n))
    assert metrics["tokens"] == n and np.isfinite(metrics["nll"])
    assert peak < n * 8 / 4, f"peak {peak} bytes traced while scoring {n} tokens"
