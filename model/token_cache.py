"""A text encoded once into a file of ids, then read through numpy.memmap: corpora larger than RAM.

    cache = TokenCache.open_or_build("big.txt")      # builds <cache dir>/big-<hash>.npy when needed
    ids = cache.open()                               # a read-only np.memmap of every id

The cache of a text is two files in the cache folder (``$CHARGPT_TUI_CACHE_DIR``, else
``$XDG_CACHE_HOME/chargpt-tui/corpora``, else ``~/.cache/chargpt-tui/corpora``), named after the
text's absolute path: ``<stem>-<hash>.npy`` holds one id per character (NumPy's own format, so
``np.load(path, mmap_mode="r")`` reads it) and ``<stem>-<hash>.json`` the metadata (format
version, vocabulary, dtype, counts, the .npy's inode and mtime, and the source's size, times, inode and a
hash of its first and last MiB). The metadata is written last: a cache is used only when the JSON
is there, of this format version, names the very .npy file that was opened (a rebuild between
reading the one and opening the other is caught), and describes the source as it is now.
Anything else is rebuilt, with one line saying why. Builds of a text are serialised by a lock
file; a build's temporary is removed by a later one only once its process is gone.

The text is read twice, in chunks (model/text_stream.py: decoded as text mode decodes it), and
never held whole: the first pass finds the vocabulary and the number of characters, the second
encodes into the .npy. ASCII chunks, the common case, are counted and translated as bytes (no
str is made of them).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .checkpoint import fsync_dir
from .errors import CorpusError
from .id_file import BackgroundWriter, IdFile, write_text_atomically
from .rundir import process_exists
from .text_stream import NotUtf8, check_readable, pieces, raise_if_binary
from .tokenizer import CharTokenizer, _codepoints

FORMAT_VERSION = 2  # 2: the metadata names its id file (inode, mtime)
CACHE_ENV = "CHARGPT_TUI_CACHE_DIR"
HASHED_BYTES = 1024 * 1024  # of the source's head and tail, in the metadata
USE_DIRECT_IO = True  # (tests turn it off to check the plain path too)
_SLICE_CHARS = 1 << 22
_ENCODE_SLICE = 8 * 1024 * 1024  # code points counted a slice at a time: bincount's int64 copy stays small

# (bytes done, bytes to do, what is being done): called a few times a second at most
Progress = Callable[[int, int, str], None]


def default_cache_dir() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "chargpt-tui" / "corpora"


@dataclass(frozen=True)
class SourceStamp:
    """What identifies the text a cache was built from."""

    size: int
    mtime_ns: int
    edges_sha256: str  # of the first and last MiB
    # the file itself: a copy with the same size and times (cp -p, rsync -t) is another inode, and
    # any change to the file moves its ctime
    inode: int = 0
    ctime_ns: int = 0

    @classmethod
    def of(cls, path: Path) -> SourceStamp:
        try:
            return cls._of(path)
        except OSError as exc:
            raise CorpusError(f"{path}: cannot read ({exc.strerror or exc})") from None

    @classmethod
    def _of(cls, path: Path) -> SourceStamp:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            digest = hashlib.sha256()
            digest.update(f.read(HASHED_BYTES))
            if st.st_size > HASHED_BYTES:
                f.seek(max(HASHED_BYTES, st.st_size - HASHED_BYTES))
                digest.update(f.read(HASHED_BYTES))
        return cls(st.st_size, st.st_mtime_ns, digest.hexdigest(), st.st_ino, st.st_ctime_ns)


class CacheWriteError(CorpusError):
    """The cache folder cannot be written (a read-only home, a full disk)."""


@dataclass(frozen=True)
class TokenCache:
    """A built, checked cache: the ids of `source` in `npy_path`, read through np.memmap."""

    source: Path
    npy_path: Path
    vocab: str
    dtype: np.dtype
    n_chars: int
    offset: int  # where the ids start in the .npy (after its header)
    # the .npy, open: batches map this file even if a rebuild (another run, a changed text)
    # renames a new one over its name meanwhile
    handle: BinaryIO = field(repr=False, compare=False)
    build_s: float | None = None  # seconds this process took to build it; None: it was there

    @property
    def tokenizer(self) -> CharTokenizer:
        return CharTokenizer(self.vocab)

    def open(self, start: int = 0, stop: int | None = None) -> np.memmap:
        """A fresh read-only memmap of ids[start:stop]. Drop it when done: pages read through a
        long-lived map stay counted in the process's memory (nanoGPT re-opens per batch too)."""
        stop = self.n_chars if stop is None else stop
        return np.memmap(self.handle, dtype=self.dtype, mode="r",
                         offset=self.offset + start * self.dtype.itemsize, shape=(stop - start,))

    @classmethod
    def open_or_build(
        cls,
        source: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str] | None = None,
        progress: Progress | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> TokenCache:
        """The cache of `source`, built first if it is missing or stale (`notice` hears why it
        is rebuilt). CorpusError for a text that cannot be used, or a cache folder that cannot
        be written."""
        source = Path(source)
        check_readable(source)
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheWriteError(f"cannot make the corpus cache folder {folder} ({exc.strerror or exc}); "
                              f"set {CACHE_ENV} or --cache-dir to another") from None
        base = folder / cache_name(source)
        found, why = cls._load(source, base)
        if found is not None:
            return found
        # One builder at a time per text (two runs started together, the ranks of a torchrun
        # job): the others wait for it, then find its cache valid.
        try:
            lock_fd = os.open(f"{base}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise CacheWriteError(f"cannot write the corpus cache in {folder} ({exc.strerror or exc}); "
                              f"set {CACHE_ENV} or --cache-dir to another folder") from None
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                locked = True
            except OSError:  # no locks here (some network filesystems): build without
                locked = False
            found, why_now = cls._load(source, base)
            if found is not None:
                return found
            if why is not None and notice is not None:
                notice(f"rebuilding the corpus cache of {source}: {why_now or why}")
            if locked:  # without the lock another builder may be writing its temporary now
                _remove_killed_builds(base)
            return _build(source, base, progress)
        finally:
            os.close(lock_fd)

    @classmethod
    def _load(cls, source: Path, base: Path) -> tuple[TokenCache | None, str | None]:
        """The cache at base if it is valid for source; else None and why (None: there is none)."""
        meta_path, npy_path = Path(f"{base}.json"), Path(f"{base}.npy")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as exc:
            return None, f"its metadata cannot be read ({exc})"
        try:
            if not isinstance(meta, dict) or meta.get("format") != "chargpt-tui token cache":
                return None, "its metadata is not a chargpt-tui token cache"
            if meta.get("version") != FORMAT_VERSION:
                return None, f"it is format version {meta.get('version')}, this is version {FORMAT_VERSION}"
            stamp = SourceStamp.of(source)
            saved = meta["source"]
            if (stamp.size, stamp.mtime_ns, stamp.inode, stamp.ctime_ns) != (
                    saved["size"], saved["mtime_ns"], saved["inode"], saved["ctime_ns"]):
                return None, "the text changed since it was built (its size, times or file)"
            if stamp.edges_sha256 != meta["source"]["edges_sha256"]:
                return None, "the text changed since it was built (its contents)"
            dtype, n = np.dtype(meta["dtype"]), int(meta["n_chars"])
            vocab = str(meta["vocab"])
            if len(vocab) != len(set(vocab)) or CharTokenizer(vocab).id_dtype != dtype:
                return None, "its vocabulary does not match its id type"
            ids_file = meta["ids"]
            f = open(npy_path, "rb")  # checked, then kept: the file checked is the file used
        except FileNotFoundError:
            return None, "its id file is missing"
        except CorpusError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return None, f"it cannot be read ({exc})"
        try:
            # the metadata read above describes this very file: a rebuild between reading the one
            # and opening the other could pair one text's vocabulary with another's ids
            inode, mtime_ns = _identity(f)
            if inode != ids_file.get("inode"):
                f.close()
                return None, "its id file was replaced since its metadata was written (rebuilt meanwhile?)"
            offset = _check_npy(f, dtype, n)
            if mtime_ns != ids_file.get("mtime_ns"):
                f.close()
                return None, "its id file was written to after it was built"
        except (OSError, ValueError, AttributeError) as exc:
            f.close()
            return None, f"its id file does not match its metadata (torn or foreign: {exc})"
        return cls(source, npy_path, vocab, dtype, n, offset, f), None


_HOST = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname()) or "host"


def _identity(f: BinaryIO) -> tuple[int, int]:
    """Which file f is in its folder: its inode, and the time its last byte was written. (Not the
    device number: NFS numbers a mount per client, and the path fixes the filesystem anyway.)"""
    st = os.fstat(f.fileno())
    return st.st_ino, st.st_mtime_ns


def _remove_killed_builds(base: Path) -> None:
    """Delete the temporaries of builds whose process is gone (killed mid-build). Called with the
    build lock held; a live process's is left alone all the same (one that built without the lock)."""
    for tmp in base.parent.glob(f"{base.name}.npy.*.tmp"):
        pid, _, host = tmp.name[len(base.name) + len(".npy."):-len(".tmp")].partition("@")
        if host not in ("", _HOST):  # another machine's, on a shared cache folder: its pid means nothing here
            continue
        if pid.isdigit() and int(pid) != os.getpid() and not process_exists(int(pid)):
            tmp.unlink(missing_ok=True)


def _check_npy(f: BinaryIO, dtype: np.dtype, n: int) -> int:
    """The offset of the ids in an .npy of n ids of dtype; ValueError if it is not one."""
    if np.lib.format.read_magic(f) != (1, 0):
        raise ValueError("not the .npy version written here")
    shape, fortran, file_dtype = np.lib.format.read_array_header_1_0(f)
    offset = f.tell()
    size = os.fstat(f.fileno()).st_size
    if shape != (n,) or fortran or file_dtype != dtype or size != offset + n * dtype.itemsize:
        raise ValueError(f"{shape} {file_dtype}, {size} bytes")
    return offset


def cache_name(source: Path) -> str:
    """<stem>-<12 hex digits of the absolute path's hash>: one cache per text file."""
    resolved = str(source.resolve())
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in source.stem)[:40] or "text"
    return f"{stem}-{hashlib.sha256(resolved.encode('utf-8', 'surrogateescape')).hexdigest()[:12]}"


# ---- building ----------------------------------------------------------------------------------
def _build(source: Path, base: Path, progress: Progress | None) -> TokenCache:
    started = time.perf_counter()
    name = str(source)
    stamp = SourceStamp.of(source)
    total = 2 * stamp.size
    report = _Throttled(progress, total)

    # pass 1: the vocabulary and the number of characters
    counts = np.zeros(128, dtype=np.int64)
    try:
        for done, piece in pieces(source, name):
            if not isinstance(piece, str):
                counts[:128] += _ascii_counts(piece)
            else:
                counts = _add_codepoint_counts(counts, piece)
            report(done, "reading")
    except NotUtf8:
        raise_if_binary(source, name)  # as the whole-file check does: a NUL anywhere is named first
        raise
    n_chars = int(counts.sum())
    if n_chars == 0:
        raise CorpusError(f"{name} is empty")
    tokenizer = CharTokenizer.from_counts(counts)
    dtype = tokenizer.id_dtype
    ascii_table = np.zeros(128, dtype=dtype)
    for c in np.flatnonzero(counts[:128]):
        ascii_table[c] = tokenizer.stoi[chr(c)]
    translation = ascii_table.tobytes() + bytes(128) if dtype == np.uint8 else None

    # pass 2: the ids, into a temporary file renamed into place when whole
    npy_path, meta_path = Path(f"{base}.npy"), Path(f"{base}.json")
    tmp = Path(f"{base}.npy.{os.getpid()}@{_HOST}.tmp")  # whose: a later build removes it once that is gone
    handle: BinaryIO | None = None
    try:
        with IdFile(tmp, direct_io=USE_DIRECT_IO) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n_chars,)})
            offset = f.tell()
            written = 0
            with BackgroundWriter(f) as writer:  # the disk writes one piece while the next is encoded
                for done, piece in pieces(source, name):
                    for ids in _encoded(piece, tokenizer, translation, ascii_table):
                        written += len(ids)
                        if written > n_chars:
                            break
                        writer.write(ids)
                    report(stamp.size + done, "encoding")
            if written != n_chars or SourceStamp.of(source) != stamp:
                raise CorpusError(f"{name} changed while it was being read; try again")
            f.finish()  # on the disk when this returns
        handle = open(tmp, "rb")  # the file this process will read, whatever its name becomes
        inode, mtime_ns = _identity(handle)  # (a rename keeps both)
        # the old metadata goes first: never a JSON beside an .npy it does not describe
        meta_path.unlink(missing_ok=True)
        os.replace(tmp, npy_path)
        fsync_dir(base.parent)  # the rename on the disk before the metadata that vouches for it
        meta = {
            "format": "chargpt-tui token cache",
            "version": FORMAT_VERSION,
            "source": {"path": str(source.resolve()), "size": stamp.size, "mtime_ns": stamp.mtime_ns,
                       "inode": stamp.inode, "ctime_ns": stamp.ctime_ns, "edges_sha256": stamp.edges_sha256},
            "ids": {"inode": inode, "mtime_ns": mtime_ns},
            "vocab": "".join(tokenizer.chars),
            "dtype": dtype.str,
            "n_chars": n_chars,
            "counts": {c: int(counts[ord(c)]) for c in tokenizer.chars},
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_text_atomically(meta_path, json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
        fsync_dir(base.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if handle is not None:
            handle.close()
        if isinstance(exc, OSError):  # (reading the text raises CorpusError)
            raise CacheWriteError(f"cannot write the corpus cache in {base.parent} ({exc.strerror or exc}); "
                                  f"set {CACHE_ENV} or --cache-dir to another folder") from None
        raise
    report(total, "done", force=True)
    return TokenCache(source, npy_path, "".join(tokenizer.chars), dtype, n_chars, offset, handle,
                      build_s=time.perf_counter() - started)


def _encoded(piece: bytes | bytearray | str, tokenizer: CharTokenizer, translation: bytes | None,
             ascii_table: np.ndarray) -> Iterator[bytes | bytearray | np.ndarray]:
    """A piece's ids, in slices of at most 8 MB: buffers that size come back from malloc's heap
    each time, where 64 MB ones are mapped afresh and fault in every page again (without
    device.tune_malloc, as in the process that opens the dashboard: 2.2 s of system time a GB)."""
    if isinstance(piece, str):
        yield tokenizer.encode_array(piece)
        return
    for start in range(0, len(piece), _ENCODE_SLICE):
        part = piece[start : start + _ENCODE_SLICE]
        yield part.translate(translation) if translation is not None else ascii_table[np.frombuffer(part, np.uint8)]


def _ascii_counts(piece: bytes | bytearray) -> np.ndarray:
    """How often each ASCII code occurs (torch's bincount reads bytes as they are: 4x NumPy's,
    which widens them to int64 first)."""
    import torch

    with warnings.catch_warnings():  # "non-writable buffer": it is only read
        warnings.simplefilter("ignore", UserWarning)
        data = torch.frombuffer(piece, dtype=torch.uint8)
    return torch.bincount(data, minlength=128)[:128].numpy()


def _add_codepoint_counts(counts: np.ndarray, text: str) -> np.ndarray:
    for start in range(0, len(text), _SLICE_CHARS):
        found = np.bincount(_codepoints(text[start : start + _SLICE_CHARS]))
        if len(found) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(found) - len(counts), dtype=np.int64)])
        counts[: len(found)] += found
    return counts


class _Throttled:
    """Passes progress on at most 10 times a second (and always at the end)."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.last = progress, total, 0.0

    def __call__(self, done: int, what: str, force: bool = False) -> None:
        now = time.perf_counter()
        if self.progress is not None and (force or now - self.last >= 0.1):
            self.last = now
            self.progress(done, self.total, what)
