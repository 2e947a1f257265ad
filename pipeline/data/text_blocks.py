"""A text file read in blocks of whole lines, cleaned, with bounded memory whatever its size.

:func:`scan` reads the file once: it checks that it is UTF-8 text, counts what cleaning changes
(:func:`clean_text`) and records where each block starts (bytes, cleaned characters, lines).
:meth:`ScannedText.read` then yields the cleaned text of any character range block by block, so a
corpus split is streamed without the whole file ever being in memory. Blocks end after a newline
byte, which never occurs inside a multi-byte UTF-8 sequence, so a block decodes on its own and a
CRLF pair is never cut in two.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pipeline.errors import SeqlabError

BLOCK_BYTES = 8 << 20           # default size of one read
MAX_LINE_BYTES = 256 << 20      # a longer line is refused: it would have to be held whole

# C0 control characters and DEL other than tab and newline (a carriage return is a line end)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def decode_utf8(data: bytes, where: str, offset: int = 0) -> str:
    """Decode strictly; the error names the file and the byte offset of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SeqlabError(f"{where}: not valid UTF-8 at byte offset {offset + e.start} "
                          f"(byte 0x{data[e.start]:02x}); convert the file to UTF-8") from None


def clean_text(text: str, where: str, at_char: int = 0, at_line: int = 0, bom: bool = False) -> tuple[str, dict]:
    """What a user expects of a text corpus, done and counted: a leading byte-order mark is removed,
    CRLF and lone CR line ends become LF; any other control character (NUL, form feed, escape, ...)
    is an error naming the file, line, column and character offset. ``at_char``/``at_line``: where
    ``text`` starts in the cleaned file (a block starts at a line start); ``bom``: whether one was
    removed before it. Returns ``(text, counts)``."""
    if at_char == 0 and text.startswith("\ufeff"):
        text, bom = text[1:], True
    crlf, cr = text.count("\r\n"), 0
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        cr = text.count("\r")
        text = text.replace("\r", "\n")
    bad = _CONTROL.search(text)
    if bad:
        at = bad.start()
        line = at_line + text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        raise SeqlabError(f"{where}: control character U+{ord(bad.group()):04X} at line {line}, column {column} "
                          f"(character offset {at_char + at + bom}); a text corpus holds none but tab and "
                          "newline: remove it or convert the file to text")
    return text, {"bom_removed": int(bom and at_char == 0), "crlf_line_ends": crlf, "cr_line_ends": cr}


@dataclass(frozen=True)
class Block:
    byte_start: int
    byte_len: int
    char_start: int      # in the cleaned text
    chars: int
    line_start: int
    has_text: bool       # holds a character other than whitespace


@dataclass
class ScannedText:
    """What :func:`scan` learnt of one file; ``read`` streams its cleaned text."""
    where: str
    path: Path | None
    data: bytes | None                      # the text itself when it was given in memory
    blocks: list[Block] = field(default_factory=list)
    hygiene: dict = field(default_factory=lambda: {"bom_removed": 0, "crlf_line_ends": 0, "cr_line_ends": 0})

    @property
    def chars(self) -> int:
        return self.blocks[-1].char_start + self.blocks[-1].chars if self.blocks else 0

    @property
    def has_text(self) -> bool:
        return any(b.has_text for b in self.blocks)

    def _open(self):
        return open(self.path, "rb") if self.data is None else io.BytesIO(self.data)

    def _clean(self, raw: bytes, b: Block) -> str:
        text = decode_utf8(raw, self.where, b.byte_start)
        return clean_text(text, self.where, b.char_start, b.line_start, self.hygiene["bom_removed"] > 0)[0]

    def read(self, start: int = 0, end: int | None = None) -> Iterator[str]:
        """The cleaned text of characters ``[start, end)``, one block (whole lines but at the ends) at a time."""
        end = self.chars if end is None else end
        with self._open() as f:
            for b in self.blocks:
                lo, hi = max(start, b.char_start), min(end, b.char_start + b.chars)
                if lo >= hi:
                    continue
                f.seek(b.byte_start)
                text = self._clean(f.read(b.byte_len), b)
                yield text[lo - b.char_start:hi - b.char_start]

    def has_text_in(self, start: int, end: int) -> bool:
        """Whether ``[start, end)`` holds a non-whitespace character; reads at most its two end blocks."""
        for b in self.blocks:
            lo, hi = max(start, b.char_start), min(end, b.char_start + b.chars)
            if lo >= hi or not b.has_text:
                continue
            if lo == b.char_start and hi == b.char_start + b.chars:
                return True
            if any(part.strip() for part in self.read(lo, hi)):
                return True
        return False

    def next_line_start(self, pos: int) -> int | None:
        """The character after the first newline at or after ``pos``; None if there is none."""
        for b in self.blocks:
            if b.char_start + b.chars <= pos:
                continue
            for text in self.read(max(pos, b.char_start), b.char_start + b.chars):
                nl = text.find("\n")
                if nl != -1:
                    return max(pos, b.char_start) + nl + 1
        return None


def _raw_blocks(f, where: str, block_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset, bytes) of consecutive pieces of ``f`` that end after a newline (the last may not)."""
    offset, carry = 0, b""
    while True:
        chunk = f.read(block_bytes)
        data = carry + chunk
        if not chunk:
            if data:
                yield offset, data
            return
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) > MAX_LINE_BYTES:
                raise SeqlabError(f"{where}: a line longer than {MAX_LINE_BYTES >> 20} MiB starts at byte offset "
                                  f"{offset}; a corpus is read line by line: break the text into lines")
            carry = data
            continue
        yield offset, data[:cut]
        offset += cut
        carry = data[cut:]


def scan(where: str, path: Path | None = None, data: bytes | None = None,
         block_bytes: int = BLOCK_BYTES) -> ScannedText:
    """Read a file (or ``data``) once: check and count it, and index its blocks (see the module docstring)."""
    out = ScannedText(where, Path(path) if path is not None else None, data)
    chars = lines = 0
    with out._open() as f:
        for offset, raw in _raw_blocks(f, where, block_bytes):
            text = decode_utf8(raw, where, offset)
            text, counts = clean_text(text, where, chars, lines, out.hygiene["bom_removed"] > 0)
            for k, v in counts.items():
                out.hygiene[k] += v
            out.blocks.append(Block(offset, len(raw), chars, len(text), lines, not text.isspace() and bool(text)))
            chars += len(text)
            lines += text.count("\n")
    return out
