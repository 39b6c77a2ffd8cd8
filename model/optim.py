"""The learning-rate schedule and the optimizer: the seed's AdamW, nanoGPT's warmup and cosine
decay, and Muon (PyTorch's torch.optim.Muon) for the transformer blocks' weight matrices with
AdamW for the rest, as Muon's authors prescribe and the NanoGPT speedrun uses it.

Each parameter group carries "lr_scale": its learning rate over --learning-rate, so that one
schedule (lr_at) sets every group's rate: AdamW's groups 1, Muon's --muon-lr / --learning-rate.
"""

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


def muon_params(model: GPT) -> list[torch.nn.Parameter]:
    """What Muon updates: the 2-D weights inside the transformer blocks (attention's fused
    query-key-value and output projections, the feed-forward layers). Not the embeddings, the
    output head, biases or LayerNorm: those are AdamW's."""
    return [p for p in model.blocks.parameters() if p.dim() == 2]


def make_optimizer(model: GPT, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "muon":
        return MuonWithAdamW(model, config)
    return make_adamw(list(model.parameters()), config)


def make_adamw(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    # As nanoGPT: weight decay on matrices and embeddings, none on biases and LayerNorm gains.
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    # The fused implementation (one kernel for all parameters, CPU and CUDA) computes the same
    # update as the default for-each one; on the cpu preset's small model it saves ~2 ms a step.
    # Where this PyTorch has no fused kernel for the device, the for-each one.
    device = params[0].device
    settings: dict[str, Any] = {"lr": config.learning_rate, "betas": (config.beta1, config.beta2)}
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(groups, **settings, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.AdamW(groups, **settings)


def load_moments(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> str | None:
    """A checkpoint's optimizer state into this run's optimizer; if it is another kind's (a fork
    that changed --optimizer: those moments mean nothing here), nothing, and why."""
    ours = "muon" if isinstance(optimizer, MuonWithAdamW) else "adamw"
    if optimizer_kind(saved) != ours:
        return f"the checkpoint's optimizer was {optimizer_kind(saved)}: {ours} starts with no moments"
    if isinstance(optimizer, MuonWithAdamW):
        optimizer.load_state_dict(saved)
    else:
        _load_moments(optimizer, saved)
    return None


def _load_moments(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """A checkpoint's optimizer state, with this run's settings: load_state_dict takes the groups'
    hyperparameters from what it is given (weight decay, betas, fused, ...), so this run's are put
    into the saved groups first; it then places the moments as they require (a foreach checkpoint
    resumed fused on a GPU: the step counts on the GPU)."""
    groups = [{**group, **{k: v for k, v in ours.items() if k != "params"}}
              for group, ours in zip(saved["param_groups"], optimizer.param_groups, strict=True)]
    optimizer.load_state_dict({**saved, "param_groups": groups})


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on muon_params(model), torch.optim.AdamW (as make_adamw) on the rest, as one
    optimizer: its param_groups are Muon's then AdamW's (the same dicts), step() and zero_grad()
    act on both, its state_dict holds both. A GradScaler (float16) unscales and steps it as one."""

    def __init__(self, model: GPT, config: TrainConfig) -> None:
        matrices = muon_params(model)
        chosen = {id(p) for p in matrices}
        rest = [p for p in model.parameters() if id(p) not in chosen]
        # torch.optim.Optimizer's bookkeeping (hooks, state); the groups are the parts' (below)
        super().__init__([{"params": matrices}], {})
        self.muon = torch.optim.Muon(matrices, lr=config.muon_lr, weight_decay=config.weight_decay,
                                     momentum=config.muon_momentum)
        for group in self.muon.param_groups:
            group["lr_scale"] = config.muon_lr / config.learning_rate
        self.adamw = make_adamw(rest, config)
        self.state = self.muon.state  # GradScaler looks here for nothing it needs; each part keeps its own

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        """The parts' own group dicts, looked up each time: load_state_dict replaces them with
        copies, and a list taken once would leave the schedule setting rates no part reads."""
        if "adamw" not in self.__dict__:  # (within Optimizer.__init__, before the parts exist)
            return self.__dict__.setdefault("_setup_groups", [])
        return self.muon.param_groups + self.adamw.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        self.__dict__["_setup_groups"] = groups  # Optimizer.__init__'s; the parts' are the ones that count

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = self.muon.step(closure)
        self.adamw.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"kind": "muon", "muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        _load_moments(self.muon, state_dict["muon"])
        _load_moments(self.adamw, state_dict["adamw"])


def optimizer_kind(saved: dict[str, Any]) -> str:
    """Which optimizer a checkpoint's optimizer state is of."""
    return "muon" if saved.get("kind") == "muon" else "adamw"
