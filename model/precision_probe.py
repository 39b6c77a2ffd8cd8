"""Whether bfloat16 is faster than float32 for this model on this CPU: a second or two of
measured training steps in each, at the run's own sizes.

    probe = probe_step_times(model_config, train_config, rows=12)   # ProbeResult
    probe.speedup                                                     # float32's time / bfloat16's

A CPU that computes bfloat16 natively (AVX512-BF16, AMX) is not always faster in it: each
step converts the weights to bfloat16 and the activations back, and at small sizes that costs
more than the products save. On a 2-core AMD EPYC with AVX512-BF16 the seed's model steps 1.5x
faster in bfloat16, while the `cpu` preset's (2 layers x 128, 12 x 64 tokens a step) was 1.8x
slower when its allocations shared one malloc arena and no faster without. So `--dtype auto`
measures (model/precision.py decides from what this returns).

The probe is a whole training step (forward under autocast, backward, AdamW) of a model of the
run's shape, built from its own seed under a forked RNG, on random tokens: the run's model,
optimizer and random streams are never touched. Steps of the two dtypes alternate, so that
whatever else the machine does falls on both, and each keeps its fastest round. A model too big
to step in a fraction of a second is probed on fewer sequences (the products' shapes per
sequence are the run's; their number only scales the work).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .config import GPTConfig, TrainConfig
from .gpt import GPT
from .optim import make_optimizer
from .precision import BFLOAT16_MARGIN, ProbeResult, autocast

if TYPE_CHECKING:
    from .distributed import ProcessGroup

BUDGET_S = 1.5  # the probe's time at most, about (its first steps are not counted against it)
STEP_TARGET_S = 0.25  # a probed step takes about this long at most: fewer rows than the run's if needed
MIN_ROUNDS, MAX_ROUNDS = 2, 8  # rounds of a step in each dtype: at least, and at most within BUDGET_S
CLEAR_BY = 1.25  # after MIN_ROUNDS, a speedup this far either side of auto's margin ends the probe


def probe_step_times(model_config: GPTConfig, train_config: TrainConfig, rows: int,
                     budget_s: float = BUDGET_S, clock: Callable[[], float] = time.perf_counter) -> ProbeResult:
    """Time training steps of this model on the CPU in float32 and in bfloat16 (see the module)."""
    device = torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_config.seed)
        model = GPT(model_config).to(device)
        optimizer = make_optimizer(model, train_config)
        gen = torch.Generator().manual_seed(train_config.seed)
        shape = (max(1, rows), model_config.block_size)

        def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            ids = torch.randint(0, model_config.vocab_size, (n, shape[1] + 1), generator=gen)
            return ids[:, :-1], ids[:, 1:]

        def step(dtype: str, xb: torch.Tensor, yb: torch.Tensor) -> float:
            start = clock()
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                _, loss = model(xb, yb)
            loss.backward()
            optimizer.step()
            return clock() - start

        # a first step of each at a few rows: their one-time costs, and how long a row takes
        few = min(shape[0], 4)
        xb, yb = batch(few)
        step("float32", xb, yb), step("bfloat16", xb, yb)
        per_row = step("float32", xb, yb) / few
        n = max(few, min(shape[0], int(STEP_TARGET_S / max(per_row, 1e-9) + 1e-6)))
        xb, yb = batch(n)
        step("float32", xb, yb), step("bfloat16", xb, yb)  # once at that size, untimed
        best = {"float32": float("inf"), "bfloat16": float("inf")}
        start, rounds = clock(), 0
        while rounds < MIN_ROUNDS or (rounds < MAX_ROUNDS and clock() - start < budget_s
                                      and not _clear(best["float32"] / best["bfloat16"])):
            for dtype in ("float32", "bfloat16") if rounds % 2 == 0 else ("bfloat16", "float32"):
                best[dtype] = min(best[dtype], step(dtype, xb, yb))
            rounds += 1
    return ProbeResult(1000 * best["float32"], 1000 * best["bfloat16"], n)


def _clear(speedup: float) -> bool:
    """Whether the rounds so far leave no doubt about auto's choice (more would not change it)."""
    return not BFLOAT16_MARGIN / CLEAR_BY < speedup < BFLOAT16_MARGIN * CLEAR_BY


def probe_run(model_config: GPTConfig, train_config: TrainConfig, group: ProcessGroup | None = None) -> ProbeResult:
    """The probe at a run's micro-batch (its rows of a step, over processes and micro-steps).
    Several processes each probe, as they will train, side by side, and all take rank 0's
    figures: they must choose alike."""
    world = group.world_size if group is not None else 1
    rows = max(1, train_config.batch_size // (world * train_config.grad_accum))
    result = probe_step_times(model_config, train_config, rows)
    if group is not None:
        f32, bf16, n = group.from_main([result.float32_ms, result.bfloat16_ms, float(result.rows)])
        result = ProbeResult(f32, bf16, int(n))
    return result
