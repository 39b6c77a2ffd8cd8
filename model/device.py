"""Choosing and describing the compute device; the FLOPs estimate behind MFU figures."""

from __future__ import annotations

import os
import platform
import resource
import sys
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
