"""The Kneser-Ney model of :class:`pipeline.models.ngram.KneserNeyLM`, built within a memory budget.

``KneserNeyLM.fit`` holds every array of every order at once (about 200 bytes per training token).
:func:`build_kneser_ney` computes the same arrays, bit for bit, with every array the size of the
corpus or of an order on disk, and only pieces of them in memory, as KenLM's ``lmplz -S`` does:

* counting, order by order: the positions are cut into chunks; each chunk's n-gram keys
  (``id_{k-1}(prefix) * V + last``) are sorted and counted (a sorted run on disk), the runs are
  merged (blockwise k-way merge), which gives each run's keys their global ranks, and so every
  position its order-k id;
* adjusted counts: a bincount of the suffix ids of order k+1, one block of order-k ids at a time;
* probabilities: entries in pieces that never cut a context in two (so every context's sums run in
  the order ``np.bincount`` sums them in the in-memory path), the lower order's probabilities held
  when they take at most half the budget, else gathered one block at a time.

Chunks are counted, and pieces computed, ``THREADS`` at a time: numpy's sorts and most array
operations release the GIL, so both cores work (WikiText-2 x10, one profiled run each: 46.8 s on
one thread, 37.3 s with counting on two, 31.3 s with the probabilities on two as well).

With a budget that holds everything, every loop runs once and does what ``fit`` does. The model is
written straight into the ``.npz`` format of :meth:`KneserNeyLM.save` (same bytes) and read back
with ``KneserNeyLM.load(path, mmap=True)``. Numpy only.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.data.vocab_layout import BOS_ID
from pipeline.models.ngram import (KneserNeyLM, _unique_inverse, kn_discounts, model_metadata,
                                   unigram_probs, write_model_file)

__all__ = ["build_kneser_ney", "DiskArray"]

BYTES_PER_POSITION = 112   # working set of one counted position (keys, sort, inverse, ids), measured
BYTES_PER_ENTRY = 192      # working set of one n-gram while its probability is computed
THREADS = 2                # chunks counted at once (numpy's sorts run without the GIL)


def build_disk_bytes(tokens: int, order: int) -> float:
    """Disk the build may need at most: 32 bytes per position (the padded stream, two orders' ids,
    a chunk inverse) and 72 per stored n-gram (keys, counts, suffixes, adjusted counts,
    probabilities, backoffs and the model file), with at most one new n-gram per position and order."""
    return 32.0 * tokens + 72.0 * max(order - 1, 1) * tokens


class DiskArray:
    """A 1-D array in a raw file, read and written by explicit slices (no memory map, so pages
    read once do not stay in the process's resident set)."""

    def __init__(self, path: Path, dtype, length: int):
        self.path, self.dtype, self.length = Path(path), np.dtype(dtype), int(length)
        with open(self.path, "wb") as f:
            f.truncate(self.length * self.dtype.itemsize)      # zeros, written over by slices

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.length if stop is None else min(stop, self.length)
        if stop <= start:
            return np.zeros(0, self.dtype)
        with open(self.path, "rb") as f:
            f.seek(start * self.dtype.itemsize)
            return np.fromfile(f, self.dtype, stop - start)

    def write(self, start: int, values: np.ndarray) -> None:
        with open(self.path, "r+b") as f:
            f.seek(start * self.dtype.itemsize)
            np.ascontiguousarray(values, self.dtype).tofile(f)

    def blocks(self, size: int, start: int = 0):
        """(start, values) of consecutive blocks of at most ``size`` entries, from ``start`` on."""
        for a in range(start, self.length, max(1, size)):
            yield a, self.read(a, a + size)


class _Appender:
    """Sequentially written raw file; ``array()`` opens it as a :class:`DiskArray`."""

    def __init__(self, path: Path, dtype):
        self.path, self.dtype, self.length = Path(path), np.dtype(dtype), 0
        self._f = open(self.path, "wb")

    def add(self, values) -> None:
        a = np.ascontiguousarray(values, self.dtype)
        a.tofile(self._f)
        self.length += a.size

    def array(self) -> DiskArray:
        self._f.close()
        out = DiskArray.__new__(DiskArray)
        out.path, out.dtype, out.length = self.path, self.dtype, self.length
        return out


class _Progress:
    def __init__(self, enabled: bool):
        self.enabled, self.t0, self.last = enabled, time.perf_counter(), 0.0

    def __call__(self, msg: str, done: float | None = None, force: bool = True) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self.last < 5):
            return
        self.last = now
        eta = ""
        if done is not None and 0 < done < 1:
            eta = f", ETA {(now - self.t0) * (1 - done) / done:.0f}s"
        print(f"[ngram] {msg} ({now - self.t0:.2f}s{eta})", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# the padded stream

def _write_padded(tokens, boundary_id: int | None, path: Path, chunk: int) -> DiskArray:
    """BOS + stream, with a BOS after every boundary token but a final one (``KneserNeyLM._pad``)."""
    out = _Appender(path, np.int32)                 # ids < vocab_size < 2^31
    out.add(np.array([BOS_ID]))
    n = len(tokens)
    for a in range(0, n, chunk):
        t = np.asarray(tokens[a:a + chunk], dtype=np.int64)
        if boundary_id is not None:
            cut = np.flatnonzero(t == boundary_id) + 1
            if a + t.size == n and cut.size and cut[-1] == t.size:
                cut = cut[:-1]                      # no BOS after a final boundary
            t = np.insert(t, cut, BOS_ID)
        out.add(t)
    return out.array()


# ----------------------------------------------------------------------------------------------
# merging sorted runs

def _merge_runs(runs: list[tuple[DiskArray, DiskArray, DiskArray]], block: int, out_dir: Path, k: int,
                with_ranks: bool):
    """k-way merge of sorted (key, count, suffix) runs: keys unique, counts summed, suffix kept;
    with ``with_ranks``, also each run's keys' global ranks (a file per run, in the run's order).

    Each round takes, from every run's loaded block, the keys up to the smallest last loaded key
    (everything that can come next), and reduces them; a run's block is refilled when used up."""
    keys_o = _Appender(out_dir / f"keys_{k}.bin", np.int64)
    cnt_o = _Appender(out_dir / f"raw_{k}.bin", np.int64)
    suf_o = _Appender(out_dir / f"suffix_{k}.bin", np.int64)
    rank_o = [_Appender(out_dir / f"rank{k}_{i}.bin", np.int64) for i in range(len(runs))] if with_ranks else []
    base = 0
    pos = [0] * len(runs)
    buf = [None] * len(runs)

    def fill(i):
        kk, cc, ss = runs[i]
        a = pos[i]
        buf[i] = (kk.read(a, a + block), cc.read(a, a + block), ss.read(a, a + block))
        pos[i] = a + buf[i][0].size

    for i in range(len(runs)):
        fill(i)
    while True:
        live = [i for i in range(len(runs)) if buf[i][0].size]
        if not live:
            break
        bound = min(int(buf[i][0][-1]) for i in live)
        parts, owners = [], []
        for i in live:
            kk, cc, ss = buf[i]
            cut = int(np.searchsorted(kk, bound, side="right"))
            parts.append((kk[:cut], cc[:cut], ss[:cut]))
            owners.append(i)
            buf[i] = (kk[cut:], cc[cut:], ss[cut:])
            if buf[i][0].size == 0:
                fill(i)
        kk = np.concatenate([p[0] for p in parts])
        cc = np.concatenate([p[1] for p in parts])
        ss = np.concatenate([p[2] for p in parts])
        order = np.argsort(kk, kind="stable")
        kk, cc, ss = kk[order], cc[order], ss[order]
        start = np.ones(kk.size, bool)
        np.not_equal(kk[1:], kk[:-1], out=start[1:])
        idx = np.flatnonzero(start)
        keys_o.add(kk[idx])
        cnt_o.add(np.add.reduceat(cc, idx))
        suf_o.add(ss[idx])
        if with_ranks:
            rank = np.empty(kk.size, np.int64)
            rank[order] = base + np.cumsum(start, dtype=np.int64) - 1
            at = 0
            for i, part in zip(owners, parts):
                rank_o[i].add(rank[at:at + part[0].size])
                at += part[0].size
        base += idx.size
    return keys_o.array(), cnt_o.array(), suf_o.array(), [r.array() for r in rank_o]


# ----------------------------------------------------------------------------------------------

def build_kneser_ney(tokens, vocab_size: int, order: int, path, boundary_id: int | None = None,
                     memory_mb: int = 2048, tmp_dir=None, progress: bool = False,
                     chunk: int | None = None, block: int | None = None) -> dict:
    """Build the order-``order`` model of ``tokens`` (any 1-D int array, e.g. a memory map) into the
    ``.npz`` file ``path``, using about ``memory_mb`` of working memory and temporary files in
    ``tmp_dir`` (removed on success and failure). Returns its metadata (``num_ngrams``, ...).
    ``chunk`` (positions counted at once) and ``block`` (entries read at once) follow from the
    budget unless given (tests give tiny ones)."""
    KneserNeyLM._check_args(vocab_size, order, boundary_id)
    V, N = int(vocab_size), int(order)
    budget = max(16, int(memory_mb)) << 20
    chunk = int(chunk or budget // (BYTES_PER_POSITION * THREADS))
    block = int(block or budget // 64)
    entries = max(1, chunk * THREADS * BYTES_PER_POSITION // BYTES_PER_ENTRY)
    say = _Progress(progress)
    n_tokens = len(tokens)
    if n_tokens:
        lo, hi = int(np.min(tokens)), int(np.max(tokens))   # one pass; a memory map stays on disk
        if lo < 0 or hi >= V:
            raise ValueError(f"token ids must lie in [0, {V}), got range [{lo}, {hi}]")
        if lo == BOS_ID:
            raise ValueError("the stream contains BOS_ID (0): BOS is only a context, never a token "
                             "of the stream (use boundary_id for sentence resets)")
    work = Path(tempfile.mkdtemp(prefix=".seqlab-ngram.", dir=tmp_dir))
    try:
        aug = _write_padded(tokens, boundary_id, work / "aug.bin", chunk)
        M = aug.length
        if M * V >= 2 ** 62:
            raise ValueError(f"{M:,} positions x vocabulary {V:,} overflows the int64 n-gram keys")
        say(f"stream: {n_tokens:,} tokens, {M - n_tokens:,} BOS pads, vocab {V:,}, order {N}, "
            f"budget {memory_mb} MB, chunks of {chunk:,} positions")
        counts = _count(aug, V, N, chunk, block, work, say)
        meta = _estimate(counts, V, N, boundary_id, entries, block, work, Path(path), say)
        say(f"built {sum(meta['num_ngrams'].values()):,} n-grams; discounts fell back for orders "
            f"{meta['fallback_orders']}")
        return meta
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _count(aug: DiskArray, V: int, N: int, chunk: int, block: int, work: Path, say) -> dict:
    """Per order: sorted unique keys, raw counts and suffix ids (files); unigram raw counts."""
    M = aug.length
    raw1 = np.zeros(V, np.int64)
    for _, a in aug.blocks(chunk):
        raw1 += np.bincount(a[a != BOS_ID], minlength=V)
    out = {"raw_1": raw1, "n_1": V}
    ids_prev = aug                                  # the order-1 id of the gram ending at p is its token
    for k in range(2, N + 1):
        single = M - 1 <= chunk * THREADS           # one chunk, alone: it may take every thread's share
        ids_k = None
        if k < N:                                   # ranks < M; every chunk writes its positions
            ids_k = DiskArray(work / f"ids_{k}.bin", np.int32 if M < 2 ** 31 else np.int64, M)
            ids_k.write(0, np.array([-1]))

        def count_chunk(c: int, a: int, b: int):
            """Sort and count the keys of positions [a, b): a run (or the order itself if single)."""
            prev_all = ids_prev.read(a - 1, b)          # ids_{k-1} at p-1 .. b-1
            cur = aug.read(a, b)
            pre, here = prev_all[:-1], prev_all[1:]
            at = np.flatnonzero((pre >= 0) & (cur != BOS_ID))
            q = pre[at].astype(np.int64) * V + cur[at]
            del prev_all, pre, cur
            uniq, inv, first = _unique_inverse(q)
            del q
            cnt = np.bincount(inv, minlength=uniq.size).astype(np.int64)
            suf = here[at[first]].astype(np.int64)
            del here, first
            name = f"{k}" if single else f"run{k}_{c}"
            run = tuple(_stored(work / f"{n}_{name}.bin", x) for n, x in
                        (("keys", uniq), ("raw", cnt), ("suffix", suf)))
            inv_file = None
            if ids_k is not None:
                if single:
                    ids = np.full(b - a, -1, ids_k.dtype)
                    ids[at] = inv
                    ids_k.write(a, ids)
                else:
                    inv_file = _stored(work / f"inv{k}_{c}.bin", inv.astype(np.int32))   # < chunk
            say(f"order {k}: counted {b:,} of {M:,} positions", done=((k - 2) + b / M) / (N - 1), force=False)
            return run, (a, b, inv_file)

        if single:
            (keys, raw, suffix), _ = count_chunk(0, 1, M)
        else:                                       # numpy sorts without the GIL: chunks side by side
            starts = list(range(1, M, chunk))
            with ThreadPoolExecutor(THREADS) as pool:
                done = list(pool.map(count_chunk, range(len(starts)), starts,
                                     [min(M, a + chunk) for a in starts]))
            runs = [r for r, _ in done]
            local = [l for _, l in done]
        if not single:
            keys, raw, suffix, ranks = _merge_runs(runs, max(1, block // (3 * len(runs))), work, k,
                                                   with_ranks=ids_k is not None)
            if ids_k is not None:
                _assign_ids(ids_k, aug, ids_prev, local, ranks)
            for run in runs:
                for f in run:
                    f.path.unlink()
        out.update({f"keys_{k}": keys, f"raw_{k}": raw, f"suffix_{k}": suffix, f"n_{k}": keys.length})
        if ids_prev is not aug:
            ids_prev.path.unlink()
        ids_prev = ids_k
        say(f"order {k}: {keys.length:,} distinct n-grams")
    return out


def _assign_ids(ids_k: DiskArray, aug: DiskArray, ids_prev: DiskArray, local, ranks: list[DiskArray]) -> None:
    """Every position's order-k id: the global rank (from the merge) of its chunk's key, which the
    chunk's inverse map (saved while counting) names."""
    for (a, b, inv_file), rank_file in zip(local, ranks):
        pre = ids_prev.read(a - 1, b - 1)
        at = np.flatnonzero((pre >= 0) & (aug.read(a, b) != BOS_ID))
        ids = np.full(b - a, -1, ids_k.dtype)
        ids[at] = rank_file.read()[inv_file.read()]
        ids_k.write(a, ids)
        inv_file.path.unlink()
        rank_file.path.unlink()


def _stored(path: Path, values: np.ndarray) -> DiskArray:
    out = _Appender(path, values.dtype)
    out.add(values)
    return out.array()


# ----------------------------------------------------------------------------------------------
# adjusted counts, discounts, probabilities

def _prefix_below(keys: DiskArray, bound: int, block: int) -> int:
    """How many of the sorted ``keys`` are below ``bound`` (they come first)."""
    n = 0
    for a, kk in keys.blocks(block):
        c = int(np.searchsorted(kk, bound))
        n = a + c
        if c < kk.size:
            break
    return n


def _adjusted(counts: dict, k: int, N: int, n_bos: int, work: Path, block: int) -> DiskArray:
    """Order-k adjusted counts: distinct left extensions (suffix ids of order k+1 counted), but
    raw counts for the ``n_bos`` BOS-initial n-grams, which come first; order N keeps raw counts."""
    if k == N:
        return counts[f"raw_{N}"]
    n_k = counts[f"n_{k}"]
    out = _Appender(work / f"adj_{k}.bin", np.int64)
    suffix = counts[f"suffix_{k + 1}"]
    span = block
    for r0 in range(0, n_k, span):
        r1 = min(n_k, r0 + span)
        acc = np.zeros(r1 - r0, np.int64)
        for _, s in suffix.blocks(block):
            if r0 or r1 < n_k:
                s = s[(s >= r0) & (s < r1)] - r0
            acc += np.bincount(s, minlength=r1 - r0)
        if r0 < n_bos:
            raw = counts["raw_1"][r0:min(r1, n_bos)] if k == 1 else counts[f"raw_{k}"].read(r0, min(r1, n_bos))
            acc[:raw.size] = raw
        out.add(acc)
    return out.array()


def _discounts(adj, block: int) -> tuple[list[int], tuple, bool]:
    cc = np.zeros(6, np.int64)
    for a in (adj.blocks(block) if isinstance(adj, DiskArray) else [(0, adj)]):
        cc += np.bincount(np.minimum(a[1], 5), minlength=6)
    coc = [int(x) for x in cc[1:5]]
    d, fell = kn_discounts(*coc)
    return coc, d, fell


def _gather(source, idx: np.ndarray, block: int) -> np.ndarray:
    """``source[idx]`` for an in-memory array, or a file read one block at a time."""
    if not isinstance(source, DiskArray):
        return source[idx]
    if source.length <= block:
        return source.read()[idx]
    out = np.empty(idx.size, source.dtype)
    for a, vals in source.blocks(block):
        sel = (idx >= a) & (idx < a + vals.size)
        out[sel] = vals[idx[sel] - a]
    return out


def _estimate(counts: dict, V: int, N: int, boundary_id, chunk: int, block: int, work: Path, path: Path,
              say) -> dict:
    n_bos = {1: 1}                                       # BOS-initial n-grams: the first of each order
    for k in range(2, N + 1):
        n_bos[k] = _prefix_below(counts[f"keys_{k}"], n_bos[k - 1] * V, block)
    discounts, fallback, coc, dtab = {}, [], {}, {}
    adj = {}
    for k in range(N, 0, -1):
        adj[k] = _adjusted(counts, k, N, n_bos[k], work, block)
        coc[k], d, fell = _discounts(adj[k], block)
        discounts[k] = list(d)
        if fell:
            fallback.append(k)
        dtab[k] = np.array([0.0, d[0], d[1], d[2]])
    fallback = sorted(fallback)                          # as fit lists them
    with np.errstate(divide="ignore", invalid="ignore"):
        p1 = unigram_probs(adj[1].read() if isinstance(adj[1], DiskArray) else adj[1], dtab[1])
        probs, backoffs = {1: p1}, {}
        for k in range(2, N + 1):
            probs[k], backoffs[k - 1] = _order_probs(counts, adj[k], dtab[k], probs[k - 1], k, V, chunk,
                                                     block, work)
            say(f"order {k}: probabilities")
    num = {1: V} | {k: counts[f"n_{k}"] for k in range(2, N + 1)}
    meta = model_metadata(N, V, boundary_id, discounts, fallback, coc, num)

    def members():
        for k in range(1, N + 1):
            if k >= 2:
                keys = counts[f"keys_{k}"]
                yield f"keys_{k}", np.int64, keys.length, (b for _, b in keys.blocks(block))
            p = probs[k]
            with np.errstate(divide="ignore"):
                if isinstance(p, DiskArray):
                    yield f"logp_{k}", np.float64, p.length, (np.log(b) for _, b in p.blocks(block))
                else:
                    yield f"logp_{k}", np.float64, p.size, [np.log(p)]
            if k < N:
                lb = backoffs[k]
                yield f"logb_{k}", np.float64, lb.length, (b for _, b in lb.blocks(block))

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write_model_file(tmp, meta, members())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return meta


def _order_probs(counts: dict, adj, dtab: np.ndarray, p_prev, k: int, V: int, chunk: int, block: int,
                 work: Path):
    """Interpolated probabilities of order k and log backoffs of its contexts (order k-1), in chunks
    of whole contexts: ``p = (a - D(a)) / sum_x a(hx) + gamma(h) p_prev(suffix)``."""
    keys, suffix = counts[f"keys_{k}"], counts[f"suffix_{k}"]
    n, n_ctx = keys.length, (V if k == 2 else counts[f"n_{k - 1}"])
    p_out = _Appender(work / f"p_{k}.bin", np.float64)
    lb_out = _Appender(work / f"logb_{k - 1}.bin", np.float64)
    # ``chunk`` entries are the whole budget: the lower order's probabilities are held if they take
    # at most half of it, the pieces in flight (THREADS + 1) share the rest
    budget = chunk * BYTES_PER_ENTRY
    held = 0
    if isinstance(p_prev, DiskArray) and p_prev.length * 8 * 2 <= budget:
        p_prev = p_prev.read()
    if not isinstance(p_prev, DiskArray):
        held = p_prev.size * 8
    else:                                           # gathered block by block: each worker one block
        block = max(1, budget // 8 // THREADS // 8)
    size = max(1, (budget - held) // BYTES_PER_ENTRY // (THREADS + 1))

    def piece(i0: int, i1: int):
        """(first context, log backoffs of its contexts, probabilities) of entries [i0, i1)."""
        parent = keys.read(i0, i1) // V
        a = adj.read(i0, i1)
        dk = dtab[np.minimum(a, 3)]
        c0 = int(parent[0])
        local = parent - c0
        width = int(local[-1]) + 1
        denom = np.bincount(local, weights=a, minlength=width)
        dmass = np.bincount(local, weights=dk, minlength=width)
        has = denom > 0
        gamma = np.where(has, dmass / np.where(has, denom, 1.0), 1.0)
        pk = (a - dk) / denom[local] + gamma[local] * _gather(p_prev, suffix.read(i0, i1), block)
        return c0, np.log(gamma), pk

    next_ctx = 0
    with ThreadPoolExecutor(THREADS) as pool:       # pieces side by side, written in order
        pending = []
        for i0, i1 in _context_pieces(keys, V, size, block):
            pending.append(pool.submit(piece, i0, i1))
            while pending and (pending[0].done() or len(pending) > THREADS):
                c0, lb, pk = pending.pop(0).result()
                if c0 > next_ctx:
                    lb_out.add(np.zeros(c0 - next_ctx))
                lb_out.add(lb)
                next_ctx = c0 + lb.size
                p_out.add(pk)
        for f in pending:
            c0, lb, pk = f.result()
            if c0 > next_ctx:
                lb_out.add(np.zeros(c0 - next_ctx))
            lb_out.add(lb)
            next_ctx = c0 + lb.size
            p_out.add(pk)
    if n_ctx > next_ctx:
        lb_out.add(np.zeros(n_ctx - next_ctx))
    return p_out.array(), lb_out.array()


def _context_pieces(keys: DiskArray, V: int, size: int, block: int):
    """[i0, i1) ranges of about ``size`` entries that never cut a context in two."""
    n, i0 = keys.length, 0
    while i0 < n:
        i1 = min(n, i0 + size)
        if i1 < n:                                  # end before the last context of the piece
            parent = keys.read(i0, i1) // V
            cut = int(np.searchsorted(parent, parent[-1]))
            if cut > 0:
                i1 = i0 + cut
            else:                                   # one context longer than a piece: take it whole
                i1 = i0 + _context_end(keys, i0, int(parent[0]), V, block)
        yield i0, i1
        i0 = i1


def _context_end(keys: DiskArray, i0: int, ctx: int, V: int, block: int) -> int:
    """Entries from ``i0`` that belong to context ``ctx`` (all of them, however many)."""
    end = i0
    for a, kk in keys.blocks(block, i0):
        c = int(np.searchsorted(kk // V, ctx, side="right"))
        end = a + c
        if c < kk.size:
            break
    return end - i0
