from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data import Corpus, CorpusError, builtin_corpus_text, min_chars_for, read_text, split_point
from model.tokenizer import CharTokenizer, UnknownCharactersError


def test_round_trip_and_sorted_vocabulary() -> None:
    text = "hello, world!\nÜber straße 🙂 日本"
    tok = CharTokenizer.from_text(text)
    assert tok.chars == sorted(set(text))
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("hello") == [tok.stoi[c] for c in "hello"]


def test_ids_are_compact() -> None:
    assert CharTokenizer.from_text("abc").id_dtype == np.uint8
    many = "".join(chr(0x4E00 + i) for i in range(1000))  # 1000 CJK characters
    tok = CharTokenizer.from_text(many)
    assert tok.id_dtype == np.uint16
    assert tok.decode(tok.encode_array(many)) == many


def test_encoding_matches_a_plain_loop_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import model.tokenizer as tokenizer_module

    monkeypatch.setattr(tokenizer_module, "_CHUNK_CHARS", 7)  # force many chunks
    text = "the cat sat on the mat; 🙂 twice 🙂\n" * 5
    tok = CharTokenizer.from_text(text)
    assert tok.encode_array(text).tolist() == [tok.stoi[c] for c in text]


def test_unknown_characters_are_named() -> None:
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(UnknownCharactersError) as info:
        tok.encode("abxyx")
    assert info.value.chars == ["x", "y"]
    assert tok.unknown_chars("abz") == ["z"]


def test_split_is_90_10_and_batches_shift_by_one(corpus: Corpus) -> None:
    n = len(corpus)
    assert len(corpus.train_data) == split_point(n) == int(0.9 * n)
    assert len(corpus.val_data) == n - int(0.9 * n)
    g = torch.Generator().manual_seed(0)
    x, y = corpus.get_batch("train", 4, 8, g)
    assert x.shape == y.shape == (4, 8)
    assert x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    # every row is a real slice of the training data
    data = corpus.train_data.long()
    for row in x:
        starts = [i for i in range(len(data) - 8) if torch.equal(data[i : i + 8], row)]
        assert starts


def test_batches_draw_offsets_like_the_seed(corpus: Corpus) -> None:
    """Same generator state -> the same rows as the seed's loop of slices."""
    block, batch = 8, 5
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x, y = corpus.get_batch("val", batch, block, g1)
    data = corpus.val_data.long()
    ix = torch.randint(len(data) - block, (batch,), generator=g2)
    assert torch.equal(x, torch.stack([data[i : i + block] for i in ix]))
    assert torch.equal(y, torch.stack([data[i + 1 : i + block + 1] for i in ix]))


def test_min_chars_leaves_a_row_in_each_split() -> None:
    for block in (1, 8, 16, 256):
        n = min_chars_for(block)
        assert split_point(n) >= block + 1 and n - split_point(n) >= block + 1
        m = n - 1
        assert split_point(m) < block + 1 or m - split_point(m) < block + 1


def test_short_text_names_the_minimum() -> None:
    corpus = Corpus.from_text("abcdefghij" * 5, "short")
    with pytest.raises(CorpusError, match=f"at least {min_chars_for(16)}"):
        corpus.check_block_size(16)


def test_read_text_errors(tmp_path) -> None:
    with pytest.raises(CorpusError, match="no such file"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(CorpusError, match="directory"):
        read_text(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(CorpusError, match="empty"):
        read_text(empty)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf" + b"\xe9 au lait")
    with pytest.raises(CorpusError, match="offset 3"):
        read_text(bad)
    binary = tmp_path / "bin.dat"
    binary.write_bytes(b"ab\x00cd")
    with pytest.raises(CorpusError, match="binary"):
        read_text(binary)


def test_bom_and_crlf_are_normalised(tmp_path) -> None:
    path = tmp_path / "win.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\rthree\n")
    assert read_text(path) == "one\ntwo\nthree\n"


def test_builtin_corpus_is_python_source_in_a_fixed_order() -> None:
    text, description = builtin_corpus_text(max_bytes=200_000)
    again, _ = builtin_corpus_text(max_bytes=200_000)
    assert text == again
    assert "def " in text and "import " in text
    assert 0 < len(text) <= 200_000
    assert "standard library" in description


@pytest.mark.parametrize(
    "raw",
    [
        b"plain ascii text\nwith lines\n" * 20,
        b"windows\r\nline endings\r\nand an old mac\rone\n" * 10,
        "non-ASCII: caf\u00e9, \u65e5\u672c, \U0001f642\r\n".encode() * 10,
        b"\xef\xbb\xbfa byte-order mark first\n" * 10,
    ],
)
def test_reading_a_file_equals_decoding_it_as_text(tmp_path, monkeypatch: pytest.MonkeyPatch, raw: bytes) -> None:
    import model.tokenizer as tokenizer_module

    monkeypatch.setattr(tokenizer_module, "_CHUNK_CHARS", 64)  # several chunks
    path = tmp_path / "t.txt"
    path.write_bytes(raw)
    text = raw.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    corpus = Corpus.from_file(path)
    assert corpus.tokenizer.chars == sorted(set(text))
    assert corpus.tokenizer.decode(corpus.ids) == text


def test_ascii_file_with_a_given_vocabulary(tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(b"abcabc\n" * 10)
    wide = CharTokenizer("abc\n" + "".join(chr(0x4E00 + i) for i in range(300)))  # 2-byte ids
    corpus = Corpus.from_file(path, wide)
    assert corpus.ids.dtype == np.uint16
    assert wide.decode(corpus.ids) == "abcabc\n" * 10
    with pytest.raises(CorpusError, match="'c'"):
        Corpus.from_file(path, CharTokenizer("ab\n"))
