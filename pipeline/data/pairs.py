"""Pair lines, ``source<SEP>target`` one example a line: the split of a line, and the checks of a
paired corpus read piece by piece.

A paired corpus is checked as it streams (:class:`PairChecker` holds nothing but a line count), so
a file of any size is validated in bounded memory, and a bad line stops the run with one clear
line naming the file and the line number instead of a model trained on a malformed pair.
"""
from __future__ import annotations

from typing import Iterable

from pipeline.errors import SeqlabError

SEPARATOR = "\t"


def split_pair(line: str, separator: str = SEPARATOR) -> tuple[str, str]:
    """``(source, target)`` of a pair line (a trailing newline is dropped), split at the FIRST
    ``separator``, so a target may hold the separator; ValueError if there is none."""
    source, found, target = line.removesuffix("\n").partition(separator)
    if not found:
        raise ValueError(f"no separator {separator!r} in {line!r}")
    return source, target


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class PairChecker:
    """Checks pair lines given as pieces of whole lines (:meth:`check`); only the last piece of a
    file may end without a newline. ``where`` names the file in errors; ``first_line``: the line
    number of the first line (a split that starts within a file); ``max_target_chars``: the longest
    target allowed (None: any)."""

    def __init__(self, where: str, separator: str = SEPARATOR, max_target_chars: int | None = None,
                 first_line: int = 1):
        if not separator or "\n" in separator:
            raise ValueError(f"a pair separator is one or more characters other than newline, not {separator!r}")
        self.where, self.separator, self.max_target_chars = where, separator, max_target_chars
        self.first_line = first_line
        self.lines = 0            # lines checked so far
        self._open_line = False   # the last piece ended without a newline

    def _fail(self, what: str) -> None:
        sep = "<TAB>" if self.separator == "\t" else self.separator
        raise SeqlabError(f"{self.where}: line {self.first_line + self.lines}: {what}; "
                          f"a pair line is source{sep}target")

    def _check_line(self, line: str) -> None:
        sep = "tab" if self.separator == "\t" else f"separator {self.separator!r}"
        if not line:
            self._fail("an empty line")
        if self.separator not in line:
            self._fail(f"no {sep} in {_shown(line)}")
        source, target = split_pair(line, self.separator)
        if not source:
            self._fail(f"empty source (the line starts with the {sep})")
        if not target:
            self._fail(f"empty target (nothing after the {sep} in {_shown(line)})")
        if self.max_target_chars is not None and len(target) > self.max_target_chars:
            self._fail(f"a target of {len(target)} characters, over max_target_chars={self.max_target_chars}: "
                       f"{_shown(target)}")

    def check(self, text_piece: str) -> None:
        """Check every line of ``text_piece`` (whole lines; the last of a file may lack its newline)."""
        if not text_piece:
            return
        if self._open_line:
            raise ValueError(f"{self.where}: a piece after one that ended within a line; "
                             "pieces must end at line ends but the last")
        lines = text_piece.split("\n")
        self._open_line = lines[-1] != ""
        for line in lines if self._open_line else lines[:-1]:
            self._check_line(line)
            self.lines += 1


def check_pairs(where: str, pieces: Iterable[str], separator: str = SEPARATOR,
                max_target_chars: int | None = None, first_line: int = 1) -> int:
    """Check a whole text given in pieces (e.g. ``SplitText.chunks()``); returns its line count."""
    checker = PairChecker(where, separator, max_target_chars, first_line)
    for piece in pieces:
        checker.check(piece)
    return checker.lines
