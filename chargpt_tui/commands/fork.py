"""`--fork RUN_DIR[@best|@latest]`: a new run that starts from another run's checkpoint (its
weights, optimizer moments, random state, step and training time) with some settings changed,
in a run directory of its own whose config.json names its parent and the step it forked at.

A fork is a run of its own: its best.pt is the best of its own evaluations (the parent's best is
not carried over), its history starts at the parent's step, and it evaluates there first, so its
curve begins where the parent's was. The model's shape cannot change; its dropout can.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .parsers import UsageError

CHECKPOINTS = {"best": "best.pt", "latest": "ckpt.pt"}
FORKABLE_MODEL_FLAGS = ("dropout",)  # the rest is the model's shape


def parse_fork(spec: str) -> tuple[Path, str]:
    """RUN_DIR, RUN_DIR@best or RUN_DIR@latest (latest by default; a checkpoint's path names
    its own): the run directory and which checkpoint."""
    from chargpt_tui.wire.runs import is_run_dir

    path, at, which = spec.rpartition("@")
    if not at or which not in CHECKPOINTS:
        if at and not Path(spec).exists() and Path(path).is_dir():  # (a folder may have an @ in its name)
            raise UsageError(f"--fork {spec}: after the @, best or latest (which checkpoint to start from)")
        path, which = spec, "latest"
    run_dir = Path(path)
    if run_dir.is_file():
        names = {name: key for key, name in CHECKPOINTS.items()}
        if run_dir.name not in names:
            raise UsageError(f"--fork {spec}: name a run directory (RUN_DIR, RUN_DIR@best or RUN_DIR@latest)")
        run_dir, which = run_dir.parent, names[run_dir.name]
    if not run_dir.is_dir():
        raise UsageError(f"--fork {spec}: no such run directory")
    if not is_run_dir(run_dir):
        raise UsageError(f"--fork {spec}: not a run directory (no config.json or metrics.jsonl)")
    if not (run_dir / CHECKPOINTS[which]).is_file():
        raise UsageError(f"--fork {spec}: {run_dir / CHECKPOINTS[which]} is not there "
                         f"(the run has saved no {which} checkpoint yet)")
    return run_dir, which


def fork_state(state: dict[str, Any], run_dir: Path, which: str) -> dict[str, Any]:
    """The checkpoint's state as a fork starts from it: the parent's history and best forgotten,
    the evaluation at the fork's step due (the child's curve starts there), the parent named."""
    state = {key: value for key, value in state.items() if key not in ("history", "best_val_loss", "best_iter")}
    state["due_done"] = False
    state["forked_from"] = {"path": str(run_dir.resolve()), "checkpoint": which, "iter": int(state["iter"])}
    return state
