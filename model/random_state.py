"""The random states a checkpoint keeps (torch's, this process's GPU's, the named generators'),
and putting them back, on whatever device the run resumes on."""

from __future__ import annotations

from typing import Any

import torch


def rng_state(device: torch.device, generators: dict[str, torch.Tensor]) -> dict[str, Any]:
    """torch's CPU generator, this process's GPU's, and the named generators' states."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), **generators,
                           "device": device.type}  # where the samples' generator (and "cuda") come from
    if device.type == "cuda":
        # this process's own GPU only: one state per visible GPU (get_rng_state_all) could not be
        # restored where fewer are visible, and the other GPUs are other ranks' (or nobody's)
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def restore_rng(rng: dict[str, Any], device: torch.device, generators: dict[str, torch.Generator]) -> list[str]:
    """Put the saved random states back: torch's CPU generator, this process's GPU's (from
    "cuda", into `device` alone), and the named generators. Returns what could not be restored
    here (a GPU's state on a CPU, say), in words, for one line to the person resuming."""
    lost: list[str] = []
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng:
        saved = rng["cuda"]
        if isinstance(saved, (list, tuple)):  # older checkpoints: one per visible GPU, rank 0's first
            saved = saved[0] if saved else None
        if saved is None:
            pass
        elif device.type == "cuda":
            torch.cuda.set_rng_state(saved, device)
        else:
            lost.append("the GPU's random state (dropout)")
    for name, generator in generators.items():
        if name not in rng:
            continue
        try:
            generator.set_state(rng[name])
        except RuntimeError:  # a CUDA generator's state read back on the CPU, say
            saved_on = rng.get("device", "another device")
            lost.append(f"the {name.replace('_', ' ')} generator's state (saved on {saved_on})")
    return lost
