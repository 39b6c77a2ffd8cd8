"""The FLOPs behind MFU figures: what a training step computes, and the peak it is measured against."""

from __future__ import annotations

import re
import time

import torch

from .config import GPTConfig


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
