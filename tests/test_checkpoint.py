from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from helpers import tiny_configs

from model import checkpoint as checkpoint_module
from model.checkpoint import FORMAT, CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from model.data import Corpus
from model.trainer import Trainer


@pytest.fixture
def state(corpus: Corpus) -> dict:
    model_config, train_config = tiny_configs(corpus)
    trainer = Trainer(corpus, model_config, train_config)
    trainer.run()
    return trainer.state_dict()


def test_round_trip_reads_with_weights_only(state: dict, tmp_path: Path, corpus: Corpus) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(state, path)
    raw = torch.load(path, weights_only=True)  # the contract: plain values and tensors only
    assert raw["format"] == FORMAT and raw["iter"] == 20
    loaded = load_checkpoint(path)
    for name, tensor in state["model"].items():
        assert torch.equal(loaded["model"][name], tensor)
    assert loaded["vocab"] == "".join(corpus.tokenizer.chars)
    assert loaded["optimizer"]["state"]
    model, tokenizer = model_from_checkpoint(loaded)
    assert tokenizer.chars == corpus.tokenizer.chars
    assert not model.training
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left


def test_best_is_written_alongside(state: dict, tmp_path: Path) -> None:
    save_checkpoint(state, tmp_path / "ckpt.pt", also=tmp_path / "best.pt")
    assert load_checkpoint(tmp_path / "best.pt")["iter"] == 20
    save_checkpoint({**state, "iter": 21}, tmp_path / "ckpt.pt")
    assert load_checkpoint(tmp_path / "best.pt")["iter"] == 20  # replacing ckpt.pt leaves best.pt
    assert load_checkpoint(tmp_path / "ckpt.pt")["iter"] == 21


def test_a_failed_save_keeps_the_previous_file(state: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(state, path)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        save_checkpoint({**state, "iter": 99}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["iter"] == 20
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


class FillsUp:
    """A file that takes `room` bytes and then fails as a full disk does."""

    def __init__(self, f: object, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.f, name)

    def __enter__(self) -> FillsUp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("room", [0, 1000, 60_000])
def test_a_disk_that_fills_up_mid_save_is_an_oserror_and_keeps_the_previous_file(
    state: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room: int
) -> None:
    # torch.save's C++ writer turns a failed write into a RuntimeError ("unexpected pos");
    # the save reports the write's own error, whatever the point where the disk filled up
    path = tmp_path / "ckpt.pt"
    save_checkpoint(state, path)
    assert path.stat().st_size > 60_000
    real_open = open
    monkeypatch.setattr(checkpoint_module, "open", lambda *a, **k: FillsUp(real_open(*a, **k), room), raising=False)
    with pytest.raises(OSError) as failed:
        save_checkpoint({**state, "iter": 99}, path)
    assert failed.value.errno == errno.ENOSPC and not isinstance(failed.value, RuntimeError)
    monkeypatch.undo()
    assert load_checkpoint(path)["iter"] == 20
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


class RunsCode:
    def __reduce__(self):  # a pickle that would call os.system on load
        return (__import__("os").system, ("echo pwned > pwned.txt",))


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"", "truncated or corrupt"),
        (b"this is not a checkpoint at all", "not a readable checkpoint"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "x.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_checkpoint(state: dict, tmp_path: Path) -> None:
    """Cut anywhere: torch.load's error depends on where (an OSError EINVAL at some lengths read
    "not a readable checkpoint")."""
    path = tmp_path / "ckpt.pt"
    save_checkpoint(state, path)
    data = path.read_bytes()
    for n in sorted({*range(4, len(data), max(1, len(data) // 64)), len(data) - 1}):
        path.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_checkpoint(path)


def test_other_formats_and_versions_are_refused(state: dict, tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a chargpt-tui checkpoint"):
        load_checkpoint(path)
    future = tmp_path / "future.pt"
    save_checkpoint({**state, "version": 99}, future)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(future)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": 1, "payload": RunsCode()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned.txt").exists()
