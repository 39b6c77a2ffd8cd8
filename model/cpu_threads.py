"""How many CPU threads training uses: as many as there are cores free, re-checked as it runs.

    threads = ThreadChoice.start(train_config.threads)   # measures for a moment, sets torch's
    threads.now, threads.reason                            # 2, "2 cores free"
    changed = threads.check()                               # between steps: None, or the new count

PyTorch's default is one thread per core. Where another process keeps one of them busy, every
parallel operation waits at its end for the thread that shares a core with it: on 2 cores with
one busy, a `--preset cpu` step took 436 ms with 2 threads and 29.7 ms with 1 (2026-12-06). So
the default counts the cores that other processes leave free (the machine's CPU time in
/proc/stat, less this process's own, over a short window) and uses that many threads, at least
one and at most PyTorch's default; and it looks again every CHECK_S seconds of the run,
changing the count (between steps: PyTorch allows it) when two looks in a row agree on another.
Two runs started together on 2 cores each see the other and settle at one thread each.

`--threads N` (or OMP_NUM_THREADS in the environment, as torchrun sets it) fixes the count: no
measuring. Where /proc/stat cannot be read (not Linux), PyTorch's default, fixed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

CHECK_S = 2.0  # seconds between looks at the machine's load while training
START_WINDOW_S = 0.25  # the first look, before training starts
# A core counts as free when other processes use less than this share of it (a core shared
# half-time slows each parallel operation; a busier one makes it wait for whole time slices).
FREE_BELOW = 0.5


@dataclass(frozen=True)
class CpuTimes:
    busy: float  # seconds of CPU time the machine's cores (those this process may use) were busy
    own: float  # seconds of CPU time this process used
    at: float  # a monotonic clock's time


def read_cpu_times(cpus: frozenset[int]) -> CpuTimes | None:
    """The busy time of these CPUs and this process's CPU time, now; None where /proc cannot say."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        busy = 0
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(" ")
                if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                    continue
                # user nice system idle iowait irq softirq steal ...: idle and iowait are free,
                # steal is the hypervisor's (spread over every core alike: not another process here)
                fields = [int(v) for v in rest.split()]
                busy += fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
        with open("/proc/self/stat", encoding="ascii") as f:
            own_fields = f.read().rsplit(")", 1)[1].split()
        own = int(own_fields[11]) + int(own_fields[12])  # utime, stime: fields 14 and 15
    except (OSError, ValueError, IndexError):
        return None
    return CpuTimes(busy / tick, own / tick, time.monotonic())


def free_cores(cores: int, before: CpuTimes, after: CpuTimes) -> float:
    """Cores not used by other processes between two readings (this process's use is its own)."""
    elapsed = after.at - before.at
    if elapsed <= 0:
        return float(cores)
    others = max(0.0, (after.busy - before.busy) - (after.own - before.own)) / elapsed
    return max(0.0, cores - others)


def threads_for(free: float, most: int) -> int:
    """Threads for this many free cores: each core that others use less than FREE_BELOW of."""
    return max(1, min(most, int(free + (1 - FREE_BELOW))))


def describe(free: float, cores: int) -> str:
    """What the machine's load was, for people: "2 cores free", "1 of 2 cores busy"."""
    busy = cores - threads_for(free, cores)
    if busy <= 0:
        return f"{cores} cores free" if cores > 1 else "1 core, free"
    return f"{busy} of {cores} cores busy"


class ThreadChoice:
    """The thread count of this process's training (see the module)."""

    def __init__(self, fixed: int | None, fixed_by: str, cpus: frozenset[int], most: int,
                 read: Callable[[frozenset[int]], CpuTimes | None] = read_cpu_times,
                 clock: Callable[[], float] = time.monotonic,
                 set_threads: Callable[[int], None] = torch.set_num_threads) -> None:
        self.cpus, self.cores, self.most = cpus, len(cpus), most
        self._read, self._clock, self._set = read, clock, set_threads
        self.adaptive = fixed is None
        self.now = fixed if fixed is not None else most
        self.reason = fixed_by
        self._last: CpuTimes | None = None
        self._proposed: int | None = None  # what the previous look would have changed to
        self._next_check = 0.0

    @classmethod
    def start(cls, requested: int = 0, measure: bool = True, window_s: float = START_WINDOW_S,
              **kwargs: object) -> ThreadChoice:
        """--threads N (requested), OMP_NUM_THREADS, or a count measured now over window_s
        (measure=False: PyTorch's default, as on a GPU, where the CPU only feeds it)."""
        cpus = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            frozenset(range(os.cpu_count() or 1))
        most = torch.get_num_threads()  # PyTorch's default: a thread per (physical) core it may use
        if requested:
            choice = cls(requested, "--threads", cpus, most, **kwargs)  # type: ignore[arg-type]
        elif os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
            choice = cls(most, "OMP_NUM_THREADS", cpus, most, **kwargs)  # type: ignore[arg-type]
        elif not measure:
            choice = cls(most, "PyTorch's default", cpus, most, **kwargs)  # type: ignore[arg-type]
        else:
            choice = cls(None, "", cpus, most, **kwargs)  # type: ignore[arg-type]
            choice.measure_now(window_s)
        choice._set(choice.now)
        return choice

    def measure_now(self, window_s: float) -> None:
        """The first look: the machine's load over window_s (this process idle meanwhile)."""
        first = self._read(self.cpus)
        if first is not None:
            time.sleep(window_s)
        self._last = self._read(self.cpus) if first is not None else None
        if first is None or self._last is None:  # nothing to measure by: PyTorch's default, kept
            self.adaptive, self.reason = False, "this system's default"
            return
        free = free_cores(self.cores, first, self._last)
        self.now = threads_for(free, self.most)
        self.reason = describe(free, self.cores)
        self._next_check = self._clock() + CHECK_S

    def check(self) -> int | None:
        """Between steps: look again if CHECK_S has passed; the new count once two looks in a
        row agree on one (set in PyTorch already), else None."""
        if not self.adaptive or self._clock() < self._next_check:
            return None
        self._next_check = self._clock() + CHECK_S
        now = self._read(self.cpus)
        if now is None or self._last is None:
            return None
        free = free_cores(self.cores, self._last, now)
        self._last = now
        wanted = threads_for(free, self.most)
        if wanted == self.now:
            self._proposed = None
            return None
        if wanted != self._proposed:  # once could be a moment's load: wait for the next look
            self._proposed = wanted
            return None
        self._proposed = None
        self.now, self.reason = wanted, describe(free, self.cores)
        self._set(wanted)
        return wanted
