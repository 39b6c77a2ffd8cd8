"""Choosing and describing the compute device; memory figures; process tuning (malloc, priority)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import resource
import sys

import torch

from .config import ConfigError


def choose_device(name: str = "auto") -> torch.device:
    """auto: CUDA, then Apple MPS, then CPU. An explicit choice that is not available is an error."""
    mps_available = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine (try --device auto)")
    if name == "mps" and not mps_available:
        raise ConfigError("--device mps: Apple MPS is not available on this machine (try --device auto)")
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {name!r} (choose from auto, cpu, cuda, mps)")
    return torch.device(name)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def tune_malloc() -> bool:
    """Ask glibc's malloc to keep the memory of large freed blocks for reuse, in one arena.

    A training step allocates and frees tensors of tens of MB (the T x T attention weights of
    every head and layer). By default glibc hands each of them to mmap and back to the kernel
    when freed, so every step page-faults the same memory in again and the kernel zeroes it; and
    a thread other than the main one (the dashboard's training worker) gets its own arena, which
    gives memory back even sooner. Measured here at the seed's settings: steps 20% faster in the
    main thread and 30% faster in a worker thread. Peak memory is what the step needs either way;
    the process just keeps it between steps. Returns False where this is not glibc (a no-op).

    One arena has a cost too: at the `cpu` preset's sizes a bfloat16 step (whose weight casts
    allocate in every thread) took 1.8x as long as a float32 one with it, and about as long
    without (AMD EPYC with AVX512-BF16, 2026-12-06). --dtype auto's probe steps under these
    settings, so it chooses for the process as it runs (model/precision_probe.py).
    """
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_ARENA_MAX, 1)
    ok &= mallopt(_M_MMAP_THRESHOLD, 1 << 30)  # blocks up to 1 GiB come from the heap
    ok &= mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)  # and freed memory stays for the next step
    return bool(ok)


def lower_thread_priority(increment: int = 5) -> bool:
    """Lower the calling thread's CPU priority (Linux: its nice value) by `increment`.

    The dashboard's training worker calls this before its first torch operation, so the OpenMP
    threads it then starts inherit the lower priority too. On a machine whose every core is busy
    training, the UI thread then gets a core as soon as it has work (a key press, a redraw)
    instead of waiting for the scheduler to share one out; it uses little CPU, so training loses
    next to nothing. Returns False where threads have no nice value of their own (not Linux).
    """
    if platform.system() != "Linux" or not hasattr(os, "setpriority"):
        return False
    import threading

    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError:
        return False
    return True


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    return f"{cpu_name()} ({os.cpu_count()} cores)"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def memory_usage(device: torch.device) -> dict[str, float]:
    """Bytes: the process's peak RSS on CPU; allocated and reserved memory on CUDA."""
    if device.type == "cuda":
        return {
            "allocated": float(torch.cuda.memory_allocated(device)),
            "reserved": float(torch.cuda.memory_reserved(device)),
        }
    return {"rss": float(current_rss())}


def current_rss() -> int:
    """Resident set size of this process in bytes (now, where /proc allows; else the peak)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
