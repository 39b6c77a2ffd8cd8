"""Choosing and describing the compute device; the FLOPs estimate behind MFU figures."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
import resource
import sys
import time
from contextlib import AbstractContextManager, nullcontext

import torch

from .config import ConfigError, GPTConfig


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


def check_dtype(dtype: str, device: torch.device) -> None:
    if dtype == "bfloat16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise ConfigError("--dtype bfloat16: this CPU has no bfloat16 support; use --dtype float32")
    if dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--dtype bfloat16: this GPU has no bfloat16 support; use --dtype float32")


def autocast(device: torch.device, dtype: str) -> AbstractContextManager[object]:
    """Mixed precision for the forward pass when dtype is bfloat16; a no-op for float32."""
    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


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


def flops_per_token(config: GPTConfig, n_params: int) -> float:
    """Training FLOPs per token (forward + backward), as in the PaLM paper and nanoGPT:
    6 per parameter plus the attention scores and weighted sums, 12 * layers * width * context."""
    return 6.0 * n_params + 12.0 * config.n_layers * config.n_embed * config.block_size


# Dense peak FLOP/s of common GPUs from their data sheets: (bfloat16 or float16 tensor cores,
# TF32 tensor cores, float32 without tensor cores). The most specific name first: a key matches
# the device's name as a whole word ("L4" is not "L40", "A10" is not "A100" or "A10G").
_GPU_PEAKS = (
    ("H200", (989e12, 494e12, 67e12)), ("H100 PCIe", (756e12, 378e12, 51e12)), ("H100", (989e12, 494e12, 67e12)),
    ("A100", (312e12, 156e12, 19.5e12)), ("L40S", (362e12, 183e12, 91.6e12)), ("L40", (181e12, 90.5e12, 90.5e12)),
    ("L4", (121e12, 60e12, 30.3e12)), ("A10", (125e12, 62.5e12, 31.2e12)), ("4090", (165e12, 82.6e12, 82.6e12)),
    ("3090", (71e12, 35.6e12, 35.6e12)), ("V100", (125e12, 15.7e12, 15.7e12)), ("T4", (65e12, 8.1e12, 8.1e12)),
)


def gpu_data_sheet(name: str) -> tuple[str, tuple[float, float, float]] | None:
    """The data-sheet entry whose key is a whole word of the GPU's name, if any."""
    for key, peaks in _GPU_PEAKS:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", name):
            return key, peaks
    return None


def peak_flops(device: torch.device, dtype: str) -> tuple[float, str]:
    """The peak FLOP/s that MFU is measured against, and where the figure comes from.

    For known GPUs: the data sheet, for the arithmetic float32 matmuls really use there (TF32
    tensor cores only when PyTorch is allowed them; it is not by default). Elsewhere (CPUs,
    Apple, other GPUs): measured here, as the rate of a 1024 x 1024 matrix multiplication in
    the training dtype, so MFU on a CPU reads as "share of the best matmul speed".
    """
    if device.type == "cuda":
        sheet = gpu_data_sheet(torch.cuda.get_device_name(device))
        if sheet is not None:
            key, (half, tf32, fp32) = sheet
            if dtype != "float32":
                return half, f"{key} data sheet, {dtype} tensor cores"
            if torch.get_float32_matmul_precision() != "highest":
                return tf32, f"{key} data sheet, TF32 tensor cores"
            return fp32, f"{key} data sheet, float32"
    return measure_matmul_flops(device, dtype), "measured matmul"


def measure_matmul_flops(device: torch.device, dtype: str, size: int = 1024, repeats: int = 12) -> float:
    """The best rate of `repeats` size x size matmuls: the best run, not the mean, because other
    work on the machine (the app starting up, say) only ever makes a run slower."""
    torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    # A generator of its own: drawing from torch's global one would change the dropout masks
    # of the training that follows, so a run would depend on whether this was measured.
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=torch_dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=torch_dtype, generator=generator)
    a @ b  # warm up kernels and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best
