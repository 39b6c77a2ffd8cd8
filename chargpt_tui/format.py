"""Small formatting helpers shared by the headless printer and the TUI."""

from __future__ import annotations

import re


def duration(seconds: float) -> str:
    """1:02:03 or 2:03 (m:ss)."""
    if seconds != seconds or seconds < 0:  # NaN or negative: unknown
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def about(seconds: float) -> str:
    """A duration for a sentence: 45 s, 12 min, 1 h 40 min."""
    if seconds != seconds or seconds < 0:
        return "an unknown time"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = int(round(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    h, m = divmod(minutes, 60)
    return f"{h} h {m} min" if m else f"{h} h"


def si(value: float, unit: str = "") -> str:
    """12.3k, 4.56M: three significant figures."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


def count(n: int) -> str:
    return f"{n:,}"


# Vendor noise in CPU and GPU names, taken out where a name has to fit a narrow panel.
_NAME_NOISE = (
    r"\((?:R|r|TM|tm)\)",  # Intel(R) Xeon(R), Core(TM)
    r"\bCPU\b", r"\bProcessor\b", r"@\s*[\d.]+\s*[GM]Hz", r"\b\d+-Core\b",  # "CPU @ 2.30GHz", "64-Core Processor"
    r"^NVIDIA\s+(?:GeForce\s+)?",  # NVIDIA GeForce RTX 4090: RTX 4090
)


def threads(n: int) -> str:
    """ "1 thread", "2 threads"."""
    return f"{n} thread{'' if n == 1 else 's'}"


def short_device_name(name: str) -> str:
    """A CPU's or GPU's name without the vendor noise: "Intel(R) Xeon(R) Processor @ 2.30GHz
    (2 cores)" reads "Intel Xeon (2 cores)", "NVIDIA GeForce RTX 4090" reads "RTX 4090". The
    full name stays in config.json."""
    short = name
    for noise in _NAME_NOISE:
        short = re.sub(noise, " ", short)
    short = re.sub(r"\s+", " ", short).strip()
    return short or name


# C0, DEL and C1: what a terminal may act on (ESC starts its sequences; C1's CSI is one on its own)
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text from outside (a folder's name, a corpus name from config.json) for a plain line on a
    terminal: each control character a ?, as ls shows them, so that none is obeyed."""
    return CONTROL.sub("?", text)
