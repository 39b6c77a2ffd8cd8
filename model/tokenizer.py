"""Character tokenizer: the vocabulary is the sorted set of characters in the text.

Encoding is vectorised with NumPy (code points through a lookup table), so a 100 MB text
encodes in seconds instead of running a Python loop per character.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

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
        codepoints = np.array([ord(c) for c in self.chars], dtype=np.int64)
        # code point -> id, -1 for characters outside the vocabulary
        self._table = np.full(int(codepoints.max()) + 1, -1, dtype=np.int32)
        self._table[codepoints] = np.arange(len(self.chars), dtype=np.int32)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        seen: set[int] = set()
        for start in range(0, len(text), _CHUNK_CHARS):
            seen.update(np.unique(_codepoints(text[start : start + _CHUNK_CHARS])).tolist())
        return cls(chr(c) for c in seen)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def id_dtype(self) -> np.dtype:
        """The smallest unsigned type that holds every id: uint8 for up to 256 characters."""
        if self.vocab_size <= 1 << 8:
            return np.dtype(np.uint8)
        if self.vocab_size <= 1 << 16:
            return np.dtype(np.uint16)
        return np.dtype(np.uint32)

    def start_id(self) -> int:
        """A neutral first id for generating from nothing: a newline if the text has one."""
        return self.stoi.get("\n", 0)

    def unknown_chars(self, text: str) -> list[str]:
        unknown: set[str] = set()
        for start in range(0, len(text), _CHUNK_CHARS):
            ids = self._lookup(_codepoints(text[start : start + _CHUNK_CHARS]))
            if (ids < 0).any():
                chunk = text[start : start + _CHUNK_CHARS]
                unknown.update(c for c in set(chunk) if c not in self.stoi)
        return sorted(unknown)

    def encode_array(self, text: str) -> np.ndarray:
        """Text -> 1-D array of ids in ``id_dtype``. Raises UnknownCharactersError."""
        out = np.empty(len(text), dtype=self.id_dtype)
        for start in range(0, len(text), _CHUNK_CHARS):
            chunk = text[start : start + _CHUNK_CHARS]
            ids = self._lookup(_codepoints(chunk))
            if (ids < 0).any():
                raise UnknownCharactersError(c for c in set(chunk) if c not in self.stoi)
            out[start : start + len(chunk)] = ids
        return out

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: Iterable[int]) -> str:
        chars = self.chars
        return "".join(chars[int(i)] for i in ids)

    def _lookup(self, codepoints: np.ndarray) -> np.ndarray:
        inside = codepoints < len(self._table)
        ids = np.full(len(codepoints), -1, dtype=np.int32)
        ids[inside] = self._table[codepoints[inside]]
        return ids


def _codepoints(text: str) -> np.ndarray:
    # UTF-32 is one fixed-width unit per character, so the bytes are the code points.
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
