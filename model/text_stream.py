"""A text file read in chunks, decoded as Python's text mode decodes it: for texts larger than memory.

    for bytes_read, piece in pieces(path, name):   # piece: bytes/bytearray (ASCII) or str
        ...

A chunk is cut where a character ends and never right after a '\\r' (the rest starts the next
piece), so a character or a '\\r\\n' split between two reads is decoded whole: strict UTF-8, one
leading BOM dropped, '\\r\\n' and '\\r' read as '\\n' (model/data.py's decode_text, the in-memory
path, is the reference). ASCII pieces stay bytes, with their newlines normalised; the errors are
the in-memory path's, with the same byte offsets.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path

from .errors import CorpusError

CHUNK_BYTES = 64 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


def check_readable(source: Path) -> None:
    """One clear CorpusError for a text file that cannot be opened."""
    try:
        if source.is_dir():
            raise CorpusError(f"{source} is a directory, not a text file")
        with open(source, "rb"):
            pass
    except OSError as exc:
        raise read_error(source, exc) from None


def read_error(path: str | os.PathLike[str], exc: OSError) -> CorpusError:
    """What to tell the user when a text file cannot be read."""
    if isinstance(exc, FileNotFoundError):
        return CorpusError(f"{path}: no such file")
    if isinstance(exc, PermissionError):
        return CorpusError(f"{path}: permission denied")
    return CorpusError(f"{path}: cannot read ({exc.strerror or exc})")


Pieces = Iterator[tuple[int, bytes | bytearray | str]]


def pieces(source: Path, name: str, chunk_bytes: int | None = None) -> Pieces:
    """The text in pieces, each decoded as text mode would decode it: (bytes of the file read so
    far, piece). An ASCII piece comes as bytes or a bytearray (its newlines normalised; valid
    until the next piece is asked for: the buffer is read into again), any other as str.

    A piece ends where a character ends, and never right after a '\\r' unless the file does (a
    '\\r\\n' split over two reads is one newline); what is held back starts the next piece."""
    try:
        yield from _read_pieces(source, name, chunk_bytes)
    except OSError as exc:  # reading the text, not writing the cache
        raise CorpusError(f"{name}: cannot read ({exc.strerror or exc})") from None


def _read_pieces(source: Path, name: str, chunk_bytes: int | None) -> Pieces:
    chunk_bytes = max(chunk_bytes or CHUNK_BYTES, 8)
    buf = bytearray(chunk_bytes)  # read into, again and again: no fresh pages to fault in
    view = memoryview(buf)
    with open(source, "rb") as f:
        carry = f.read(len(_BOM))
        offset = 0  # file offset of the first byte of carry
        if carry == _BOM:  # one BOM dropped, as data.decode_text does
            carry, offset = b"", len(_BOM)
        while True:
            view[: len(carry)] = carry
            got = f.readinto(view[len(carry) :])
            at_end = got == 0
            filled = len(carry) + got
            cut = filled if at_end else _safe_cut(view[:filled])
            # the whole buffer when it can be (the consumer is done with it before the next read)
            piece = buf if cut == filled == len(buf) else bytes(view[:cut])
            carry = bytes(view[cut:filled])
            if piece:
                yield offset + cut, _decode(piece, offset, name)
            offset += cut
            if at_end:
                return


def _safe_cut(buf: memoryview) -> int:
    """Where to end a piece of buf that more bytes follow: before an incomplete UTF-8 sequence
    at its end, and before a final '\\r'."""
    cut = len(buf)
    i, back = cut - 1, 0
    while i >= 0 and back < 3 and buf[i] & 0xC0 == 0x80:  # continuation bytes
        i, back = i - 1, back + 1
    if i >= 0 and buf[i] >= 0xC0:
        needed = 2 if buf[i] < 0xE0 else 3 if buf[i] < 0xF0 else 4
        if i + needed > cut:
            cut = i
    if cut > 0 and buf[cut - 1] == 0x0D:
        cut -= 1
    return cut


class NotUtf8(CorpusError):
    """The text is not UTF-8 (a NUL byte elsewhere is the first thing to report: raise_if_binary)."""


# the byte-order marks of the encodings whose text is full of NUL bytes (Windows' "Unicode")
WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
             (b"\xfe\xff", "UTF-16"))


def wide_text(name: str, head: bytes | bytearray) -> str | None:
    """What a file that is not UTF-8 is, if its first bytes (head) are the byte-order mark of
    UTF-16 or UTF-32 text, and how to make it UTF-8."""
    for bom, encoding in WIDE_BOMS:
        if head.startswith(bom):
            converted = shlex.quote(f"{Path(name).stem}-utf8.txt")
            return f"{name} is {encoding} text; save it as UTF-8 (iconv -f {encoding} -t UTF-8 {shlex.quote(name)} " \
                   f"> {converted})"
    return None


def binary_error(name: str, nul: int, head: bytes | bytearray) -> CorpusError:
    """What a NUL byte at offset nul means: UTF-16 or UTF-32 text (wide_text), else a file that
    is not text."""
    return CorpusError(wide_text(name, head) or f"{name} looks like a binary file (NUL byte at offset {nul}), not text")


def raise_if_binary(source: Path, name: str) -> None:
    offset = 0
    with open(source, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            nul = chunk.find(b"\x00")
            if nul >= 0:
                f.seek(0)
                raise binary_error(name, offset + nul, f.read(4))
            offset += len(chunk)


def _decode(piece: bytes | bytearray, offset: int, name: str) -> bytes | bytearray | str:
    nul = piece.find(b"\x00")
    if nul >= 0:
        raise binary_error(name, offset + nul, piece[:4] if offset == 0 else b"")
    if piece.isascii():
        if b"\r" in piece:
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return piece
    try:
        text = piece.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUtf8(wide_text(name, piece[:4] if offset == 0 else b"") or
                      f"{name} is not UTF-8 text (invalid byte 0x{piece[exc.start]:02x} at offset {offset + exc.start})"
                      ) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text
