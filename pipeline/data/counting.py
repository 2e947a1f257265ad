"""Exact token counts in bounded memory, and the most frequent ``k`` of them.

A :class:`Counts` holds at most ``max_types`` distinct tokens in memory; beyond that it writes its
counts, sorted by token, to a run file and starts afresh. :meth:`Counts.top` merges the runs
(``heapq.merge``, one line of each run in memory) and keeps the ``k`` most frequent tokens, ties
broken by the token, exactly as one in-memory ``Counter`` would.
"""
from __future__ import annotations

import collections
import heapq
import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

BYTES_PER_TYPE = 200     # what one distinct short string costs in a Counter (key, int, table slot)


class Counts:
    def __init__(self, max_types: int, tmp_dir: Path | None = None):
        self.max_types = max(1, int(max_types))
        self._counter: collections.Counter = collections.Counter()
        self._tmp_parent = tmp_dir
        self._tmp: Path | None = None
        self._runs: list[Path] = []
        self._dropped: set[str] = set()

    def update(self, tokens: Iterable[str]) -> None:
        self._counter.update(tokens)
        if len(self._counter) > self.max_types:
            self._spill()

    def pop(self, token: str) -> None:
        """Forget ``token`` (a reserved one the corpus happens to hold)."""
        self._counter.pop(token, None)
        self._dropped.add(token)

    def _spill(self) -> None:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix=".seqlab-counts.", dir=self._tmp_parent))
        run = self._tmp / f"run{len(self._runs):05d}.tsv"
        with open(run, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(f"{t}\t{c}\n" for t, c in sorted(self._counter.items()))
        self._runs.append(run)
        self._counter = collections.Counter()

    def _merged(self) -> Iterator[tuple[str, int]]:
        """(token, total count) in token order over the runs and what is in memory."""
        def run_items(path: Path):
            with open(path, encoding="utf-8", newline="\n") as f:
                for line in f:
                    t, c = line[:-1].rsplit("\t", 1)
                    yield t, int(c)
        streams = [run_items(r) for r in self._runs] + [iter(sorted(self._counter.items()))]
        for token, group in itertools.groupby(heapq.merge(*streams), key=lambda tc: tc[0]):
            if token not in self._dropped:
                yield token, sum(c for _, c in group)

    def top(self, k: int) -> list[str]:
        """The ``k`` most frequent tokens, by count descending then token ascending."""
        if k <= 0:
            self.close()
            return []
        try:
            if not self._runs:
                items = [(t, c) for t, c in self._counter.items() if t not in self._dropped]
                return [t for t, _ in heapq.nsmallest(k, items, key=lambda tc: (-tc[1], tc[0]))]
            # two passes over the merge: the k-th largest count, then the tokens above it and the
            # alphabetically first of those at it (the merge runs in token order)
            histogram = collections.Counter(c for _, c in self._merged())
            need, threshold = k, 0
            for count in sorted(histogram, reverse=True):
                if histogram[count] >= need:
                    threshold = count
                    break
                need -= histogram[count]
            above, at = [], []
            for t, c in self._merged():
                if c > threshold:
                    above.append((t, c))
                elif c == threshold and len(at) < need:
                    at.append((t, c))
            return [t for t, _ in sorted(above + at, key=lambda tc: (-tc[1], tc[0]))]
        finally:
            self.close()

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._runs = []

    def __del__(self):
        self.close()
