"""Checkpoints: atomic writes, safe reads.

A checkpoint is a dict of tensors and plain Python values only, so that
``torch.load(path, weights_only=True)`` reads it and a crafted file cannot run code on load:

    format, version         "chargpt-tui checkpoint", FORMAT_VERSION
    model, optimizer        state dicts
    model_config            GPTConfig fields
    train_config            TrainConfig fields
    vocab                   the vocabulary as one string of sorted characters
    iter                    training steps done (every evaluation due at iter is done too,
                            unless due_done is False)
    due_done                False when a stop abandoned the evaluation due at iter: a run
                            resumed from it evaluates (and samples) there first (absent: True)
    best_val_loss, best_iter
    elapsed_s               training time so far
    rng                     torch (CPU), cuda (the saving process's own GPU; older files: a list,
                            one per visible GPU), train_batches, eval_batches, samples, device
                            (where samples' generator lives)
    history                 step_iters, step_losses (bounded), eval_iters, train_losses, val_losses
    corpus                  {"name": path or "python-stdlib", "n_chars": ...}
    world_size              the processes that trained it (torchrun; absent: 1); any number resumes it
"""

from __future__ import annotations

import errno
import os
import pickle
import re
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .config import GPTConfig, TrainConfig
from .errors import CheckpointError
from .gpt import GPT
from .rundir import process_exists
from .tokenizer import CharTokenizer

FORMAT = "chargpt-tui checkpoint"
FORMAT_VERSION = 1


PathLike = str | os.PathLike[str]


class BestWritten(OSError):
    """save_checkpoint could not replace path, but `also` (best.pt) holds the new state."""


def save_checkpoint(state: dict[str, Any], path: PathLike, also: PathLike | None = None) -> None:
    """Write state to path atomically: a temporary file in the same folder, flushed and fsynced,
    then renamed over the old file. A crash at any moment leaves either the old or the new file.

    ``also`` names a second path that gets the same file (best.pt): a hard link of the
    temporary file, renamed into place too, so the bytes are written once.
    """
    path = Path(path)
    remove_stale_temporaries(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp_also = None
    try:
        with open(tmp, "wb") as f:
            _torch_save({"format": FORMAT, "version": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        if also is not None:
            also = Path(also)
            tmp_also = also.with_name(f".{also.name}.{os.getpid()}.tmp")
            try:
                os.link(tmp, tmp_also)
            except OSError:  # no hard links here (some network or FAT file systems): copy
                with open(tmp, "rb") as src, open(tmp_also, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
            os.replace(tmp_also, also)
            tmp_also = None
        try:
            os.replace(tmp, path)
        except OSError as exc:
            if also is None:
                raise
            raise BestWritten(exc.errno, exc.strerror) from exc
        fsync_dir(path.parent)
    finally:
        for leftover in (tmp, tmp_also):
            if leftover is not None:
                try:
                    leftover.unlink()
                except OSError:
                    pass


class _WriteErrors:
    """A file wrapper that remembers the OSError of a failed write. torch.save reports a full
    disk as a RuntimeError ("unexpected pos ...") from its C++ writer; this gets the real
    error (ENOSPC, EIO, ...) back, so that callers can treat it as the write error it is."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.f.flush()


def _torch_save(obj: object, f: BinaryIO) -> None:
    writer = _WriteErrors(f)
    try:
        torch.save(obj, writer)
    except RuntimeError as exc:
        if writer.error is not None:
            raise writer.error from None
        raise OSError(errno.EIO, f"write failed ({str(exc).strip().splitlines()[0]})") from None


def remove_stale_temporaries(folder: PathLike) -> list[Path]:
    """Delete temporary checkpoint files left by a process that was killed while saving.

    They are named ``.<name>.<pid>.tmp``; one whose process is still alive (another run saving
    into the same folder) is left alone. Returns what was removed.
    """
    removed = []
    for tmp in Path(folder).glob(".*.pt.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if not pid.isdigit() or (int(pid) != os.getpid() and process_exists(int(pid))):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def fsync_dir(folder: Path) -> None:
    """Make a rename in folder durable (best effort: some filesystems cannot)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: PathLike) -> dict[str, Any]:
    """Read and check a checkpoint, on the CPU. Never unpickles anything but tensors and plain values."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if not magic:
            raise CheckpointError(f"{path} is truncated or corrupt (an empty file)")
        if magic != b"PK\x03\x04":  # torch.save writes a zip archive
            raise CheckpointError(f"{path} is not a readable checkpoint (not a PyTorch file)")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied") from None
    except pickle.UnpicklingError as exc:
        # weights_only=True refuses anything that would run code or build arbitrary objects
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"loading it would call {found.group(1)}" if found else "it holds more than tensors and plain values"
        raise CheckpointError(f"{path} was refused: {what}; a checkpoint holds only tensors and plain values") from None
    except Exception as exc:  # torch.load raises many kinds for a damaged or foreign file
        cut = _looks_truncated(exc) or _zip_cut_short(path)
        reason = "truncated or corrupt" if cut else "not a readable checkpoint"
        raise CheckpointError(f"{path} is {reason} ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a chargpt-tui checkpoint")
    if state.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {state.get('version')!r}; "
            f"this chargpt-tui reads version {FORMAT_VERSION}"
        )
    missing = [k for k in ("model", "model_config", "train_config", "vocab", "iter") if k not in state]
    if missing:
        raise CheckpointError(f"{path} is missing {', '.join(missing)}")
    return state


def _zip_cut_short(path: Path) -> bool:
    """A zip archive (what torch.save writes) ends with its directory's record, within 64 KiB of
    its end; one cut short has none there (torch.load's error for it varies: OSError EINVAL,
    RuntimeError, ...)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - (65535 + 22)))
            return b"PK\x05\x06" not in f.read()
    except OSError:
        return False


def _looks_truncated(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, EOFError) or "central directory" in text or "failed finding" in text or "truncat" in text


def configs_from_checkpoint(state: dict[str, Any]) -> tuple[GPTConfig, TrainConfig]:
    try:
        return GPTConfig(**state["model_config"]), TrainConfig(**state["train_config"])
    except TypeError as exc:
        raise CheckpointError(f"checkpoint configuration does not match this version ({exc})") from None


def model_from_checkpoint(state: dict[str, Any]) -> tuple[GPT, CharTokenizer]:
    """The model (in eval mode, on the CPU) and its tokenizer, from a loaded checkpoint."""
    model_config, _ = configs_from_checkpoint(state)
    tokenizer = CharTokenizer(state["vocab"])
    if tokenizer.vocab_size != model_config.vocab_size:
        raise CheckpointError("checkpoint vocabulary does not match its model's vocab_size")
    model = GPT(model_config)
    try:
        model.load_state_dict(unwrapped_weights(state["model"]))
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit the model ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, tokenizer


def unwrapped_weights(weights: dict[str, Any]) -> dict[str, Any]:
    """A state dict without the prefixes DDP ("module.") and torch.compile ("_orig_mod.") add."""
    from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

    weights = dict(weights)
    for prefix in ("module.", "_orig_mod."):
        consume_prefix_in_state_dict_if_present(weights, prefix)
    return weights
