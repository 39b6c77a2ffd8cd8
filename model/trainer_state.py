"""What a Trainer saves in a checkpoint, and takes back from one (model/checkpoint.py writes and
reads the file; its docstring lists the keys)."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from .checkpoint import unwrapped_weights

if TYPE_CHECKING:
    from .trainer import Trainer


def state_of(trainer: Trainer, it: int) -> dict[str, Any]:
    """Everything a run resumed from step `it` needs to go on as this one would."""
    # (an evaluation held by a pause is not done: its generator is saved as it was before it, as a stop saves it)
    eval_gen = trainer._eval_gen_before if trainer._eval_gen_before is not None else trainer.eval_gen.get_state()
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "train_batches": trainer.train_gen.get_state(),
        "eval_batches": eval_gen,
        "samples": trainer.sample_gen.get_state(),
        "device": trainer.device.type,  # where the samples' generator (and "cuda") come from
    }
    if trainer.device.type == "cuda":
        # this process's own GPU only: one state per visible GPU (get_rng_state_all) could not be
        # restored where fewer are visible, and the other GPUs are other ranks' (or nobody's)
        rng["cuda"] = torch.cuda.get_rng_state(trainer.device)
    extra: dict[str, Any] = {"scaler": trainer.scaler.state_dict()} if trainer.scaler is not None else {}
    return {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        **extra,
        "model_config": asdict(trainer.model_config),
        "train_config": asdict(trainer.config),
        "vocab": "".join(trainer.corpus.tokenizer.chars),
        "iter": it,
        "due_done": trainer._due_done,
        "best_val_loss": trainer.best_val_loss,
        "best_iter": trainer.best_iter,
        "elapsed_s": trainer._time_s(),
        "rng": rng,
        "history": {
            "step_iters": torch.tensor(trainer.step_history.iters, dtype=torch.float64),
            "step_losses": torch.tensor(trainer.step_history.losses, dtype=torch.float32),
            "evals": torch.tensor(trainer.eval_history, dtype=torch.float64).reshape(-1, 3),
        },
        "corpus": {"name": trainer.corpus.name, "path": trainer.corpus.path, "n_chars": len(trainer.corpus)},
        "world_size": trainer.group.world_size if trainer.group is not None else 1,
    }

def restore(trainer: Trainer, state: dict[str, Any]) -> None:
    """Take a checkpoint's state back (the run's own configs are the trainer's already)."""
    trainer.model.load_state_dict(unwrapped_weights(state["model"]))
    if "optimizer" in state:
        # the saved moments, with this run's settings: load_state_dict takes the groups'
        # hyperparameters from what it is given (weight decay, betas, fused, ...), so this run's
        # are put into the saved groups first; it then places the moments as they require (a
        # foreach checkpoint resumed fused on a GPU: the step counts on the GPU)
        saved = state["optimizer"]
        groups = [{**group, **{k: v for k, v in ours.items() if k != "params"}}
                  for group, ours in zip(saved["param_groups"], trainer.optimizer.param_groups, strict=True)]
        trainer.optimizer.load_state_dict({**saved, "param_groups": groups})
    if trainer.scaler is not None and "scaler" in state:
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.iter = int(state["iter"])
    trainer._due_done = bool(state.get("due_done", True))
    trainer.best_val_loss = float(state.get("best_val_loss", math.inf))
    trainer.best_iter = int(state.get("best_iter", -1))
    trainer._elapsed_before = float(state.get("elapsed_s", 0.0))
    lost = restore_rng(state.get("rng", {}), trainer.device, {
        "train_batches": trainer.train_gen, "eval_batches": trainer.eval_gen, "samples": trainer.sample_gen})
    if lost:
        trainer._warnings.append(f"resumed on {trainer.device.type}; not restored from the checkpoint: "
                                 f"{', '.join(lost)} (training goes on; those draws differ from the saved run's)")
    history = state.get("history", {})
    if "step_iters" in history:
        trainer.step_history.load(history["step_iters"].tolist(), history["step_losses"].tolist())
    if "evals" in history:
        trainer.eval_history = [(int(i), float(t), float(v)) for i, t, v in history["evals"].tolist()]


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
