"""Which floating-point precision training runs in, and why: `--dtype auto|float32|bfloat16|float16`.

    precision = choose_precision("auto", device)   # Precision("bfloat16", "...", "native"), say
    with autocast(device, precision.dtype): ...     # the forward pass
    scaler = grad_scaler(device, precision.dtype)   # float16 only; None otherwise

auto, the default, takes what is fastest where it is: on a CUDA GPU bfloat16 where it has it,
else float16 with a gradient scaler (as nanoGPT does); on a CPU that computes bfloat16 natively
(AVX512-BF16 or AMX), bfloat16 only where a probe of this model's training step measured it at
least BFLOAT16_MARGIN times faster than float32 (model/precision_probe.py: at small sizes it is
not), else float32; float32 elsewhere. On a CPU without those instructions bfloat16 is emulated
(each product converted to float32 and back) and slower than float32: asked for there, it runs,
with a warning the Trainer emits once (`emulated`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from .config import ConfigError

# bfloat16 must be this many times faster than float32 in the probe for auto to take it: float32
# is exact, and two dtypes within the probe's noise of each other are a tie it wins.
BFLOAT16_MARGIN = 1.1

_TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ProbeResult:
    """What the probe measured (model/precision_probe.py), what auto decides by."""

    float32_ms: float  # a probed step's time in each dtype (its fastest round)
    bfloat16_ms: float
    rows: int  # sequences a probed step took (the run's micro-batch, or fewer)

    @property
    def speedup(self) -> float:
        """How many times faster bfloat16 stepped than float32 (below 1: slower)."""
        return self.float32_ms / self.bfloat16_ms if self.bfloat16_ms > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"float32_ms": round(self.float32_ms, 2), "bfloat16_ms": round(self.bfloat16_ms, 2),
                "rows": self.rows, "speedup": round(self.speedup, 2)}


@dataclass(frozen=True)
class Precision:
    dtype: str  # float32, bfloat16, float16: what training runs in
    reason: str  # why, for people: the start line, config.json, bench's JSON, the messages
    short: str  # the same in a few words (14 characters at most), for the device panel
    emulated: bool = False  # bfloat16 on a CPU that emulates it: runs, slower than float32
    probe: dict[str, Any] | None = None  # auto on a CPU with native bfloat16: what was measured (config.json)

    @property
    def warning(self) -> str | None:
        """What to tell a person once at the start of a run, if anything."""
        if self.emulated:
            return ("bfloat16 is emulated on this CPU (no AVX512-BF16 or AMX): it trains slower than float32 "
                    "here; --dtype auto (float32 on this CPU) is faster")
        return None


def choose_precision(requested: str, device: torch.device,
                     probe: Callable[[], ProbeResult] | None = None) -> Precision:
    """What `--dtype requested` means on this device; ConfigError where it cannot run.

    probe: times this model's step in float32 and bfloat16 (model/precision_probe.py), called
    only where auto has a choice to make (a CPU with native bfloat16). Without it, such a CPU
    gets bfloat16 on the strength of its instructions alone (what validating a flag needs)."""
    kind = device.type
    if requested == "auto":
        if kind == "cuda":
            if torch.cuda.is_bf16_supported():
                return Precision("bfloat16", "auto: this GPU computes bfloat16 natively", "auto (native)")
            return Precision("float16", "auto: this GPU has no bfloat16; float16 with a gradient scaler",
                             "auto (+scaler)")
        if kind == "cpu" and cpu_has_native_bfloat16() and _cpu_bfloat16_works():
            if probe is None:
                return Precision("bfloat16", "auto: this CPU computes bfloat16 natively (AVX512-BF16 or AMX)",
                                 "auto (native)")
            return _measured(probe())
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


def _measured(result: ProbeResult) -> Precision:
    """auto's choice on a CPU with native bfloat16, from what the probe measured."""
    figures = (f"a step took {result.bfloat16_ms:.1f} ms in bfloat16, {result.float32_ms:.1f} ms in float32 "
               f"({result.rows} sequences)")
    speedup = result.speedup
    if speedup >= BFLOAT16_MARGIN:
        return Precision("bfloat16", f"auto: bfloat16 {speedup:.1f}x faster here ({figures})",
                         f"auto: {speedup:.1f}x", probe=result.as_dict())
    return Precision("float32", f"auto: float32, bfloat16 {speedup:.2f}x for these sizes ({figures})",
                     f"bf16 {speedup:.2f}x", probe=result.as_dict())


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
