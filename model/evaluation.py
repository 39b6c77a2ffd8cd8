"""A Trainer's evaluations: the seed's estimate_loss (the mean loss over random batches of each
split, in eval mode), from a generator of its own, and the best validation loss so far.

An extra evaluation (a key press) never changes which batches training sees: they come from
another generator. An evaluation abandoned by a stop leaves the batches it would have drawn
undrawn, so that a run resumed from its checkpoint does it again on the same batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from . import events as ev
from .config import TrainConfig
from .data import Corpus
from .distributed import ProcessGroup
from .gpt import GPT
from .precision import autocast
from .reporting import Reporter

# Batches of each split in the evaluation at step 0 at most (Evaluator.batches).
FIRST_EVAL_BATCHES = 10


class EvaluationAbandoned(Exception):
    """A stop came during an evaluation: it is left undone."""


class Evaluator:
    def __init__(self, model: GPT, corpus: Corpus, config: TrainConfig, block_size: int, device: torch.device,
                 dtype: str, reports: Reporter) -> None:
        self.model, self.corpus, self.config, self.block_size = model, corpus, config, block_size
        self.device, self.dtype, self.reports = device, dtype, reports
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.best_val_loss = math.inf
        self.best_iter = -1
        self._before_best = (math.inf, -1)  # the best before the latest one (best_not_kept)
        self.history: list[tuple[int, float, float]] = []  # (iter, train loss, val loss) of each
        self._state_before: torch.Tensor | None = None  # the generator's state as the current one began

    def batches(self, it: int) -> int:
        """Batches of each split an evaluation at `it` takes: eval_iters, but at most
        FIRST_EVAL_BATCHES at step 0, where the model is untrained and its loss is about ln(vocab)
        whatever the batches (at the seed's settings on a 2-core CPU, 200 batches a split held an
        empty screen for 100 s)."""
        return min(self.config.eval_iters, FIRST_EVAL_BATCHES) if it == 0 else self.config.eval_iters

    @torch.no_grad()
    def estimate(self, it: int, between_batches: Callable[[], bool], group: ProcessGroup | None = None
                 ) -> dict[str, float]:
        """Mean loss over batches(it) random batches of each split. `between_batches()` runs
        before each batch (it may hold there, paused) and returns False when a stop abandons the
        evaluation: EvaluationAbandoned is raised. With a group (several processes) each takes its
        rows of each batch, and the mean of their means is the result."""
        batches = self.batches(it)
        total = 2 * batches
        clock = self.reports.clock
        self.reports.emit(ev.EvalStarted(it, clock.time_s(), batches))
        self.model.eval()
        last_report = time.perf_counter()
        out: dict[str, float] = {}
        state = self.generator.get_state()
        self._state_before = state  # what a save while it is held saves (state_dict)
        rows = group.rows(self.config.batch_size) if group is not None else None
        try:
            for s, split in enumerate(("train", "val")):
                losses = torch.zeros(batches)
                for k in range(batches):
                    if not between_batches():
                        self.generator.set_state(state)
                        raise EvaluationAbandoned
                    x, y = self.corpus.get_batch(split, self.config.batch_size, self.block_size, self.generator,
                                                 rows=rows)
                    with autocast(self.device, self.dtype):
                        _, loss = self.model(x.to(self.device), y.to(self.device))
                    losses[k] = loss.float().item()
                    now = time.perf_counter()
                    if now - last_report >= self.reports.interval_s:
                        last_report = now
                        self.reports.emit(ev.EvalProgress(it, clock.time_s(), s * batches + k + 1, total))
                if group is not None:
                    losses = group.mean(losses)
                out[split] = losses.mean().item()
        finally:
            self._state_before = None
            self.model.train()
        return out

    def record(self, it: int, train_loss: float, val_loss: float) -> bool:
        """Keep an evaluation's (finite) losses and report it. Returns whether it is the best so far."""
        is_best = val_loss < self.best_val_loss
        if is_best:
            self._before_best = (self.best_val_loss, self.best_iter)
            self.best_val_loss, self.best_iter = val_loss, it
        self.history.append((it, train_loss, val_loss))
        self.reports.emit(ev.EvalDone(it, self.reports.clock.time_s(), train_loss, val_loss, self.best_val_loss,
                                      self.best_iter, is_best, self.batches(it)))
        return is_best

    def best_not_kept(self) -> None:
        """The latest best's best.pt could not be written (a full disk): the best is still the one
        best.pt holds, so that the next evaluation better than that one writes it."""
        self.best_val_loss, self.best_iter = self._before_best

    def state_dict(self) -> dict[str, Any]:
        """The best so far, the evaluations, and the generator (as it was before an evaluation
        held by a pause: that one is not done, as a stop leaves it)."""
        return {"best_val_loss": self.best_val_loss, "best_iter": self.best_iter,
                "evals": torch.tensor(self.history, dtype=torch.float64).reshape(-1, 3),
                "generator": self._state_before if self._state_before is not None else self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The generator's state is put back with the others' (model/random_state.py)."""
        self.best_val_loss = float(state.get("best_val_loss", math.inf))
        self.best_iter = int(state.get("best_iter", -1))
        if "evals" in state:
            self.history = [(int(i), float(t), float(v)) for i, t, v in state["evals"].tolist()]
