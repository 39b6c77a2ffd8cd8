"""Character tokenizer: the vocabulary is the sorted set of characters in the text.

Encoding is vectorised with NumPy (code points through a lookup table) instead of a Python
loop per character. ASCII text, the common case, is encoded straight from its bytes
(encode_ascii), in place when the ids fit in a byte: a 100 MB file is read, checked and
encoded in well under a second with one 100 MB buffer.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# NumPy is imported where it is used: a dashboard viewer builds a CharTokenizer for its prompt
# (unknown characters, decoding) and starts faster without it.

# Encode long texts in slices so that the UTF-32 copy of the text (4 bytes a character)
# never exists whole: peak memory stays near the size of the text itself.
_CHUNK_CHARS = 1 << 22


class UnknownCharactersError(ValueError):
    """Text holds characters that are not in the vocabulary."""

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars))
        shown = " ".join(repr(c) for c in self.chars[:20])
        more = f" and {len(self.chars) - 20} more" if len(self.chars) > 20 else ""
        super().__init__(f"{len(self.chars)} character(s) not in the vocabulary: {shown}{more}")


class CharTokenizer:
    def __init__(self, chars: Iterable[str]) -> None:
        self.chars: list[str] = sorted(set(chars))
        if not self.chars:
            raise ValueError("a vocabulary needs at least one character")
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("vocabulary entries must be single characters")
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @functools.cached_property
    def _table(self) -> np.ndarray:
        """Code point -> id, -1 for characters outside the vocabulary."""
        import numpy as np

        codepoints = np.array([ord(c) for c in self.chars], dtype=np.int64)
        table = np.full(int(codepoints.max()) + 1, -1, dtype=np.int32)
        table[codepoints] = np.arange(len(self.chars), dtype=np.int32)
        return table

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        import numpy as np

        seen: set[int] = set()
        for start in range(0, len(text), _CHUNK_CHARS):
            counts = np.bincount(_codepoints(text[start : start + _CHUNK_CHARS]))
            seen.update(np.flatnonzero(counts).tolist())
        return cls(chr(c) for c in seen)

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> CharTokenizer:
        """The vocabulary of the code points whose count is not zero."""
        import numpy as np

        return cls(chr(c) for c in np.flatnonzero(counts))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def id_dtype(self) -> np.dtype:
        """The smallest unsigned type that holds every id: uint8 for up to 256 characters."""
        import numpy as np

        if self.vocab_size <= 1 << 8:
            return np.dtype(np.uint8)
        if self.vocab_size <= 1 << 16:
            return np.dtype(np.uint16)
        return np.dtype(np.uint32)

    def start_id(self) -> int:
        """A neutral first id for generating from nothing: a newline if the text has one."""
        return self.stoi.get("\n", 0)

    def unknown_chars(self, text: str) -> list[str]:
        if len(text) < 10_000:  # a prompt: no array machinery
            return sorted({c for c in text if c not in self.stoi})
        unknown: set[str] = set()
        for start in range(0, len(text), _CHUNK_CHARS):
            ids = self._lookup(_codepoints(text[start : start + _CHUNK_CHARS]))
            if (ids < 0).any():
                chunk = text[start : start + _CHUNK_CHARS]
                unknown.update(c for c in set(chunk) if c not in self.stoi)
        return sorted(unknown)

    def encode_array(self, text: str) -> np.ndarray:
        """Text -> 1-D array of ids in ``id_dtype``. Raises UnknownCharactersError."""
        import numpy as np

        out = np.empty(len(text), dtype=self.id_dtype)
        for start in range(0, len(text), _CHUNK_CHARS):
            chunk = text[start : start + _CHUNK_CHARS]
            ids = self._lookup(_codepoints(chunk))
            if (ids < 0).any():
                raise UnknownCharactersError(c for c in set(chunk) if c not in self.stoi)
            out[start : start + len(chunk)] = ids
        return out

    def encode_ascii(self, raw: bytearray, counts: np.ndarray | None = None) -> np.ndarray:
        """ASCII bytes -> ids. When the ids fit in a byte, `raw` is overwritten with them and
        returned as an array (no second buffer). `counts` (ascii_counts of raw) saves a pass
        when the caller has them. Raises UnknownCharactersError."""
        import numpy as np

        data = np.frombuffer(raw, dtype=np.uint8)
        present = np.flatnonzero(ascii_counts(data) if counts is None else counts)
        unknown = [chr(c) for c in present if chr(c) not in self.stoi]
        if unknown:
            raise UnknownCharactersError(unknown)
        table = np.zeros(256, dtype=self.id_dtype)
        for c in present:
            table[c] = self.stoi[chr(c)]
        if self.id_dtype == np.uint8:
            translation = table.tobytes()
            for start in range(0, len(raw), _CHUNK_CHARS):  # bytes.translate: a C loop, chunk by chunk
                raw[start : start + _CHUNK_CHARS] = raw[start : start + _CHUNK_CHARS].translate(translation)
            return data
        out = np.empty(len(data), dtype=self.id_dtype)
        for start in range(0, len(data), _CHUNK_CHARS):
            out[start : start + _CHUNK_CHARS] = table[data[start : start + _CHUNK_CHARS]]
        return out

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: Iterable[int]) -> str:
        chars = self.chars
        return "".join(chars[int(i)] for i in ids)

    def _lookup(self, codepoints: np.ndarray) -> np.ndarray:
        import numpy as np

        inside = codepoints < len(self._table)
        ids = np.full(len(codepoints), -1, dtype=np.int32)
        ids[inside] = self._table[codepoints[inside]]
        return ids


def ascii_counts(data: np.ndarray) -> np.ndarray:
    """How often each of the 128 ASCII codes occurs in a uint8 array (counted in chunks, so
    bincount's conversion to machine integers never copies the whole array)."""
    import numpy as np

    counts = np.zeros(128, dtype=np.int64)
    for start in range(0, len(data), _CHUNK_CHARS):
        counts += np.bincount(data[start : start + _CHUNK_CHARS], minlength=128)[:128]
    return counts


def _codepoints(text: str) -> np.ndarray:
    # UTF-32 is one fixed-width unit per character, so the bytes are the code points.
    import numpy as np

    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
