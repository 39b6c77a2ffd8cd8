"""The token cache (model/token_cache.py): streamed in chunks, it must give the vocabulary and the
ids of the in-memory path (which reads a file as Python's text mode does), on texts built to
break the streaming; and it is correct or it is rebuilt."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import model.text_stream as text_stream
import model.token_cache as token_cache
from model.data import Corpus, CorpusError
from model.id_file import IdFile
from model.token_cache import FORMAT_VERSION, TokenCache
from model.tokenizer import CharTokenizer

# 1-, 2-, 3- and 4-byte characters (the last beyond U+FFFF), and line ends of every kind
PIECES = ["a", "é", "ж", "€", "日", "🙂", "𝄞", "\r\n", "\r", "\n", " ", "Z"]


def adversarial_bytes(seed: int = 0, n: int = 400) -> bytes:
    rng = np.random.default_rng(seed)
    text = "".join(PIECES[i] for i in rng.integers(0, len(PIECES), n))
    return "\ufeff".encode() + text.encode("utf-8") + b"\r"  # a BOM, and a '\r' as the very last byte


def in_memory(path: Path, tokenizer: CharTokenizer | None = None) -> Corpus:
    return Corpus.from_file(path, tokenizer)


def cached_ids(cache: TokenCache) -> np.ndarray:
    return np.asarray(cache.open()).copy()


@pytest.mark.parametrize("chunk", list(range(8, 21)) + [64, 4096])
def test_streaming_gives_the_in_memory_ids_at_every_chunk_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Chunks of 8..20 bytes put a boundary inside every multi-byte character and between the
    '\\r' and '\\n' of some CRLF, at one chunk size or another."""
    monkeypatch.setattr(text_stream, "CHUNK_BYTES", chunk)
    path = tmp_path / "adversarial.txt"
    path.write_bytes(adversarial_bytes(chunk))
    expected = in_memory(path)
    cache = TokenCache.open_or_build(path, tmp_path / "cache")
    assert list(cache.vocab) == expected.tokenizer.chars
    assert cache.n_chars == len(expected)
    assert np.array_equal(cached_ids(cache), expected.ids)
    assert "\r" not in cache.vocab and "\ufeff" not in cache.vocab
    # and what text mode reads
    assert expected.tokenizer.decode(cached_ids(cache)) == path.read_text(encoding="utf-8-sig")


def test_every_boundary_inside_a_character_and_a_crlf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One 4-byte character, then one CRLF, at each offset of a 16-byte chunk."""
    monkeypatch.setattr(text_stream, "CHUNK_BYTES", 16)
    for shift in range(16):
        path = tmp_path / f"shift{shift}.txt"
        path.write_bytes(b"x" * shift + ("𝄞" * 9).encode() + b"\r\n" * 9 + "é\r\nz".encode() * 5)
        cache = TokenCache.open_or_build(path, tmp_path / "cache")
        expected = in_memory(path)
        assert np.array_equal(cached_ids(cache), expected.ids), shift
        assert list(cache.vocab) == expected.tokenizer.chars


def test_ascii_chunks_with_crlf_across_a_boundary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_stream, "CHUNK_BYTES", 8)
    path = tmp_path / "dos.txt"
    path.write_bytes(b"abcdefg\r\nhijklmn\r\rop\r\n" * 7)  # the first '\r' ends a chunk of 8
    cache = TokenCache.open_or_build(path, tmp_path / "cache")
    assert np.array_equal(cached_ids(cache), in_memory(path).ids)
    assert cache.dtype == np.uint8


def test_wide_vocabularies_take_wider_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_stream, "CHUNK_BYTES", 1000)
    path = tmp_path / "cjk.txt"
    path.write_text("".join(chr(0x4E00 + i) for i in range(600)) * 3 + "ascii\n" * 50, encoding="utf-8")
    cache = TokenCache.open_or_build(path, tmp_path / "cache")
    assert cache.dtype == np.uint16
    assert np.array_equal(cached_ids(cache), in_memory(path).ids)
    # and it is NumPy's own format
    assert np.array_equal(np.load(cache.npy_path, mmap_mode="r"), in_memory(path).ids)


@pytest.mark.parametrize("direct", [True, False])
def test_direct_and_plain_writes_give_the_in_memory_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """O_DIRECT (aligned blocks from a staging buffer, the last partial block plainly) or not."""
    monkeypatch.setattr(token_cache, "USE_DIRECT_IO", direct)
    monkeypatch.setattr(IdFile, "STAGE", 8192)  # many full stages, then a partial block
    monkeypatch.setattr(text_stream, "CHUNK_BYTES", 5000)
    path = tmp_path / "t.txt"
    path.write_bytes(adversarial_bytes(3, n=30_001))
    cache = TokenCache.open_or_build(path, tmp_path / "cache")
    assert np.array_equal(cached_ids(cache), in_memory(path).ids)
    assert os.path.getsize(cache.npy_path) == cache.offset + cache.n_chars * cache.dtype.itemsize


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "is empty"),
        (b"\xef\xbb\xbf", "is empty"),
        (b"hello" * 10 + b"\x00" + b"world", "NUL byte at offset 50"),
        ("héllo wörld ".encode() * 5 + b"\xff tail", "invalid byte 0xff at offset 70"),
        # a NUL after the first invalid byte, chunks later: named first, as the whole-file check does
        ("héllo wörld ".encode() * 5 + b"\xff tail" + b"x" * 40 + b"\x00", "NUL byte at offset 116"),
    ],
)
def test_bad_text_gives_the_in_memory_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, fragment: str
) -> None:
    monkeypatch.setattr(text_stream, "CHUNK_BYTES", 16)  # the fault is in a later chunk
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(CorpusError) as streamed:
        TokenCache.open_or_build(path, tmp_path / "cache")
    with pytest.raises(CorpusError) as whole:
        in_memory(path)
    assert fragment in str(streamed.value)
    assert str(streamed.value) == str(whole.value)
    assert not list((tmp_path / "cache").glob("*.npy")) and not list((tmp_path / "cache").glob("*.tmp"))


def build(path: Path, folder: Path) -> tuple[TokenCache, list[str]]:
    notices: list[str] = []
    return TokenCache.open_or_build(path, folder, notice=notices.append), notices


def test_a_valid_cache_is_used_and_anything_else_rebuilt(tmp_path: Path) -> None:
    path, folder = tmp_path / "t.txt", tmp_path / "cache"
    path.write_text("to be or not to be\n" * 50, encoding="utf-8")
    first, notices = build(path, folder)
    assert first.build_s is not None and notices == []
    again, notices = build(path, folder)
    assert again.build_s is None and notices == []  # used as it is
    meta_path = first.npy_path.with_suffix(".json")

    # the source changed: size, then contents at the same size (and a new mtime)
    path.write_text("to be or not to be\n" * 51, encoding="utf-8")
    rebuilt, notices = build(path, folder)
    assert rebuilt.build_s is not None and "changed" in notices[0]
    assert rebuilt.n_chars == 19 * 51
    path.write_text("TO BE or not to be\n" * 51, encoding="utf-8")
    os.utime(path, ns=(0, json.loads(meta_path.read_text())["source"]["mtime_ns"]))  # even with the old mtime
    rebuilt, notices = build(path, folder)
    assert "changed" in notices[0] and "T" in rebuilt.vocab

    # a torn id file, a foreign one, garbage metadata, another format version, no metadata
    with open(first.npy_path, "r+b") as f:
        f.truncate(os.path.getsize(first.npy_path) - 1)
    rebuilt, notices = build(path, folder)
    assert "torn or foreign" in notices[0]
    np.save(first.npy_path, np.zeros(rebuilt.n_chars, dtype=np.int64))
    _, notices = build(path, folder)
    assert "torn or foreign" in notices[0]
    meta_path.write_text("{not json", encoding="utf-8")
    _, notices = build(path, folder)
    assert "cannot be read" in notices[0]
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "version": FORMAT_VERSION + 1}), encoding="utf-8")
    _, notices = build(path, folder)
    assert f"version {FORMAT_VERSION + 1}" in notices[0]
    meta_path.unlink()
    (folder / f"{first.npy_path.stem}.npy.99999.tmp").write_bytes(b"a killed build's")
    rebuilt, notices = build(path, folder)
    assert rebuilt.build_s is not None and notices == []  # never finished: built, nothing to explain
    assert np.array_equal(cached_ids(rebuilt), in_memory(path).ids)
    assert sorted(p.suffix for p in folder.iterdir()) == [".json", ".lock", ".npy"]  # nothing left behind


def test_a_copy_with_the_same_size_and_times_is_another_text(tmp_path: Path) -> None:
    """cp -p / rsync -t: same size, same mtime, same first and last MiB, another middle."""
    path, folder = tmp_path / "t.txt", tmp_path / "cache"
    head, tail = "a" * (1 << 20), "z" * (1 << 20)
    path.write_text(head + "middle one\n" + tail, encoding="utf-8")
    build(path, folder)
    copy = tmp_path / "copy.txt"
    copy.write_text(head + "MIDDLE TWO\n" + tail, encoding="utf-8")
    st = path.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(copy, path)
    rebuilt, notices = build(path, folder)
    assert "changed" in notices[0] and "M" in rebuilt.vocab


def test_a_run_keeps_reading_its_own_ids_when_the_cache_is_rebuilt(tmp_path: Path) -> None:
    """Another run (or prepare) rebuilds the cache of a text that changed: a run that opened the
    old cache goes on with the ids it started with, not the new file under the same name."""
    path, folder = tmp_path / "t.txt", tmp_path / "cache"
    path.write_text("abcdefgh\n" * 300, encoding="utf-8")
    expected = in_memory(path)
    running = Corpus.cached(path, cache_dir=folder)
    path.write_text("ZYXWVUTSRQ\n" * 500, encoding="utf-8")
    rebuilt, _ = build(path, folder)
    assert rebuilt.build_s is not None and rebuilt.npy_path == running.cache.npy_path
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(expected.get_batch("train", 8, 16, g1)[0], running.get_batch("train", 8, 16, g2)[0])


def test_a_failed_build_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed (here: an error) between the id file and the metadata: no JSON, so not used."""
    path, folder = tmp_path / "t.txt", tmp_path / "cache"
    path.write_text("abc\n" * 100, encoding="utf-8")

    def fail(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(token_cache, "write_text_atomically", fail)
    with pytest.raises(token_cache.CacheWriteError, match="No space left on device"):
        TokenCache.open_or_build(path, folder)
    assert not list(folder.glob("*.json")) and not list(folder.glob("*.tmp"))
    monkeypatch.undo()
    cache, notices = build(path, folder)
    assert cache.build_s is not None and notices == []


def test_batches_from_the_cache_are_the_in_memory_batches(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("".join(PIECES[i % 9] + "abcdefg"[i % 7] for i in range(3000)), encoding="utf-8")
    memory, cached = in_memory(path), Corpus.cached(path, cache_dir=tmp_path / "cache")
    assert len(cached) == len(memory) and cached.tokenizer.chars == memory.tokenizer.chars
    for split in ("train", "val"):
        g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        for _ in range(3):
            a, b = memory.get_batch(split, 8, 16, g1), cached.get_batch(split, 8, 16, g2)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and b[0].dtype == torch.long


def test_a_checkpoints_vocabulary_maps_the_ids(tmp_path: Path) -> None:
    """Resuming on a text that uses fewer characters than the checkpoint knows."""
    path = tmp_path / "t.txt"
    path.write_text("the cat sat on the mat\n" * 40, encoding="utf-8")
    wider = CharTokenizer("the cat sat on the mat\nXYZ!")
    memory, cached = in_memory(path, wider), Corpus.cached(path, wider, tmp_path / "cache")
    assert cached.tokenizer is wider and cached.remap is not None
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(memory.get_batch("train", 4, 8, g1)[0], cached.get_batch("train", 4, 8, g2)[0])
    with pytest.raises(CorpusError, match="not in the vocabulary"):
        Corpus.cached(path, CharTokenizer("the ca"), tmp_path / "cache")


def test_prepare_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from chargpt_tui.commands.cli import main

    path = tmp_path / "t.txt"
    path.write_text("hello world\n" * 100, encoding="utf-8")
    monkeypatch.setenv("CHARGPT_TUI_CACHE_DIR", str(tmp_path / "default"))
    assert main(["prepare", str(path), "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "cached 1,200 characters (9 distinct)" in out and str(tmp_path / "c") in out
    assert main(["prepare", str(path), "--cache-dir", str(tmp_path / "c")]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["prepare", str(path)]) == 0
    assert str(tmp_path / "default") in capsys.readouterr().out
    assert main(["prepare", str(tmp_path / "nope.txt")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "no such file" in err


def test_a_rebuild_between_reading_the_metadata_and_opening_the_ids_is_caught(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The text changes to another of the same length and id type, and another run rebuilds its
    cache, just after this one has checked the old metadata against the text: the ids it then
    opens are the new text's, and must not be read with the old vocabulary."""
    path, folder = tmp_path / "t.txt", tmp_path / "cache"
    path.write_text("abcd\n" * 100, encoding="utf-8")
    build(path, folder)
    real_of = token_cache.SourceStamp.of
    raced: list[bool] = []

    def of_then_race(source: Path) -> token_cache.SourceStamp:
        stamp = real_of(source)
        if not raced:  # once: the check passed with the old text; now another run rebuilds
            raced.append(True)
            path.write_text("wxyz\n" * 100, encoding="utf-8")
            monkeypatch.setattr(token_cache.SourceStamp, "of", real_of)
            TokenCache.open_or_build(path, folder)
            monkeypatch.setattr(token_cache.SourceStamp, "of", of_then_race)
        return stamp

    monkeypatch.setattr(token_cache.SourceStamp, "of", of_then_race)
    cache, notices = build(path, folder)
    assert raced
    assert cache.tokenizer.decode(cached_ids(cache).tolist()) == "wxyz\n" * 100  # one text's vocabulary and ids
    assert cache.vocab == "\nwxyz"


@pytest.mark.parametrize("locked", [True, False])
def test_no_build_removes_a_temporary_of_a_live_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        locked: bool) -> None:
    """A killed build's temporary goes; a live builder's stays (one that could not take the lock,
    on a filesystem without locks), and so does another machine's. Without the lock, nothing is
    swept at all."""
    import subprocess
    import sys

    path, folder = tmp_path / "t.txt", tmp_path / "cache"
    path.write_text("to be\n" * 100, encoding="utf-8")
    first, _ = build(path, folder)
    first.npy_path.with_suffix(".json").unlink()  # so that the next one builds
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        building = folder / f"{first.npy_path.stem}.npy.{alive.pid}.tmp"
        building.write_bytes(b"another builder's, half written")
        killed = folder / f"{first.npy_path.stem}.npy.99999999.tmp"
        killed.write_bytes(b"a killed build's")
        elsewhere = folder / f"{first.npy_path.stem}.npy.99999999@another-machine.tmp"  # a shared cache folder
        elsewhere.write_bytes(b"another machine's build (its pid is not one of ours)")
        if not locked:
            def no_locks(*_args: object) -> None:
                raise OSError(37, "No locks available")
            monkeypatch.setattr(token_cache.fcntl, "flock", no_locks)
        rebuilt, _ = build(path, folder)
        assert rebuilt.build_s is not None
        assert building.read_bytes() == b"another builder's, half written"
        assert killed.exists() == (not locked)
        assert elsewhere.exists()
    finally:
        alive.kill()
        alive.wait()
