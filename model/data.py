"""Reading, checking and encoding a text corpus; train/validation split; random batches."""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import CorpusError
from .text_stream import binary_error, read_error, wide_text
from .token_cache import Progress, TokenCache
from .tokenizer import CharTokenizer, UnknownCharactersError, ascii_counts

TRAIN_FRACTION = 0.9
BUILTIN_CORPUS_NAME = "python-stdlib"
BUILTIN_CORPUS_MAX_BYTES = 4 * 1024 * 1024


def min_chars_for(block_size: int) -> int:
    """Fewest characters for which both splits hold at least one batch row (block_size + 1)."""
    n = block_size + 1
    while split_point(n) < block_size + 1 or n - split_point(n) < block_size + 1:
        n += 1
    return n


def split_point(n: int) -> int:
    return int(TRAIN_FRACTION * n)


def read_text(path: str | os.PathLike[str]) -> str:
    """Read a file as UTF-8 text, with one clear CorpusError for anything unusable."""
    return decode_text(read_bytes(path), str(path))


def read_bytes(path: str | os.PathLike[str]) -> bytearray:
    """A file's bytes in a writable buffer, with one clear CorpusError if it cannot be read."""
    path = Path(path)
    try:
        if path.is_dir():
            raise CorpusError(f"{path} is a directory, not a text file")
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = bytearray(size)
            got = f.readinto(raw)
            if got < size:  # the file shrank meanwhile
                del raw[got:]
            rest = f.read()  # or grew
            if rest:
                raw += rest
    except OSError as exc:
        raise read_error(path, exc) from None
    return raw


def check_bytes(raw: bytes | bytearray, name: str) -> None:
    if not raw:
        raise CorpusError(f"{name} is empty")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise binary_error(name, nul, raw[:4])


def decode_text(raw: bytes | bytearray, name: str) -> str:
    check_bytes(raw, name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(wide_text(name, raw[:4]) or
                          f"{name} is not UTF-8 text (invalid byte 0x{raw[exc.start]:02x} at offset {exc.start})"
                          ) from None
    # As Python's text mode does (and so the seed): one BOM dropped, universal newlines.
    text = text.removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        raise CorpusError(f"{name} is empty")
    return text


def builtin_corpus_text(max_bytes: int = BUILTIN_CORPUS_MAX_BYTES) -> tuple[str, str]:
    """The Python standard library's own .py sources, in sorted path order, capped at max_bytes.

    Needs no network and no file of ours: every Python installation carries it. Returns
    (text, description).
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    size = 0
    files = 0
    for path in _stdlib_sources(root):
        try:
            text = decode_text(path.read_bytes(), str(path))
        except (OSError, CorpusError):
            continue
        piece = f"# {path.relative_to(root)}\n{text}\n"
        if size + len(piece) > max_bytes:
            break
        parts.append(piece)
        size += len(piece)
        files += 1
    if not parts:
        raise CorpusError(f"no Python sources found under {root} for the built-in corpus")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return "".join(parts), f"Python {version} standard library sources ({files} files, {size / 1e6:.1f} MB)"


_SKIPPED_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "__pycache__"}


def _stdlib_sources(root: Path) -> list[Path]:
    """Every .py file under root, sorted by relative path, without tests and installed packages."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS]
        found.extend(Path(folder, f) for f in files if f.endswith(".py"))
    return sorted(found, key=lambda p: p.relative_to(root).parts)


@dataclass
class Corpus:
    """A text encoded to ids, split 90/10 into training and validation data.

    The ids are in memory (`ids`), or in a token cache file (`cache`, model/token_cache.py) that
    each batch reads through a memmap of its own: a text larger than RAM trains in little memory.
    """

    name: str
    tokenizer: CharTokenizer
    ids: np.ndarray | None = None  # uint8/uint16/uint32, one id per character; None: see cache
    description: str = ""  # for people: what the text is
    cache: TokenCache | None = None
    # cache ids -> tokenizer ids, when the tokenizer is not the cache's own (a checkpoint's
    # vocabulary, a superset of the text's); None: the same
    remap: np.ndarray | None = None

    @classmethod
    def from_text(cls, text: str, name: str, tokenizer: CharTokenizer | None = None) -> Corpus:
        tokenizer = tokenizer or CharTokenizer.from_text(text)
        try:
            ids = tokenizer.encode_array(text)
        except UnknownCharactersError as exc:
            raise CorpusError(f"{name}: {exc}") from None
        return cls(name=name, tokenizer=tokenizer, ids=ids)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], tokenizer: CharTokenizer | None = None) -> Corpus:
        """The text read and encoded in memory (see `cached` for texts of any size)."""
        name = str(path)
        raw = read_bytes(path)
        if not raw.isascii():
            return cls.from_text(decode_text(raw, name), name, tokenizer)  # decode_text checks
        check_bytes(raw, name)
        # ASCII is valid UTF-8 with one byte per character: encode the bytes themselves, without
        # making a str of them (the seed's way holds the text, a list of ids and a tensor of
        # 8-byte ids at once). Line endings are normalised as decode_text does.
        if b"\r" in raw:
            raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        counts = ascii_counts(np.frombuffer(raw, dtype=np.uint8))
        tokenizer = tokenizer or CharTokenizer.from_counts(counts)
        try:
            ids = tokenizer.encode_ascii(raw, counts)
        except UnknownCharactersError as exc:
            raise CorpusError(f"{name}: {exc}") from None
        return cls(name=name, tokenizer=tokenizer, ids=ids)

    @classmethod
    def cached(
        cls,
        path: str | os.PathLike[str],
        tokenizer: CharTokenizer | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: Progress | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> Corpus:
        """The text through its token cache, built first when missing or stale (progress and
        notice: see TokenCache.open_or_build). A tokenizer (a checkpoint's) must hold every
        character of the text; ids are mapped to it batch by batch."""
        cache = TokenCache.open_or_build(path, cache_dir, progress, notice)
        return cls.from_cache(cache, str(path), tokenizer)

    @classmethod
    def from_cache(cls, cache: TokenCache, name: str, tokenizer: CharTokenizer | None = None) -> Corpus:
        remap = None
        if tokenizer is not None and tokenizer.chars != list(cache.vocab):
            unknown = [c for c in cache.vocab if c not in tokenizer.stoi]
            if unknown:
                raise CorpusError(f"{name}: {UnknownCharactersError(unknown)}")
            remap = np.array([tokenizer.stoi[c] for c in cache.vocab], dtype=np.int64)
        return cls(name=name, tokenizer=tokenizer or cache.tokenizer, cache=cache, remap=remap)

    @classmethod
    def builtin(cls, tokenizer: CharTokenizer | None = None) -> Corpus:
        text, description = builtin_corpus_text()
        corpus = cls.from_text(text, BUILTIN_CORPUS_NAME, tokenizer)
        corpus.description = description
        return corpus

    def __post_init__(self) -> None:
        self.description = self.description or self.name
        if (self.ids is None) == (self.cache is None):
            raise ValueError("a Corpus has its ids in memory or in a cache, one of the two")
        self._n = len(self.ids) if self.ids is not None else self.cache.n_chars
        self._split = split_point(self._n)
        if self.ids is not None:
            # torch views over the NumPy ids: no copy, and uint8 stays 1 byte a character.
            self.train_data = torch.from_numpy(self.ids[: self._split])
            self.val_data = torch.from_numpy(self.ids[self._split :])

    @property
    def path(self) -> str | None:
        """The text file's absolute path; None for the built-in corpus."""
        return None if self.name == BUILTIN_CORPUS_NAME else str(Path(self.name).resolve())

    def __len__(self) -> int:
        return self._n

    def check_block_size(self, block_size: int) -> None:
        needed = min_chars_for(block_size)
        if len(self) < needed:
            raise CorpusError(
                f"{self.name} has {len(self)} characters; block size {block_size} needs at least "
                f"{needed} (or try a smaller --block-size)"
            )

    def get_batch(
        self, split: str, batch_size: int, block_size: int, generator: torch.Generator | None = None,
        rows: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random rows of block_size ids (x) and the same rows shifted by one (y), as the seed does.

        The offsets are drawn exactly as the seed draws them; the rows are gathered with one
        indexing operation instead of a Python loop of slices. `rows` (start, stop): only those
        rows of the batch are gathered, though all its offsets are drawn (a process of several
        takes its share of the batch one process would have drawn).
        """
        if self.cache is None:
            data = self.train_data if split == "train" else self.val_data
            ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
            if rows is not None:
                ix = ix[rows[0] : rows[1]]
            batch = data[ix.unsqueeze(1) + torch.arange(block_size + 1)].long()  # (B, T+1)
            return batch[:, :-1], batch[:, 1:]
        # The same offsets from the same draws, gathered from a memmap opened for this batch
        # alone: the ids are those the in-memory path would use, and the pages read are let go.
        start, stop = (0, self._split) if split == "train" else (self._split, self._n)
        ix = torch.randint(stop - start - block_size, (batch_size,), generator=generator)
        if rows is not None:
            ix = ix[rows[0] : rows[1]]
        where = (ix.unsqueeze(1) + torch.arange(block_size + 1)).numpy()
        ids = self.cache.open(start, stop)
        gathered = ids[where]
        del ids
        batch = torch.from_numpy(self.remap[gathered] if self.remap is not None else gathered.astype(np.int64))
        return batch[:, :-1], batch[:, 1:]
