"""Which floating-point precision training runs in, and why: `--dtype auto|float32|bfloat16|float16`.

    precision = choose_precision("auto", device)   # Precision("bfloat16", "...", "native"), say
    with autocast(device, precision.dtype): ...     # the forward pass
    scaler = grad_scaler(device, precision.dtype)   # float16 only; None otherwise

auto, the default, takes what is fastest where it is: bfloat16 where the device computes it
natively (CUDA GPUs with bfloat16; CPUs with AVX512-BF16 or AMX), float16 with a gradient
scaler on CUDA GPUs without bfloat16 (as nanoGPT does), float32 elsewhere. On a CPU without
those instructions bfloat16 is emulated (each product converted to float32 and back) and slower
than float32: asked for there, it runs, with a warning the Trainer emits once (`emulated`).
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from .config import ConfigError

_TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Precision:
    dtype: str  # float32, bfloat16, float16: what training runs in
    reason: str  # why, for people: the start line, config.json, bench's JSON, the messages
    short: str  # the same in a few words (14 characters at most), for the device panel
    emulated: bool = False  # bfloat16 on a CPU that emulates it: runs, slower than float32

    @property
    def warning(self) -> str | None:
        """What to tell a person once at the start of a run, if anything."""
        if self.emulated:
            return ("bfloat16 is emulated on this CPU (no AVX512-BF16 or AMX): it trains slower than float32 "
                    "here; --dtype auto (float32 on this CPU) is faster")
        return None


def choose_precision(requested: str, device: torch.device) -> Precision:
    """What `--dtype requested` means on this device; ConfigError where it cannot run."""
    kind = device.type
    if requested == "auto":
        if kind == "cuda":
            if torch.cuda.is_bf16_supported():
                return Precision("bfloat16", "auto: this GPU computes bfloat16 natively", "auto (native)")
            return Precision("float16", "auto: this GPU has no bfloat16; float16 with a gradient scaler",
                             "auto (+scaler)")
        if kind == "cpu" and cpu_has_native_bfloat16() and _cpu_bfloat16_works():
            return Precision("bfloat16", "auto: this CPU computes bfloat16 natively (AVX512-BF16 or AMX)",
                             "auto (native)")
        if kind == "cpu":
            return Precision("float32", "auto: this CPU has no native bfloat16 (AVX512-BF16 or AMX), where "
                             "float32 is faster", "auto (no bf16)")
        return Precision("float32", f"auto: float32 on {kind}", "auto")
    if requested == "float32":
        return Precision("float32", "asked for (--dtype float32)", "as asked")
    if requested == "bfloat16":
        if kind == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("--dtype bfloat16: this GPU has no bfloat16 support; "
                              "use --dtype auto (float16 there) or float32")
        if kind == "cpu" and not _cpu_bfloat16_works():
            raise ConfigError("--dtype bfloat16: this CPU has no bfloat16 support; use --dtype float32")
        if kind == "cpu" and not cpu_has_native_bfloat16():
            return Precision("bfloat16", "asked for (--dtype bfloat16); emulated on this CPU, slower than float32",
                             "emulated: slow", emulated=True)
        return Precision("bfloat16", "asked for (--dtype bfloat16)", "as asked")
    if requested == "float16":
        if kind != "cuda":
            raise ConfigError(f"--dtype float16: only on a CUDA GPU (this run is on {kind}); use --dtype auto")
        return Precision("float16", "asked for (--dtype float16), with a gradient scaler", "+ grad scaler")
    raise ConfigError(f"unknown dtype {requested!r} (choose from auto, float32, bfloat16, float16)")


def check_dtype(requested: str, device: torch.device) -> None:
    """ConfigError (one line for the user) if `--dtype requested` cannot run on this device."""
    choose_precision(requested, device)


def torch_dtype(dtype: str) -> torch.dtype:
    """float32, bfloat16 or float16 as PyTorch's dtype."""
    return _TORCH_DTYPES.get(dtype, torch.float32)


def autocast(device: torch.device, dtype: str) -> AbstractContextManager[object]:
    """Mixed precision for the forward pass in bfloat16 or float16; a no-op for float32."""
    if dtype in _TORCH_DTYPES:
        return torch.autocast(device_type=device.type, dtype=_TORCH_DTYPES[dtype])
    return nullcontext()


def grad_scaler(device: torch.device, dtype: str) -> torch.amp.GradScaler | None:
    """float16's gradients underflow without one (bfloat16 has float32's range: none needed)."""
    if dtype != "float16":
        return None
    return torch.amp.GradScaler(device.type)


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware: AVX512-BF16 or AMX (Linux's flags)."""
    flags = _cpu_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_bfloat16_works() -> bool:
    """Whether PyTorch's CPU kernels take bfloat16 at all (natively or emulated on AVX-512)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
