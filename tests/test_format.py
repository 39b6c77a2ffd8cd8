"""chargpt_tui/format.py: numbers, durations and device names as the screens show them."""

from __future__ import annotations

import pytest

from chargpt_tui.format import about, duration, short_device_name, si


@pytest.mark.parametrize(
    "name, short",
    [
        ("Intel(R) Xeon(R) Processor @ 2.30GHz (2 cores)", "Intel Xeon (2 cores)"),
        ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz (2 cores)", "Intel Xeon Platinum 8375C (2 cores)"),
        ("AMD EPYC 7B13 64-Core Processor (2 cores)", "AMD EPYC 7B13 (2 cores)"),
        ("AMD EPYC (2 cores)", "AMD EPYC (2 cores)"),
        ("11th Gen Intel(R) Core(TM) i7-1165G7 @ 2.80GHz (8 cores)", "11th Gen Intel Core i7-1165G7 (8 cores)"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"),
        ("Tesla T4", "Tesla T4"),
        ("Apple MPS (arm64)", "Apple MPS (arm64)"),
    ],
)
def test_device_names_without_the_vendor_noise(name: str, short: str) -> None:
    assert short_device_name(name) == short


def test_durations_and_numbers() -> None:
    assert [about(s) for s in (45, 100, 720, 6000, 3600)] == ["45 s", "2 min", "12 min", "1 h 40 min", "1 h"]
    assert duration(3723) == "1:02:03" and duration(123) == "2:03" and duration(float("nan")) == "--:--"
    assert si(12345) == "12.3k" and si(4.56e6) == "4.56M"
