"""Device helpers that touch the operating system."""

from __future__ import annotations

import os
import platform
import threading

import pytest
import torch

from model.config import ConfigError
from model.device import lower_thread_priority
from model.flops import gpu_data_sheet, measure_matmul_flops, peak_flops
from model.precision import check_dtype


@pytest.mark.skipif(platform.system() != "Linux", reason="per-thread nice values are Linux's")
def test_lower_thread_priority_changes_only_the_calling_thread() -> None:
    before_main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: dict[str, int] = {}

    def worker() -> None:
        tid = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, tid)
        seen["ok"] = lower_thread_priority(3)
        seen["after"] = os.getpriority(os.PRIO_PROCESS, tid)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["ok"]
    assert seen["after"] == min(19, seen["before"] + 3)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before_main


def test_the_matmul_probe_leaves_the_global_random_generator_alone() -> None:
    # CPU dropout masks come from the global generator: a probe drawing from it would make the
    # dashboard's training (which measures the peak) differ from the same run headless
    torch.manual_seed(123)
    before = torch.get_rng_state()
    measure_matmul_flops(torch.device("cpu"), "float32", size=64, repeats=2)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize(
    "name, key",
    [
        ("NVIDIA L40", "L40"), ("NVIDIA L40S", "L40S"), ("NVIDIA L4", "L4"), ("NVIDIA A10", "A10"),
        ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA A100 80GB PCIe", "A100"), ("NVIDIA A10G", None),
        ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H200", "H200"),
        ("Tesla T4", "T4"), ("Tesla V100-SXM2-16GB", "V100"), ("NVIDIA GeForce RTX 4090", "4090"),
        ("NVIDIA GeForce RTX 4070", None), ("NVIDIA RTX A6000", None),
    ],
)
def test_gpu_data_sheets_match_whole_names(name: str, key: str | None) -> None:
    found = gpu_data_sheet(name)
    assert (found[0] if found else None) == key


def test_a_gpus_float32_peak_is_tf32_only_where_tf32_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-40GB")
    cuda = torch.device("cuda")
    assert peak_flops(cuda, "bfloat16") == (312e12, "A100 data sheet, bfloat16 tensor cores")
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")  # PyTorch's default: no TF32
        assert peak_flops(cuda, "float32") == (19.5e12, "A100 data sheet, float32")
        torch.set_float32_matmul_precision("high")
        assert peak_flops(cuda, "float32") == (156e12, "A100 data sheet, TF32 tensor cores")
    finally:
        torch.set_float32_matmul_precision(previous)


def test_bfloat16_is_refused_where_the_device_lacks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with pytest.raises(ConfigError, match="no bfloat16 support"):
        check_dtype("bfloat16", torch.device("cpu"))
    check_dtype("float32", torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with pytest.raises(ConfigError, match="this GPU has no bfloat16"):
        check_dtype("bfloat16", torch.device("cuda"))


def test_a_measured_peak_is_the_best_of_a_square_matmul_and_the_models_own_products(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """MFU over 100% meant a peak below what the model's matmuls reach (a square bfloat16 matmul
    on an Intel CPU that emulates bfloat16 measured slower than the model's own products). The
    peak is therefore the best of the square matmul and of the model's own products: checked
    here with the rates given, not timed (a timing comparison fails on a busy machine)."""
    from model import flops
    from model.config import GPTConfig
    from model.flops import model_matmul_shapes

    config = GPTConfig(vocab_size=40, block_size=64, n_embed=64, n_layers=1, n_heads=4)
    shapes = model_matmul_shapes(config, 96)
    assert shapes == [(96 * 64, 64, 256), (96 * 64, 256, 64)]  # the feed-forward's two products
    rates = {shapes[0]: 3e9, shapes[1]: 2e9}
    monkeypatch.setattr(flops, "measure_matmul_flops", lambda device, dtype: 1e9)
    monkeypatch.setattr(flops, "measure_linear_flops", lambda device, dtype, *shape: rates[shape])
    assert peak_flops(torch.device("cpu"), "float32", shapes) == (3e9, "measured matmul")
    monkeypatch.setattr(flops, "measure_matmul_flops", lambda device, dtype: 5e9)
    assert peak_flops(torch.device("cpu"), "float32", shapes) == (5e9, "measured matmul")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_models_products_are_measured_the_way_the_model_makes_them(dtype: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the model's own Linear layer (its oneDNN path in float32), under autocast below float32."""
    if dtype == "bfloat16" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no bfloat16 kernels")
    from model import flops
    from model.linear import Linear

    calls: list[tuple[tuple[int, ...], bool]] = []
    real = Linear.forward

    def forward(self: Linear, x: torch.Tensor) -> torch.Tensor:
        calls.append((tuple(x.shape), torch.is_autocast_enabled("cpu")))
        return real(self, x)

    monkeypatch.setattr(Linear, "forward", forward)
    rate = flops.measure_linear_flops(torch.device("cpu"), dtype, 4096, 64, 256, repeats=2)
    assert rate > 0 and calls and all(c == ((4096, 64), dtype != "float32") for c in calls)
