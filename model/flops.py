"""The FLOPs behind MFU figures: what a training step computes, and the peak it is measured against."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

import torch

from .config import GPTConfig
from .linear import Linear
from .precision import autocast, torch_dtype


def flops_per_token(config: GPTConfig, non_embedding_params: int) -> float:
    """Training FLOPs per token (forward + backward), as in the PaLM paper (appendix B) and
    nanoGPT's estimate_mfu: 6 per non-embedding parameter (a multiply and an add per weight
    forward, twice that backward) plus the attention scores and weighted sums, 12 * layers *
    width * context. The embeddings are lookups, not products: counting them read MFU 1-4% high
    on this model's small widths. `non_embedding_params` is GPT.num_params(non_embedding=True)."""
    return 6.0 * non_embedding_params + 12.0 * config.n_layers * config.n_embed * config.block_size


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float, devices: int = 1) -> float:
    """Model FLOPs utilisation per device: the throughput of all `devices` (torchrun's processes,
    each on a device like the one `peak_flops` is of) over their summed peak."""
    return flops_per_token * tokens_per_s / (peak_flops * devices)


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


def model_matmul_shapes(config: GPTConfig, batch_size: int) -> list[tuple[int, int, int]]:
    """(rows, in, out) of the model's largest training products: the feed-forward layers'."""
    rows, width = batch_size * config.block_size, config.n_embed
    return [(rows, width, 4 * width), (rows, 4 * width, width)]


def peak_flops(
    device: torch.device, dtype: str, shapes: Sequence[tuple[int, int, int]] = ()
) -> tuple[float, str]:
    """The peak FLOP/s that MFU is measured against, and where the figure comes from.

    For known GPUs: the data sheet, for the arithmetic float32 matmuls really use there (TF32
    tensor cores only when PyTorch is allowed them; it is not by default). Elsewhere (CPUs,
    Apple, other GPUs): measured here, in the training dtype, as the best of a 1024 x 1024
    matrix multiplication and of the model's own products (`shapes`, model_matmul_shapes)
    made the way the model makes them (its Linear layer, under autocast in a lower precision).
    A square matmul alone is not always the fastest: on an Intel CPU that emulates bfloat16 it
    measured below what the model's own matmuls reached, and MFU read 156%.
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
    rates = [measure_matmul_flops(device, dtype)]
    rates += [measure_linear_flops(device, dtype, *shape) for shape in shapes]
    return max(rates), "measured matmul"


def measure_matmul_flops(device: torch.device, dtype: str, size: int = 1024, repeats: int = 12) -> float:
    """The best rate of `repeats` size x size matmuls: the best run, not the mean, because other
    work on the machine (the app starting up, say) only ever makes a run slower."""
    # A generator of its own: drawing from torch's global one would change the dropout masks
    # of the training that follows, so a run would depend on whether this was measured.
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=torch_dtype(dtype), generator=generator)
    b = torch.randn(size, size, device=device, dtype=torch_dtype(dtype), generator=generator)
    return 2.0 * size**3 / _best_time(lambda: a @ b, device, repeats)


def measure_linear_flops(
    device: torch.device, dtype: str, rows: int, n_in: int, n_out: int, repeats: int = 8
) -> float:
    """The best rate of the model's Linear layer on (rows, n_in) inputs, in the training dtype
    (autocast below float32), forward only: the product the model's matmuls run at."""
    generator = torch.Generator(device=device).manual_seed(0)
    layer = torch.nn.utils.skip_init(Linear, n_in, n_out, device=device)  # no draws from the global generator
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n_out, n_in, device=device, generator=generator) * n_in**-0.5)
        assert layer.bias is not None
        layer.bias.zero_()
    x = torch.randn(rows, n_in, device=device, generator=generator)

    def product() -> None:
        with torch.no_grad(), autocast(device, dtype):
            layer(x)

    return 2.0 * rows * n_in * n_out / _best_time(product, device, repeats)


def _best_time(work: Callable[[], object], device: torch.device, repeats: int) -> float:
    work()  # warm up kernels and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best
