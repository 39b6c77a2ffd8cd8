"""The learning-rate schedule and the optimizer: the seed's AdamW, nanoGPT's warmup and cosine decay."""

from __future__ import annotations

import math
from typing import Any

import torch

from .config import TrainConfig
from .gpt import GPT


def lr_at(it: int, config: TrainConfig) -> float:
    """Learning rate for step `it`: constant (the seed), or nanoGPT's warmup + cosine decay."""
    if config.lr_schedule == "constant":
        if config.warmup_iters and it < config.warmup_iters:
            return config.learning_rate * (it + 1) / (config.warmup_iters + 1)
        return config.learning_rate
    if it < config.warmup_iters:
        return config.learning_rate * (it + 1) / (config.warmup_iters + 1)
    if it >= config.max_iters:
        return config.min_lr
    ratio = (it - config.warmup_iters) / max(1, config.max_iters - config.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return config.min_lr + coeff * (config.learning_rate - config.min_lr)


def make_optimizer(model: GPT, config: TrainConfig) -> torch.optim.AdamW:
    # As nanoGPT: weight decay on matrices and embeddings, none on biases and LayerNorm gains.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused implementation (one kernel for all parameters, CPU and CUDA) computes the same
    # update as the default for-each one; on the cpu preset's small model it saves ~2 ms a step.
    # Where this PyTorch has no fused kernel for the device, the for-each one.
    device = next(model.parameters()).device
    settings: dict[str, Any] = {"lr": config.learning_rate, "betas": (config.beta1, config.beta2)}
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(groups, **settings, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.AdamW(groups, **settings)


def load_moments(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """A checkpoint's optimizer state, with this run's settings: load_state_dict takes the groups'
    hyperparameters from what it is given (weight decay, betas, fused, ...), so this run's are put
    into the saved groups first; it then places the moments as they require (a foreach checkpoint
    resumed fused on a GPU: the step counts on the GPU)."""
    groups = [{**group, **{k: v for k, v in ours.items() if k != "params"}}
              for group, ours in zip(saved["param_groups"], optimizer.param_groups, strict=True)]
    optimizer.load_state_dict({**saved, "param_groups": groups})
