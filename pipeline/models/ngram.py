"""Interpolated modified Kneser-Ney n-gram language model (Chen & Goodman), as KenLM's ``lmplz`` builds it.

Everything is vectorised numpy: counting assigns n-gram ids order by order
(``id_k = rank(id_{k-1}(prefix) * V + last_token)``, so keys stay int64 at any order), and scoring
looks every position of a stream up in one sorted-array search per order.

Model (for order N, token ids in [0, V), id 0 = BOS never predicted):

* The training stream is padded like KenLM pads a sentence: a BOS before the first token, and in
  sentence-boundary mode (``boundary_id`` set) a BOS after every boundary token, so n-grams never
  cross a boundary and the boundary token itself (KenLM's ``</s>``) is a predicted word. The stored
  n-grams are the substrings of the padded stream that hold BOS only in first position.
* Adjusted counts (KenLM ``adjust_counts.cc``): order N keeps raw counts; a lower-order n-gram gets
  the number of distinct words that extend it to the left, except that an n-gram starting with BOS
  keeps its raw count (it cannot be extended); the BOS unigram has count 0.
* Discounts per order from the counts-of-counts n1..n4 of the adjusted counts (Chen & Goodman eq. 26):
  ``Y = n1/(n1+2 n2)``, ``D1 = 1-2Y n2/n1``, ``D2 = 2-3Y n3/n2``, ``D3+ = 3-4Y n4/n3``. When n1, n2 or
  n3 is zero or a discount leaves [0, k] (or is exactly 0, see :func:`kn_discounts`) the order falls
  back to 0.5/1/1.5 (KenLM ``--discount_fallback``); such orders are listed in ``fallback_orders``.
  Every discount is then positive, so every backoff weight is positive and every predictable id
  has a positive probability.
* ``p(w|h) = (a(hw) - D(a(hw))) / sum_x a(hx) + gamma(h) p(w|h')`` with
  ``gamma(h) = sum_x D(a(hx)) / sum_x a(hx)``; a context never seen with a continuation backs off with
  weight 1; the recursion ends in a uniform distribution over the V-1 predictable ids (BOS excluded),
  which is KenLM's uniform over its vocabulary without ``<s>``.

The interpolated probabilities are stored per n-gram together with log backoff weights, which is
exactly the ARPA representation, so ``write_arpa`` is lossless (up to the printed digits).
"""
from __future__ import annotations

import json
import math
import struct
import sys
import time
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.generation.sampling import sample_token
from pipeline.data.vocab_layout import BOS_ID, UNK_ID

__all__ = ["KneserNeyLM", "ArpaModel", "read_arpa", "kn_discounts", "arpa_escape",
           "FALLBACK_DISCOUNTS", "MAX_ORDER"]

MAX_ORDER = 10
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
FORMAT_NAME = "seqlab-kneser-ney"
FORMAT_VERSION = 1
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_LN10 = math.log(10.0)


def kn_discounts(n1: int, n2: int, n3: int, n4: int) -> tuple[tuple[float, float, float], bool]:
    """Modified Kneser-Ney discounts (D1, D2, D3+) from counts-of-counts; returns (discounts, fell_back).

    Chen & Goodman eq. (26), with KenLM's validity rules: n1, n2 and n3 must be non-zero and each
    D_k must lie in [0, k]; otherwise the fallback (0.5, 1, 1.5) is used. One deliberate deviation:
    a discount of exactly 0 also falls back (KenLM accepts it, in float32 arithmetic where such a
    value usually comes out slightly negative and falls back anyway), because D2 = 0 or D3+ = 0 makes
    the backoff weight of some contexts 0 and gives unseen continuations probability 0. This only
    happens on tiny corpora (e.g. n1=4, n2=1, n3=1 gives D2 = 0 exactly).
    """
    n = (0, int(n1), int(n2), int(n3), int(n4))
    if n[1] == 0 or n[2] == 0 or n[3] == 0:
        return FALLBACK_DISCOUNTS, True
    y = n[1] / (n[1] + 2.0 * n[2])
    d = tuple(j - (j + 1) * y * n[j + 1] / n[j] for j in (1, 2, 3))
    if any(not (0.0 < d[j - 1] <= j) for j in (1, 2, 3)):
        return FALLBACK_DISCOUNTS, True
    return (float(d[0]), float(d[1]), float(d[2])), False


def arpa_escape(token: str) -> str:
    """ARPA-safe spelling of a token: whitespace characters become ``<U+XXXX>`` (ARPA splits on whitespace)."""
    if token == "":
        raise ValueError("empty token string cannot be written to an ARPA file")
    if not any(c.isspace() for c in token):
        return token
    return "".join(f"<U+{ord(c):04X}>" if c.isspace() else c for c in token)


# ----------------------------------------------------------------------------------------------
# vectorised helpers

def _stable_sort(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(keys[order], order)`` for a stable sort of non-negative int64 ``keys`` (non-empty).

    (key, position) packed in one int64 and sorted in place: much faster than argsort, ties by
    position; argsort only when the packing would overflow."""
    n = keys.size
    pos_bits = max(1, (n - 1).bit_length())
    if int(keys.max()).bit_length() + pos_bits <= 63:
        comb = (keys << pos_bits) | np.arange(n, dtype=np.int64)
        comb.sort()
        return comb >> pos_bits, comb & ((1 << pos_bits) - 1)
    order = np.argsort(keys, kind="stable")  # pragma: no cover - only for astronomically many n-gram types
    return keys[order], order


def _unique_inverse(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique values of non-negative int64 ``keys``, the inverse map, and each value's first index."""
    n = keys.size
    if n == 0:
        e = np.zeros(0, np.int64)
        return e, e.copy(), e.copy()
    sk, order = _stable_sort(keys)
    start = np.empty(n, dtype=bool)
    start[0] = True
    np.not_equal(sk[1:], sk[:-1], out=start[1:])
    gid = np.cumsum(start, dtype=np.int64) - 1
    inv = np.empty(n, dtype=np.int64)
    inv[order] = gid
    return sk[start], inv, order[start]


def _lookup(keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Index of each query in the sorted unique ``keys``; -1 where absent (queries < 0 are absent)."""
    out = np.full(q.shape, -1, dtype=np.int64)
    if keys.size == 0 or q.size == 0:
        return out
    qs, perm = _stable_sort(np.maximum(q, 0))   # sorted needles search ~10x faster (cache locality)
    idx = np.searchsorted(keys, qs)
    np.minimum(idx, keys.size - 1, out=idx)
    found = keys[idx] == qs
    res = np.where(found, idx, -1)
    out[perm] = res
    out[q < 0] = -1
    return out


def unigram_probs(adjusted: np.ndarray, dtab: np.ndarray) -> np.ndarray:
    """Interpolated unigram probabilities from the adjusted counts of all V ids: the discounted mass
    spread uniformly over the V-1 predictable ids; BOS gets 0."""
    V = adjusted.size
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = dtab[np.minimum(adjusted, 3)]
        total = float(adjusted.sum())
        if total > 0:
            p1 = (adjusted - disc) / total + (float(disc.sum()) / total) / (V - 1)
        else:
            p1 = np.full(V, 1.0 / (V - 1))
    p1[BOS_ID] = 0.0
    return p1


class KneserNeyLM:
    """Interpolated modified Kneser-Ney language model over token ids (see the module docstring)."""

    def __init__(self, order: int, vocab_size: int, boundary_id: int | None,
                 logp: dict[int, np.ndarray], logb: dict[int, np.ndarray], keys: dict[int, np.ndarray],
                 discounts: dict[int, list[float]], fallback_orders: list[int],
                 counts_of_counts: dict[int, list[int]] | None = None):
        self.order = int(order)
        self.vocab_size = int(vocab_size)
        self.boundary_id = None if boundary_id is None else int(boundary_id)
        self._logp = logp          # order -> float64 log p (natural) per stored n-gram; order 1 dense (V,)
        self._logb = logb          # order -> float64 log backoff per stored n-gram (orders < N)
        self._keys = keys          # order >= 2 -> sorted int64 keys prefix_id * V + last_token
        self.discounts = {int(k): [float(x) for x in v] for k, v in discounts.items()}
        self.fallback_orders = [int(k) for k in fallback_orders]
        self.counts_of_counts = {int(k): [int(x) for x in v] for k, v in (counts_of_counts or {}).items()}
        self.num_ngrams = {1: self.vocab_size}
        for k in range(2, self.order + 1):
            self.num_ngrams[k] = int(self._keys[k].size)

    # ------------------------------------------------------------------------------------------
    @property
    def parameters(self) -> int:
        """Total number of stored n-grams (all orders; the unigram table covers the whole vocabulary)."""
        return int(sum(self.num_ngrams.values()))

    def __repr__(self) -> str:
        mode = "stream" if self.boundary_id is None else f"boundary_id={self.boundary_id}"
        return (f"KneserNeyLM(order={self.order}, vocab_size={self.vocab_size}, {mode}, "
                f"ngrams={self.num_ngrams}, fallback_orders={self.fallback_orders})")

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _check_args(vocab_size: int, order: int, boundary_id: int | None) -> None:
        if not 1 <= int(order) <= MAX_ORDER:
            raise ValueError(f"order must be in 1..{MAX_ORDER}, got {order}")
        if int(vocab_size) < 2:
            raise ValueError(f"vocab_size must be >= 2 (BOS plus at least one predictable id), got {vocab_size}")
        if boundary_id is not None and not 1 <= int(boundary_id) < int(vocab_size):
            raise ValueError(f"boundary_id must be a predictable id in [1, {vocab_size}), got {boundary_id}")

    @staticmethod
    def _as_stream(tokens, vocab_size: int) -> np.ndarray:
        t = np.asarray(tokens)
        if t.ndim != 1:
            raise ValueError(f"tokens must be a 1-D id array, got shape {t.shape}")
        if t.size and not np.issubdtype(t.dtype, np.integer):
            raise TypeError(f"tokens must be integer ids, got dtype {t.dtype}")
        t = t.astype(np.int64, copy=False)
        if t.size:
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= vocab_size:
                raise ValueError(f"token ids must lie in [0, {vocab_size}), got range [{lo}, {hi}]")
            if lo == BOS_ID:
                raise ValueError("the stream contains BOS_ID (0): BOS is only a context, never a token "
                                 "of the stream (use boundary_id for sentence resets)")
        return t

    @staticmethod
    def _pad(t: np.ndarray, boundary_id: int | None) -> np.ndarray:
        """BOS + stream, with a BOS after every boundary token (not after a final one)."""
        if boundary_id is None or t.size == 0:
            aug = np.empty(t.size + 1, dtype=np.int64)
            aug[0] = BOS_ID
            aug[1:] = t
            return aug
        cut = np.flatnonzero(t[:-1] == boundary_id) + 1
        aug = np.empty(t.size + 1 + cut.size, dtype=np.int64)
        aug[0] = BOS_ID
        aug[1:] = np.insert(t, cut, BOS_ID)
        return aug

    # ------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, tokens: np.ndarray, vocab_size: int, order: int, boundary_id: int | None = None,
            progress: bool = False) -> "KneserNeyLM":
        """Count and estimate an order-``order`` model on a token-id stream (ids in [1, vocab_size))."""
        cls._check_args(vocab_size, order, boundary_id)
        V, N = int(vocab_size), int(order)
        t0 = time.perf_counter()
        t = cls._as_stream(tokens, V)
        aug = cls._pad(t, boundary_id)
        M = aug.size
        if M * V >= 2 ** 62:
            raise ValueError(f"{M:,} positions x vocabulary {V:,} overflows the int64 n-gram keys")
        not_bos = aug != BOS_ID

        def report(msg: str) -> None:
            if progress:
                print(f"[ngram] {msg} ({time.perf_counter() - t0:.2f}s)", file=sys.stderr, flush=True)

        report(f"stream: {t.size:,} tokens, {M - t.size:,} BOS pads, vocab {V:,}, order {N}")

        # ---- counting: ids of the n-gram of each length ending at each position -------------------
        raw = {1: np.bincount(aug[not_bos], minlength=V).astype(np.int64)}
        keys: dict[int, np.ndarray] = {}
        suffix: dict[int, np.ndarray] = {}
        ids_prev = aug  # order-1 id of the n-gram ending at each position is the token itself
        for k in range(2, N + 1):
            pre = ids_prev[:-1]
            ok = (pre >= 0) & not_bos[1:]
            end = np.flatnonzero(ok) + 1
            q = ids_prev[end - 1] * V + aug[end]
            uniq, inv, first = _unique_inverse(q)
            del q
            keys[k] = uniq
            raw[k] = np.bincount(inv, minlength=uniq.size).astype(np.int64)
            # suffix (last k-1 words) of each k-gram = the (k-1)-gram ending at the same position
            suffix[k] = ids_prev[end[first]]
            if k < N:
                ids_k = np.full(M, -1, dtype=np.int64)
                ids_k[end] = inv
                ids_prev = ids_k
            del inv, first, end, ok
            report(f"order {k}: {uniq.size:,} distinct n-grams")
        del ids_prev

        # ---- adjusted counts ----------------------------------------------------------------------
        bos_start = {1: np.arange(V) == BOS_ID}
        for k in range(2, N + 1):
            bos_start[k] = bos_start[k - 1][keys[k] // V]
        adj = {N: raw[N]}
        for k in range(N - 1, 0, -1):
            n_k = V if k == 1 else keys[k].size
            a = np.bincount(suffix[k + 1], minlength=n_k).astype(np.int64)
            a[bos_start[k]] = raw[k][bos_start[k]]  # BOS-initial n-grams keep raw counts (BOS unigram: 0)
            adj[k] = a
        del raw

        # ---- discounts ----------------------------------------------------------------------------
        discounts: dict[int, list[float]] = {}
        fallback: list[int] = []
        coc: dict[int, list[int]] = {}
        dtab: dict[int, np.ndarray] = {}
        for k in range(1, N + 1):
            cc = np.bincount(np.minimum(adj[k], 5), minlength=6)
            coc[k] = [int(x) for x in cc[1:5]]
            d, fell = kn_discounts(*coc[k])
            discounts[k] = list(d)
            if fell:
                fallback.append(k)
            dtab[k] = np.array([0.0, d[0], d[1], d[2]])

        # ---- interpolated probabilities and backoffs ----------------------------------------------
        logp: dict[int, np.ndarray] = {}
        logb: dict[int, np.ndarray] = {}
        with np.errstate(divide="ignore", invalid="ignore"):
            p1 = unigram_probs(adj[1], dtab[1])
            logp[1] = np.log(p1)
            p_prev = p1
            for k in range(2, N + 1):
                a = adj[k]
                parent = keys[k] // V
                n_ctx = V if k == 2 else keys[k - 1].size
                dk = dtab[k][np.minimum(a, 3)]
                denom = np.bincount(parent, weights=a, minlength=n_ctx)
                dmass = np.bincount(parent, weights=dk, minlength=n_ctx)
                has = denom > 0
                gamma = np.where(has, dmass / np.where(has, denom, 1.0), 1.0)
                logb[k - 1] = np.log(gamma)
                pk = (a - dk) / denom[parent] + gamma[parent] * p_prev[suffix[k]]
                logp[k] = np.log(pk)
                p_prev = pk
                report(f"order {k}: probabilities")
        model = cls(N, V, boundary_id, logp, logb, keys, discounts, fallback, coc)
        report(f"built {model.parameters:,} n-grams; discounts fell back for orders {fallback}")
        return model

    # ------------------------------------------------------------------------------------------
    def _score_padded(self, aug: np.ndarray) -> np.ndarray:
        """Natural-log probability of aug[t] given the padded history, for every t (BOS entries meaningless)."""
        V = self.vocab_size
        logp = self._logp[1][aug]
        ids_prev = aug
        for k in range(2, self.order + 1):
            pre = ids_prev[:-1]
            q = np.where(pre >= 0, pre * V + aug[1:], -1)
            ids_k = np.full(aug.size, -1, dtype=np.int64)
            ids_k[1:] = _lookup(self._keys[k], q)
            found = ids_k[1:] >= 0
            lb = self._logb[k - 1]
            back = np.where(pre >= 0, lb[np.maximum(pre, 0)], 0.0) if lb.size else np.zeros(pre.size)
            lpk = self._logp[k]
            hit = lpk[np.maximum(ids_k[1:], 0)] if lpk.size else np.zeros(found.size)
            logp = np.concatenate([logp[:1], np.where(found, hit, logp[1:] + back)])
            ids_prev = ids_k
        return logp

    def logprobs(self, tokens: np.ndarray) -> np.ndarray:
        """Natural-log p(x_t | context) for every position of the stream (float64, shape (N,)).

        The context starts at BOS and, with ``boundary_id`` set, resets to BOS after each boundary token.
        """
        pieces = list(self.logprob_pieces(tokens))
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float64)

    def logprob_pieces(self, tokens, piece: int = 1 << 22):
        """:meth:`logprobs` in consecutive pieces of ``piece`` positions, reading ``tokens`` (e.g. a
        memory map) piece by piece: memory stays O(piece) whatever the split's length. Each piece
        is scored with the ``order - 1`` tokens before it as history, which is all the model uses,
        so the pieces are exactly the whole stream's scores."""
        n, keep = len(tokens), self.order - 1
        for a in range(0, n, max(1, int(piece))):
            b = min(n, a + piece)
            s = max(0, a - keep)
            aug = self._pad(self._as_stream(tokens[s:b], self.vocab_size), self.boundary_id)
            if s > 0:
                aug = aug[1:]                     # a history, not the start of the stream
            lp = self._score_padded(aug)[aug != BOS_ID]
            yield np.ascontiguousarray(lp[a - s:], dtype=np.float64)

    # ------------------------------------------------------------------------------------------
    def _history(self, context) -> list[int]:
        """The part of ``context`` that conditions the next token: from the last reset, at most N-1 ids."""
        c = np.asarray(context, dtype=np.int64).reshape(-1)
        if c.size and (int(c.min()) < 0 or int(c.max()) >= self.vocab_size):
            raise ValueError(f"context ids must lie in [0, {self.vocab_size})")
        reset = c == BOS_ID
        if self.boundary_id is not None:
            reset |= c == self.boundary_id
        r = np.flatnonzero(reset)
        if r.size == 0:
            hist = [BOS_ID] + c.tolist()
        elif c[r[-1]] == BOS_ID:
            hist = c[r[-1]:].tolist()
        else:
            hist = [BOS_ID] + c[r[-1] + 1:].tolist()
        keep = self.order - 1
        return hist[max(0, len(hist) - keep):] if keep else []

    def _ngram_id(self, seq: Sequence[int]) -> int:
        """Id of the n-gram ``seq`` at order len(seq), or -1 if it is not stored."""
        if not seq:
            return -1
        nid = int(seq[0])
        for k in range(2, len(seq) + 1):
            keys = self._keys[k]
            q = nid * self.vocab_size + int(seq[k - 1])
            i = int(np.searchsorted(keys, q))
            if i >= keys.size or int(keys[i]) != q:
                return -1
            nid = i
        return nid

    def _next_from_history(self, hist: list[int]) -> np.ndarray:
        V = self.vocab_size
        lp = self._logp[1].copy()
        for j in range(1, len(hist) + 1):
            hid = self._ngram_id(hist[len(hist) - j:])
            if hid < 0:
                break
            keys = self._keys[j + 1]
            lo, hi = np.searchsorted(keys, [hid * V, hid * V + V])
            lp += self._logb[j][hid]
            lp[keys[lo:hi] - hid * V] = self._logp[j + 1][lo:hi]
        lp[BOS_ID] = -np.inf
        return lp

    def next_logprobs(self, context: np.ndarray) -> np.ndarray:
        """(V,) natural-log distribution of the token following ``context`` (a stream prefix, may be empty).

        logsumexp over the non-BOS ids is 0 and the BOS entry is -inf. A BOS id inside ``context`` is
        accepted as a reset marker (the context restarts there).
        """
        return self._next_from_history(self._history(context))

    def next_logprobs_after(self, history) -> np.ndarray:
        """(V,) distribution after exactly ``history`` (its last order-1 ids), with no start of stream
        implied: what this model predicts with its order capped at len(history) + 1 (diagnostics)."""
        hist = [int(i) for i in history]
        return self._next_from_history(hist[max(0, len(hist) - (self.order - 1)):] if self.order > 1 else [])

    def sample(self, context: np.ndarray, num_tokens: int, rng: np.random.Generator, temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
        """Draw ``num_tokens`` ids after ``context`` with :func:`pipeline.generation.sampling.sample_token` (never BOS)."""
        hist = self._history(context)
        keep = self.order - 1
        out = np.empty(int(num_tokens), dtype=np.int64)
        for i in range(int(num_tokens)):
            tok = sample_token(self._next_from_history(hist), rng, temperature, top_k, top_p)
            out[i] = tok
            if self.boundary_id is not None and tok == self.boundary_id:
                hist = [BOS_ID]
            else:
                hist.append(tok)
            if len(hist) > keep:
                hist = hist[len(hist) - keep:] if keep else []
        return out

    # ------------------------------------------------------------------------------------------
    def _metadata(self) -> dict:
        return model_metadata(self.order, self.vocab_size, self.boundary_id, self.discounts, self.fallback_orders,
                              self.counts_of_counts, self.num_ngrams)

    def _arrays(self) -> list[tuple[str, np.ndarray]]:
        arrays = []
        for k in range(1, self.order + 1):
            if k >= 2:
                arrays.append((f"keys_{k}", self._keys[k]))
            arrays.append((f"logp_{k}", self._logp[k]))
            if k < self.order:
                arrays.append((f"logb_{k}", self._logb[k]))
        return arrays

    def save(self, path) -> None:
        """Write an uncompressed .npz (zip of .npy members plus ``metadata.json``), byte-deterministic.

        No pickle anywhere: ``np.load(path, allow_pickle=False)`` also reads it.
        """
        write_model_file(path, self._metadata(),
                         ((name, a.dtype, a.size, [a]) for name, a in self._arrays()))

    @classmethod
    def load(cls, path, mmap: bool = False) -> "KneserNeyLM":
        """Read a saved model; with ``mmap`` its arrays are memory-mapped from the file (they are
        stored uncompressed), so a model larger than memory loads at once and pages in as used."""
        with zipfile.ZipFile(path, "r") as zf:
            meta = json.loads(zf.read("metadata.json").decode("utf-8"))
            if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
                raise ValueError(f"{path}: not a {FORMAT_NAME} v{FORMAT_VERSION} file")
            if meta.get("bos_id") != BOS_ID:
                raise ValueError(f"{path}: saved with BOS id {meta.get('bos_id')}, this code uses {BOS_ID}")
            arrays = {}
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                if mmap and info.compress_type == zipfile.ZIP_STORED:
                    arrays[info.filename[:-4]] = _map_member(path, info)
                else:
                    with zf.open(info) as member:
                        arrays[info.filename[:-4]] = np.lib.format.read_array(member, allow_pickle=False)
        N = int(meta["order"])
        logp = {k: arrays[f"logp_{k}"] for k in range(1, N + 1)}
        logb = {k: arrays[f"logb_{k}"] for k in range(1, N)}
        keys = {k: arrays[f"keys_{k}"] for k in range(2, N + 1)}
        return cls(N, meta["vocab_size"], meta["boundary_id"], logp, logb, keys,
                   {int(k): v for k, v in meta["discounts"].items()}, meta["fallback_orders"],
                   {int(k): v for k, v in meta.get("counts_of_counts", {}).items()})

    # ------------------------------------------------------------------------------------------
    def _ngram_words(self, k: int, cache: dict[int, np.ndarray]) -> np.ndarray:
        """(num_ngrams[k], k) token ids of every stored k-gram, in storage order."""
        if k == 1:
            return np.arange(self.vocab_size, dtype=np.int64)[:, None]
        prev = cache[k - 1] if (k - 1) in cache else self._ngram_words(k - 1, cache)
        keys = self._keys[k]
        return np.concatenate([prev[keys // self.vocab_size], (keys % self.vocab_size)[:, None]], axis=1)

    def write_arpa(self, path, tokens: list[str]) -> None:
        """Write the model as an ARPA file (log10 probabilities and backoffs).

        ``tokens[i]`` is the string of id i. BOS is written ``<s>`` (log10 prob -99, never predicted),
        id UNK_ID ``<unk>``, and in boundary mode the boundary id ``</s>``; in stream mode a ``</s>``
        unigram with log10 prob -99 is added so that readers that require it (KenLM) load the file.
        Whitespace inside token strings is escaped with :func:`arpa_escape`.
        """
        V = self.vocab_size
        if len(tokens) != V:
            raise ValueError(f"need {V} token strings, got {len(tokens)}")
        names = [arpa_escape(str(s)) for s in tokens]
        names[BOS_ID] = "<s>"
        names[UNK_ID] = "<unk>"
        if self.boundary_id is not None:
            names[self.boundary_id] = "</s>"
        extra_eos = self.boundary_id is None
        if len(set(names)) != V or (extra_eos and "</s>" in names):
            seen, dup = set(), []
            for s in names:
                if s in seen:
                    dup.append(s)
                seen.add(s)
            raise ValueError(f"token strings collide after ARPA mapping: {sorted(set(dup))[:10]} "
                             "(<s>, <unk> and </s> are reserved)")
        name_arr = np.array(names, dtype=object)

        def fmt(x: np.ndarray) -> list[str]:
            v = np.where(np.isfinite(x), x / _LN10, -99.0)
            v = np.maximum(v, -99.0)
            return [f"{y:.9g}" for y in v.tolist()]

        counts = dict(self.num_ngrams)
        if extra_eos:
            counts[1] += 1
        cache: dict[int, np.ndarray] = {}
        with open(path, "w", encoding="utf-8", newline="\n") as out:
            out.write("\\data\\\n")
            for k in range(1, self.order + 1):
                out.write(f"ngram {k}={counts[k]}\n")
            out.write("\n")
            for k in range(1, self.order + 1):
                out.write(f"\\{k}-grams:\n")
                words = self._ngram_words(k, cache)
                cache = {k: words}
                text = name_arr[words[:, 0]]
                for j in range(1, k):
                    text = text + " " + name_arr[words[:, j]]
                lp = self._logp[k].copy()
                if k == 1:
                    lp[BOS_ID] = -np.inf
                probs = fmt(lp)
                if k < self.order:
                    backs = fmt(self._logb[k])
                    lines = [f"{p}\t{g}\t{b}\n" for p, g, b in zip(probs, text.tolist(), backs)]
                else:
                    lines = [f"{p}\t{g}\n" for p, g in zip(probs, text.tolist())]
                if k == 1 and extra_eos:
                    lines.append("-99\t</s>\t0\n" if k < self.order else "-99\t</s>\n")
                out.write("".join(lines))
                out.write("\n")
            out.write("\\end\\\n")


# ----------------------------------------------------------------------------------------------
# the model file

def model_metadata(order: int, vocab_size: int, boundary_id: int | None, discounts: dict, fallback_orders,
                   counts_of_counts: dict, num_ngrams: dict) -> dict:
    return {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "order": int(order),
        "vocab_size": int(vocab_size), "boundary_id": None if boundary_id is None else int(boundary_id),
        "bos_id": BOS_ID,
        "discounts": {str(k): [float(x) for x in v] for k, v in sorted(discounts.items())},
        "fallback_orders": [int(k) for k in fallback_orders],
        "counts_of_counts": {str(k): [int(x) for x in v] for k, v in sorted(counts_of_counts.items())},
        "num_ngrams": {str(k): int(v) for k, v in sorted(num_ngrams.items())},
    }


def _zip_info(name: str) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    zi.compress_type = zipfile.ZIP_STORED
    zi.external_attr = 0o644 << 16
    zi.create_system = 3
    return zi


#: where each member's array data starts in the file: a multiple of this (a cache line)
DATA_ALIGN = 64
_ALIGN_EXTRA_ID = 0xD935     # the zip extra field Android's zipalign pads with: (id, size, alignment, zeros)


def _aligning_extra(header_offset: int, name: str) -> bytes:
    """The local header's extra field that puts a ``.npy`` member's array data at a multiple of
    :data:`DATA_ALIGN`: the data follows the 30-byte header, the name, this field, the ZIP64 field
    (20 bytes, forced) and the ``.npy`` header (which NumPy pads to a multiple of 64). A memory map
    of unaligned data is still readable, but NumPy copies the whole array on every search of it
    (an O(N) ``searchsorted``: the n-gram's lookups ran ~400x slower)."""
    need = -(header_offset + 30 + len(name.encode("utf-8")) + 20) % DATA_ALIGN
    if need == 0:
        return b""
    if need < 6:                 # the field's own 4-byte header and its 2-byte alignment value
        need += DATA_ALIGN
    return struct.pack("<HHH", _ALIGN_EXTRA_ID, need - 4, DATA_ALIGN) + bytes(need - 6)


def write_model_file(path, meta: dict, members) -> None:
    """The model's ``.npz``: ``metadata.json``, then one 1-D ``.npy`` member per
    ``(name, dtype, length, blocks)``, whose data is the concatenation of ``blocks`` (arrays or a
    generator of them, so a member larger than memory is copied in pieces). Each member holds the
    bytes ``np.save`` writes for the whole array, stored uncompressed with fixed dates, its data
    aligned in the file (:func:`_aligning_extra`) so that a memory map of it is searched in place."""
    with open(path, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(_zip_info("metadata.json"), json.dumps(meta, sort_keys=True, indent=1).encode("utf-8"))
        for name, dtype, length, blocks in members:
            info = _zip_info(name + ".npy")
            info.extra = _aligning_extra(fh.tell(), info.filename)
            with zf.open(info, "w", force_zip64=True) as member:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                          "shape": (int(length),)}
                np.lib.format.write_array_header_1_0(member, header)
                written = 0
                for block in blocks:
                    b = np.ascontiguousarray(block, dtype=dtype)
                    member.write(b.tobytes())
                    written += b.size
                if written != length:
                    raise AssertionError(f"{name}: wrote {written} of {length} values")


def _map_member(path, info: zipfile.ZipInfo) -> np.ndarray:
    """A read-only memory map of an uncompressed ``.npy`` member of a zip file."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        f.seek(start)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if fortran or len(shape) != 1:
        raise ValueError(f"{path}: member {info.filename} is not a 1-D C-order array")
    if shape[0] == 0:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


# ----------------------------------------------------------------------------------------------
class ArpaModel:
    """A small pure-Python ARPA back-off model reader and scorer (reference implementation, not fast)."""

    def __init__(self, order: int, probs: dict[tuple[str, ...], float], backoffs: dict[tuple[str, ...], float],
                 counts: dict[int, int]):
        self.order = order
        self.probs = probs        # n-gram tuple -> log10 p
        self.backoffs = backoffs  # n-gram tuple -> log10 backoff (absent = 0)
        self.counts = counts

    @classmethod
    def read(cls, path) -> "ArpaModel":
        probs: dict[tuple[str, ...], float] = {}
        backoffs: dict[tuple[str, ...], float] = {}
        counts: dict[int, int] = {}
        section = None
        with open(path, encoding="utf-8") as fh:
            for raw in fh:
                line = raw.strip()
                if not line:
                    continue
                if line == "\\data\\":
                    section = "data"
                    continue
                if line == "\\end\\":
                    break
                if line.startswith("\\") and line.endswith("-grams:"):
                    section = int(line[1:-len("-grams:")])
                    continue
                if section == "data":
                    if line.startswith("ngram "):
                        k, n = line[len("ngram "):].split("=")
                        counts[int(k)] = int(n)
                    continue
                if isinstance(section, int):
                    parts = line.split()
                    k = section
                    if len(parts) not in (k + 1, k + 2):
                        raise ValueError(f"bad {k}-gram line: {line!r}")
                    gram = tuple(parts[1:k + 1])
                    probs[gram] = float(parts[0])
                    if len(parts) == k + 2:
                        backoffs[gram] = float(parts[k + 1])
        order = max(counts) if counts else 0
        for k, n in counts.items():
            got = sum(1 for g in probs if len(g) == k)
            if got != n:
                raise ValueError(f"header says {n} {k}-grams, file has {got}")
        return cls(order, probs, backoffs, counts)

    def log10_prob(self, context: Sequence[str], word: str) -> float:
        """log10 p(word | context) by the ARPA back-off rule; unknown words score as ``<unk>``."""
        if (word,) not in self.probs:
            word = "<unk>"
        ctx = tuple(context)[max(0, len(context) - (self.order - 1)):] if self.order > 1 else ()
        acc = 0.0
        for start in range(len(ctx) + 1):
            h = ctx[start:]
            p = self.probs.get(h + (word,))
            if p is not None:
                return acc + p
            if h:
                acc += self.backoffs.get(h, 0.0)
        raise KeyError(word)  # unreachable: the unigram exists

    def score(self, words: Sequence[str], boundary: str | None = None) -> list[float]:
        """log10 p of every word of a stream; the context starts at ``<s>`` and resets after ``boundary``."""
        ctx: list[str] = ["<s>"]
        out = []
        for w in words:
            out.append(self.log10_prob(ctx, w))
            if boundary is not None and w == boundary:
                ctx = ["<s>"]
            else:
                ctx.append(w)
                if len(ctx) > self.order:
                    del ctx[0]
        return out


def read_arpa(path) -> ArpaModel:
    """Parse an ARPA file into an :class:`ArpaModel`."""
    return ArpaModel.read(path)
