"""Configuration dataclasses for the model and the training loop, and the named presets.

The dataclasses' defaults are the seed's hyperparameters (the lecture's model, as its single
script trains it); `default_preset` says which preset a run without --preset takes on a device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value is unusable. The message is one line meant for the user."""


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 256  # maximum context length
    n_embed: int = 128
    n_layers: int = 4
    n_heads: int = 4
    dropout: float = 0.2

    @property
    def head_size(self) -> int:
        return self.n_embed // self.n_heads

    def validate(self) -> None:
        for name in ("vocab_size", "block_size", "n_embed", "n_layers", "n_heads"):
            _require_positive(name, getattr(self, name))
        if self.n_embed % self.n_heads:
            raise ConfigError(
                f"n_embed ({self.n_embed}) must be divisible by n_heads ({self.n_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


LR_SCHEDULES = ("constant", "cosine")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda", "mps")
OPTIMIZERS = ("adamw", "muon")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64  # the global batch: over all processes and micro-steps of a step
    grad_accum: int = 1  # micro-steps a step's batch is split into (gradients summed)
    max_iters: int = 5000
    eval_interval: int = 500
    eval_iters: int = 200
    learning_rate: float = 3e-4
    # "constant" is the seed's schedule; "cosine" is nanoGPT's linear warmup then cosine decay
    # from learning_rate down to min_lr at max_iters.
    lr_schedule: str = "constant"
    warmup_iters: int = 0
    min_lr: float = 3e-5
    weight_decay: float = 0.01  # torch.optim.AdamW's default, which the seed uses
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 0.0  # 0: no clipping
    sample_interval: int = 500
    sample_tokens: int = 200
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"  # model/precision.py: bfloat16 where native, float16 on older GPUs, else float32
    threads: int = 0  # 0: torch's default
    # "adamw" (the seed's) everywhere; "muon": torch.optim.Muon on the blocks' weight matrices at
    # muon_lr (on the schedule's shape), AdamW on the rest at learning_rate (model/optim.py)
    optimizer: str = "adamw"
    muon_lr: float = 0.02
    muon_momentum: float = 0.95

    def validate(self) -> None:
        for name in (
            "batch_size", "grad_accum", "max_iters", "eval_interval", "eval_iters", "learning_rate",
            "sample_interval", "sample_tokens",
        ):
            _require_positive(name, getattr(self, name))
        for name in ("warmup_iters", "min_lr", "weight_decay", "grad_clip", "seed", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ConfigError("beta1 and beta2 must be in [0, 1)")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum})")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r} (choose from {', '.join(OPTIMIZERS)})")
        if self.optimizer == "muon":
            _require_muon()
        _require_positive("muon_lr", self.muon_lr)
        if not 0.0 <= self.muon_momentum < 1.0:
            raise ConfigError("muon_momentum must be in [0, 1)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r} (choose from {', '.join(LR_SCHEDULES)})")
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r} (choose from {', '.join(DTYPES)})")
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r} (choose from {', '.join(DEVICES)})")


    def check_processes(self, world_size: int) -> None:
        """The batch must split evenly over world_size processes and grad_accum micro-batches."""
        if self.batch_size % (world_size * self.grad_accum):
            raise ConfigError(f"--batch-size {self.batch_size} must be divisible by the number of processes times "
                              f"--grad-accum ({world_size} x {self.grad_accum})")


# Sampling temperatures: 0 (the most likely character each time) or within these. Below the
# lower bound logits / temperature overflows float32 (1e-45 gave inf, then NaN probabilities);
# there it picks the most likely character anyway.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0
TEMPERATURE_RULE = f"0 (always the most likely character) or from {MIN_TEMPERATURE} to {MAX_TEMPERATURE:g}"


def _require_muon() -> None:
    import torch  # here, not above: viewers import this module and never PyTorch

    if not hasattr(torch.optim, "Muon"):
        raise ConfigError(
            f"--optimizer muon needs PyTorch 2.9 or later (torch.optim.Muon); this is {torch.__version__}"
        )


def check_run(model_config: GPTConfig, train_config: TrainConfig, vocab_size: int, world_size: int) -> None:
    """A run's settings, together: each valid, for this many processes, and this vocabulary."""
    model_config.validate()
    train_config.validate()
    train_config.check_processes(world_size)
    if model_config.vocab_size != vocab_size:
        raise ValueError("model vocab_size differs from the corpus vocabulary")


def temperature_ok(temperature: float) -> bool:
    return temperature == 0 or MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE


def _require_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class Preset:
    description: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    reaches: str = ""  # what it was measured to reach, for the hint that names it on a slow run


PRESETS: dict[str, Preset] = {
    "seed": Preset("the seed's hyperparameters: 4 layers x 128 wide, block 256, 5000 iters (the default with a GPU)"),
    # For a laptop CPU, tuned for the lowest validation loss in about 45 seconds on a 2-core
    # machine. nanoGPT's CPU recipe (4 layers x 128, batch 12, block 64, lr 1e-3, 2000 iters)
    # reached 1.79 on tinyshakespeare in 67 s here. At this budget (~1.7M tokens) a smaller
    # model on more tokens does better: with the same ~43 s, 4 layers reached 1.82, 3 layers
    # 1.78, 2 layers 1.70 (lr 2e-3 for all). No dropout, warmup + cosine decay as nanoGPT.
    "cpu": Preset(
        "a small, fast recipe for a laptop CPU: 2 layers x 128, block 64, batch 12, 2200 iters (~1 min on 2 cores)",
        model={"block_size": 64, "n_embed": 128, "n_layers": 2, "n_heads": 4, "dropout": 0.0},
        train={
            "batch_size": 12, "max_iters": 2200, "eval_interval": 275, "eval_iters": 20,
            "learning_rate": 2e-3, "lr_schedule": "cosine", "warmup_iters": 100, "min_lr": 2e-4,
            "weight_decay": 0.1, "beta2": 0.99, "grad_clip": 1.0, "sample_interval": 550,
        },
        # measured on tinyshakespeare, on a 2-core AMD EPYC (README's table; docs/performance.md)
        reaches="on tinyshakespeare it reaches a validation loss of 1.88 in about 35 s and 1.74 in a minute "
                "on 2 cores",
    ),
    # The best model 10 minutes on a 2-core CPU trains: the seed's blocks, twice the cpu preset's
    # depth and context (benchmarks/cpu_10min_sweep.sh). AdamW: Muon (at 0.02) learnt more per
    # step at first, but its Newton-Schulz iterations made a step 20% slower here, and AdamW
    # reached 1.60 first (376 s against 451 s from launch). No dropout: in 10 minutes a model of
    # 0.8M parameters sees tiny Shakespeare about 9 times, and dropout costs CPU time.
    "cpu-10min": Preset(
        "the best in 10 minutes on a CPU: 4 layers x 128, block 128, batch 16, 4600 iters",
        model={"block_size": 128, "n_embed": 128, "n_layers": 4, "n_heads": 4, "dropout": 0.0},
        train={
            "batch_size": 16, "max_iters": 4600, "eval_interval": 230, "eval_iters": 20,
            "learning_rate": 2e-3, "lr_schedule": "cosine", "warmup_iters": 100, "min_lr": 2e-4,
            "weight_decay": 0.1, "beta2": 0.99, "grad_clip": 1.0, "sample_interval": 1150,
        },
        reaches="on tinyshakespeare it reaches a validation loss of 1.60 within 10 minutes on 2 cores",
    ),
    # nanoGPT's GPU recipe for shakespeare_char (6 x 384, ~10.7M parameters).
    "shakespeare": Preset(
        "a GPU-sized recipe (nanoGPT's): 6 layers x 384 wide, block 256, 5000 iters",
        model={"block_size": 256, "n_embed": 384, "n_layers": 6, "n_heads": 6, "dropout": 0.2},
        train={
            "batch_size": 64, "max_iters": 5000, "eval_interval": 250, "eval_iters": 200,
            "learning_rate": 1e-3, "lr_schedule": "cosine", "warmup_iters": 100, "min_lr": 1e-4,
            "weight_decay": 0.1, "beta2": 0.99, "grad_clip": 1.0, "sample_interval": 500,
        },
    ),
}

def default_preset(device_type: str) -> str:
    """The preset of a run started without --preset: `cpu` on a machine without a GPU (at the
    seed's settings a 2-core CPU takes over an hour, and minutes before its first step), the
    seed's elsewhere."""
    return "cpu" if device_type == "cpu" else "seed"


def preset_note(preset: str | None, device_type: str) -> str:
    """A few words on why a run has this preset, for the device panel."""
    if preset is None or preset not in PRESETS:
        return "from the checkpoint" if preset == "resumed" else ""
    if preset == default_preset(device_type):
        return f"the {device_type.upper() if device_type != 'cuda' else 'GPU'} default"
    return "asked for"


MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(GPTConfig))
TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def build_configs(
    preset: str = "seed", overrides: dict[str, Any] | None = None, vocab_size: int = 65
) -> tuple[GPTConfig, TrainConfig]:
    """Defaults, then the preset, then explicit overrides (None values are ignored)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    chosen = PRESETS[preset]
    model_kwargs = {**chosen.model, "vocab_size": vocab_size}
    train_kwargs = dict(chosen.train)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in MODEL_FIELDS:
            model_kwargs[key] = value
        elif key in TRAIN_FIELDS:
            train_kwargs[key] = value
        else:
            raise ConfigError(f"unknown setting {key!r}")
    model_config, train_config = GPTConfig(**model_kwargs), TrainConfig(**train_kwargs)
    model_config.validate()
    train_config.validate()
    return model_config, train_config
