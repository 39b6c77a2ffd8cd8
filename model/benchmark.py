"""Training and generation speed, measured the way ``seed_reference.py bench`` measures them.

``chargpt-tui bench`` prints the dict that run_benchmark returns as one JSON object whose keys
match the reference's (step_ms, train_tokens_per_s, gen_tokens_per_s, params, batch_size,
block_size, threads), so the two outputs compare key by key. The training steps are the
Trainer's own (train_step), generation is GPT.generate: what a run does, not a copy of it.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .config import GPTConfig, TrainConfig
from .data import Corpus
from .device import describe_device
from .flops import flops_per_token, mfu, model_matmul_shapes, peak_flops
from .trainer import Trainer


def load_corpus(text: str | None) -> tuple[Corpus, float]:
    """The corpus, and the seconds it took to read, check and encode it."""
    start = time.perf_counter()
    corpus = Corpus.builtin() if text is None else Corpus.from_file(text)
    return corpus, time.perf_counter() - start


def run_benchmark(
    corpus: Corpus,
    load_s: float,
    model_config: GPTConfig,
    train_config: TrainConfig,
    steps: int = 10,
    warmup: int = 3,
    gen_tokens: int = 500,
) -> dict[str, Any]:
    """Time `steps` training steps after `warmup` untimed ones, then the generation of
    `gen_tokens` ids from a single one. steps == 0 or gen_tokens == 0 skips that part."""
    trainer = Trainer(corpus, model_config, train_config)
    model, device = trainer.model, trainer.device
    result: dict[str, Any] = {
        "impl": "chargpt-tui",
        "params": model.num_params(),
        "batch_size": train_config.batch_size,
        "block_size": model_config.block_size,
        "dtype": trainer.dtype,
        "dtype_reason": trainer.precision.reason,
        "dtype_probe": trainer.precision.probe,  # auto on a CPU with native bfloat16: what it measured
        "dropout": model_config.dropout,
        "device": describe_device(device),
        "threads": torch.get_num_threads(),
        "threads_reason": trainer.threads.reason,
        "load_s": round(load_s, 3),
        "chars": len(corpus),
        "step_ms": None,
        "train_tokens_per_s": None,
        "mfu": None,
        "gen_tokens_per_s": None,
    }
    if steps > 0:
        for it in range(warmup):
            trainer.train_step(it)
        _synchronize(device)
        start = time.perf_counter()
        for it in range(warmup, warmup + steps):
            trainer.train_step(it)
        _synchronize(device)
        step_s = (time.perf_counter() - start) / steps
        tokens_per_s = train_config.batch_size * model_config.block_size / step_s
        peak, source = peak_flops(device, trainer.dtype, model_matmul_shapes(model_config, train_config.batch_size))
        result.update(
            step_ms=round(step_s * 1000, 2),
            train_tokens_per_s=round(tokens_per_s, 1),
            mfu=round(mfu(flops_per_token(model_config, model.num_params(non_embedding=True)), tokens_per_s, peak), 4),
            peak_flops=round(peak / 1e9, 1) * 1e9,
            peak_source=source,
        )
    if gen_tokens > 0:
        model.eval()
        context = torch.zeros((1, 1), dtype=torch.long, device=device)
        start = time.perf_counter()
        model.generate(context, gen_tokens)
        _synchronize(device)
        result["gen_tokens_per_s"] = round(gen_tokens / (time.perf_counter() - start), 1)
    return result


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
