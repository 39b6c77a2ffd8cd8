"""Data-parallel training across processes started by torchrun: PyTorch's DistributedDataParallel.

    torchrun --standalone --nproc-per-node=2 -m chargpt_tui TEXT [flags]

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous; ProcessGroup.from_env() joins it
(NCCL on CUDA, one GPU per local rank; gloo on CPU). The Trainer takes a ProcessGroup and its
loop stays the same; what differs is here:

- Batches: every rank draws the whole global batch's offsets from the same generator and reads
  only its own rows (`rows`). N ranks therefore train on exactly the batches one process would,
  and a checkpoint's generator state resumes any world size.
- Gradients: DDP averages them over the ranks in backward; with gradient accumulation the
  micro-steps before the last skip that (`no_sync`).
- Controls: only rank 0 hears a person (its dashboard, its signals). At agreed points (each step
  boundary, each evaluation batch, each second of a pause) rank 0 broadcasts what it was asked
  (stop, pause, evaluate, save, and whether the steps so far are to be reported now) and every
  rank acts on that, so all of them reach the same collective calls in the same order and no
  rank waits for one that went another way.
- Losses: a step's loss and an evaluation's losses are averaged over the ranks.

A rank that dies breaks its peers' next collective call (gloo: the connection closes; NCCL: the
watchdog); they end with DistributedError's message instead of waiting.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from .control import take

if TYPE_CHECKING:
    from .control import RunControl

# The longest a rank waits at a collective call for the others. Rank 0 meets the others at least
# every step and every second of a pause, but a sample or a checkpoint (rank 0 alone) can take a
# while on a big model: generous, since a dead peer is noticed at once anyway (broken connection).
TIMEOUT = datetime.timedelta(minutes=10)

# what rank 0 broadcasts at each agreed point, by index
STOP, PAUSE, EVALUATE, SAVE, FLUSH = range(5)


class DistributedError(RuntimeError):
    """Another rank is gone (or the process group broke). The message is meant for the user."""


def torchrun_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when started by torchrun with more than one process."""
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        return None
    return (rank, world, local) if world > 1 else None


def is_main_process() -> bool:
    """False in a torchrun rank other than 0 (those write nothing and show nothing)."""
    world = torchrun_world()
    return world is None or world[0] == 0


@dataclass
class ProcessGroup:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    # where the controls are agreed on (agree): the default group, or under NCCL a gloo group
    # beside it, so that reading the flags never waits for the GPU (a CUDA tensor's tolist()
    # would synchronise every step with the GPU's queue of work)
    control_group: Any = None

    @classmethod
    def from_env(cls, device_kind: str) -> ProcessGroup | None:
        """Join torchrun's process group; None when not under torchrun (or alone in it)."""
        world = torchrun_world()
        if world is None:
            return None
        rank, size, local = world
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=TIMEOUT, store=_attempt_store(), rank=rank,
                                    world_size=size)
        control = None
        if backend == "nccl":
            try:
                control = dist.new_group(backend="gloo", timeout=TIMEOUT)
            except (RuntimeError, ValueError, dist.DistBackendError):  # gloo cannot reach the others here
                control = None  # (GLOO_SOCKET_IFNAME may name the interface): the flags go over NCCL, synced
        return cls(rank, size, local, backend, control)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, chosen: torch.device) -> torch.device:
        """This rank's device: its own GPU on CUDA (cuda:LOCAL_RANK), else the one chosen."""
        return torch.device("cuda", self.local_rank) if chosen.type == "cuda" else chosen

    @property
    def comm_device(self) -> torch.device:
        """Where tensors for collective calls live: NCCL takes only CUDA tensors, gloo CPU ones."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def rows(self, batch_size: int) -> tuple[int, int]:
        """This rank's rows [start, stop) of a global batch of batch_size rows."""
        per = batch_size // self.world_size
        return self.rank * per, (self.rank + 1) * per

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.backend == "nccl" else None
        return DistributedDataParallel(model, device_ids=ids)  # (the model has no buffers to keep in step)

    # ---- collective calls: every rank makes them, in the same order --------------------------
    def agree(self, inbox: RunControl, control: RunControl, flush_due: bool) -> bool:
        """Rank 0's requests (inbox) become every rank's (control). Returns whether to report the
        steps so far now (rank 0's clock decides)."""
        asked = [0] * 5
        if self.is_main:
            asked[STOP] = inbox.stop.is_set()
            asked[PAUSE] = inbox.pause.is_set()
            asked[EVALUATE] = take(inbox.evaluate)
            asked[SAVE] = take(inbox.save)
            asked[FLUSH] = flush_due
        # on the CPU through gloo (the default group, or NCCL's side group); over NCCL itself only
        # where no gloo group could be made
        on = self.comm_device if self.backend == "nccl" and self.control_group is None else torch.device("cpu")
        flags = torch.tensor(asked, dtype=torch.uint8, device=on)
        self._collective(dist.broadcast, flags, src=0, group=self.control_group)
        got = flags.tolist()
        _mirror(control.stop, got[STOP])
        _mirror(control.pause, got[PAUSE])
        if got[EVALUATE]:
            control.evaluate.set()
        if got[SAVE]:
            control.save.set()
        return bool(got[FLUSH])

    def check_same_start(self, step: int) -> None:
        """Every rank must start from the same step (the same checkpoint): one that read another
        (a shared filesystem showing an older file) would call other collectives than the rest."""
        steps = torch.tensor([step, -step], dtype=torch.int64, device=self.comm_device)
        self._collective(dist.all_reduce, steps, op=dist.ReduceOp.MAX)
        highest, lowest = int(steps[0]), -int(steps[1])
        if highest != lowest:
            raise DistributedError(f"rank {self.rank}: the processes start from different steps ({lowest} to "
                                   f"{highest}, this one {step}): they must all read the same checkpoint")

    def from_main(self, values: list[float]) -> list[float]:
        """Rank 0's values, in every rank (a measurement they must all act on alike)."""
        shared = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        self._collective(dist.broadcast, shared, src=0)
        return [float(v) for v in shared.tolist()]

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over the ranks of each value (a new tensor, where collectives run)."""
        out = values.detach().float().to(self.comm_device, copy=True)
        self._collective(dist.all_reduce, out, op=dist.ReduceOp.SUM)
        return out / self.world_size

    def _collective(self, call: Any, *args: Any, **kwargs: Any) -> None:
        try:
            call(*args, **kwargs)
        except (RuntimeError, dist.DistBackendError) as exc:  # a peer died, or the group broke
            raise DistributedError(f"rank {self.rank}: lost the other training processes ({_first_line(exc)}); "
                                   "stopping") from None

    def close(self) -> None:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - leaving anyway
                pass


def no_sync(model: torch.nn.Module, last: bool) -> Any:
    """DDP's no_sync() for a micro-step that is not the last of its step; else nothing."""
    return model.no_sync() if not last and hasattr(model, "no_sync") else nullcontext()


@contextmanager
def guarded(group: ProcessGroup | None) -> Iterator[None]:
    """Turns a broken process group inside (DDP's gradient reduction in backward) into DistributedError."""
    if group is None:
        yield
        return
    try:
        yield
    except DistributedError:
        raise
    except (RuntimeError, dist.DistBackendError) as exc:
        text = str(exc)
        if any(word in text for word in ("Connection", "connection", "gloo", "NCCL", "peer", "closed", "Timed out")):
            raise DistributedError(f"rank {group.rank}: lost the other training processes ({_first_line(exc)}); "
                                   "stopping") from None
        raise


def _attempt_store() -> dist.Store:
    """torchrun's store, under a prefix of this attempt's own. After a restart (--max-restarts)
    the default keys still hold the dead attempt's addresses, and a rank that reads one before
    rank 0 writes its new one fails to connect (pytorch/pytorch#167288)."""
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(host, port, world_size=size, is_master=not agent_hosts_it and rank == 0, timeout=TIMEOUT,
                          wait_for_workers=False)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"chargpt-tui/attempt-{attempt}/", store)


def _mirror(event: Any, value: int) -> None:
    if value:
        event.set()
    else:
        event.clear()


def _first_line(exc: BaseException) -> str:
    """The gist of a backend's error: its first line, without the source location gloo puts first."""
    import re

    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    text = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", lines[0])
    text = text.split(". This is typically")[0]
    return text[:160]
