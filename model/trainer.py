"""The training loop of the seed, run by a Trainer that emits events and obeys controls.

    trainer = Trainer(corpus, model_config, train_config, run_dir=RunDir("runs/x"))
    trainer.add_listener(print)          # any callable taking an Event
    result = trainer.run()               # blocks; run it in a thread to steer it

The Trainer keeps the loop: its setup, the step, the schedule. Collaborators of their own do
the rest: `steering` (model/steering.py: pause, resume, stop, save, evaluate and snapshots, from
any thread, acted on between steps), `reports` (model/reporting.py: events out, never waiting on
a listener, steps batched a few a second), `evaluator`, `sampler`, `checkpoints`, `divergence`
and `clock` (training time, less pauses). What a checkpoint keeps of each is its state_dict().

With a ProcessGroup (model/distributed.py, torchrun) the same loop runs in every process: each
computes its rows of the global batch, DDP averages the gradients, and rank 0's controls are
agreed on by all at each step boundary (`_agree`); only rank 0 samples and saves.

Iteration numbering: ``iter`` counts the steps done. At each iteration the loop first does what
is due there (evaluation at 0, every eval_interval and at max_iters; a sample every
sample_interval; a checkpoint after each evaluation, once that step's sample is taken too), then
one step. A checkpoint taken at iteration N therefore holds everything due at N, and a run
resumed from it starts with step N, computing what the uninterrupted run would have: the same
losses and, with the sample generator's state saved after the sample, the same later samples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from . import events as ev
from .checkpoint import unwrapped_weights
from .checkpointing import Checkpoints
from .config import GPTConfig, TrainConfig, check_run
from .cpu_threads import ThreadChoice
from .data import Corpus
from .device import choose_device, describe_device
from .distributed import ProcessGroup, guarded, no_sync
from .divergence import Divergence, TrainingDiverged
from .evaluation import EvaluationAbandoned, Evaluator
from .flops import flops_per_token
from .gpt import GPT
from .optim import load_moments, lr_at, make_optimizer
from .precision import autocast, choose_precision, grad_scaler
from .precision_probe import probe_run
from .random_state import restore_rng, rng_state
from .reporting import Listener, Reporter
from .rundir import RunDir
from .sampling import Sampler
from .steering import LoopActions, Steering
from .training_clock import TrainingClock


@dataclass(frozen=True)
class RunResult:
    status: str  # "finished", "stopped", "failed"
    iter: int
    best_val_loss: float
    best_iter: int
    error: str | None = None


class Trainer:
    def __init__(
        self,
        corpus: Corpus,
        model_config: GPTConfig,
        train_config: TrainConfig,
        run_dir: RunDir | None = None,
        resume: dict[str, Any] | None = None,
        listeners: tuple[Listener, ...] = (),
        event_interval_s: float = 0.25,
        on_divergence: str = "stop",
        group: ProcessGroup | None = None,
    ) -> None:
        Divergence.check(on_divergence)
        world = group.world_size if group is not None else 1
        check_run(model_config, train_config, corpus.tokenizer.vocab_size, world)
        corpus.check_block_size(model_config.block_size)
        self.corpus, self.model_config, self.config, self.run_dir = corpus, model_config, train_config, run_dir
        self.group = group
        self.is_main = group is None or group.is_main  # the process that samples, saves and reports
        self._rows = group.rows(train_config.batch_size) if group is not None else None  # of each batch
        self._live_group: ProcessGroup | None = None  # the group while the loop runs (collectives)
        self.device = choose_device(train_config.device)
        if group is not None:
            self.device = group.device(self.device)
        # the CPU threads it trains with: as many as cores are free, looked at again as it runs
        self.threads = ThreadChoice.start(train_config.threads, measure=self.device.type == "cpu")
        # --dtype auto (or the dtype asked for) on this device: what training runs in, and why
        # (on a CPU with native bfloat16, auto measures both: model/precision_probe.py)
        self.precision = choose_precision(train_config.dtype, self.device,
                                          probe=lambda: probe_run(model_config, train_config, group))
        self.dtype = self.precision.dtype

        torch.manual_seed(train_config.seed)  # model init and dropout
        self.model = GPT(model_config).to(self.device)
        self.optimizer = make_optimizer(self.model, train_config)
        self.train_model = self.model  # what a training step calls: the model, or DDP around it
        self.scaler = grad_scaler(self.device, self.dtype)  # float16's; None otherwise
        # Training batches come from a generator of their own: an extra evaluation or sample (a
        # key press) never changes which batches training sees.
        self.train_gen = torch.Generator().manual_seed(train_config.seed)

        self.clock = TrainingClock()
        self.reports = Reporter(self.clock, train_config, model_config.block_size, self.device, event_interval_s,
                                listeners)
        self.evaluator = Evaluator(self.model, corpus, train_config, model_config.block_size, self.device,
                                   self.dtype, self.reports)
        self.sampler = Sampler(self.model, corpus.tokenizer, train_config, self.device, self.reports)
        self.checkpoints = Checkpoints(run_dir, self.reports)
        actions = LoopActions(step=lambda: self.iter, flush=self._flush_steps, evaluate=self._requested_evaluation,
                              save=self._save, agree=self._agree)
        self.steering = Steering(self.model, self.reports, actions, several=group is not None, is_main=self.is_main)
        # a loss that is not finite: stop, or (on_divergence "pause") hold (model/divergence.py)
        self.divergence = Divergence(on_divergence, self.checkpoints, self.steering, self.reports)
        self.control = self.steering.control  # what the loop acts on (rank 0's requests, agreed on)

        self.iter = 0
        self._resumed = resume is not None
        # whether what is due at self.iter (its evaluation, its sample) is done: what a checkpoint
        # says as due_done, and what a run resumed from it skips (see _loop)
        self._due_done = False
        self._warnings: list[str] = [self.precision.warning] if self.precision.warning else []
        if resume is not None:
            self.load_state_dict(resume)
            self.checkpoints.resumed_at(self.iter)
            saved_world = int(resume.get("world_size", 1))
            if saved_world != world:
                self._warnings.append(
                    f"resumed with {world} process(es) from a checkpoint trained with {saved_world}: training goes "
                    "on from it, but not bit for bit as it would have with the same number")
        if group is not None:
            self.train_model = group.wrap(self.model)
            if not group.is_main:  # dropout: other masks than rank 0's (whose stream is the checkpoint's)
                torch.manual_seed(hash((train_config.seed, group.rank, self.iter)) & (2**63 - 1))
        self._flush_now = False
        self.clock.start()  # (and again when the loop starts)

    # ---- listeners: events go out through `reports`; controls come in through `steering` ------
    def add_listener(self, listener: Listener) -> None:
        self.reports.add_listener(listener)

    def hint(self, message: str) -> None:
        """Pass advice on to every listener as a Hint event. For listeners (the loop's thread)."""
        self.reports.emit(ev.Hint(self.iter, self.clock.time_s(), message))

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        with self.control.run():
            return self._run()

    def _run(self) -> RunResult:
        self.clock.start()
        failure: Exception | None = None
        try:
            with self.control.loop():  # requests queue for the loop inside; whoever asks does them after
                self.reports.emit(self._started_event())
                for warning in self._warnings:  # once, at the start: bfloat16 emulated, say
                    self.reports.emit(ev.Warning(self.iter, self.clock.time_s(), warning))
                self._live_group, self.steering.in_loop = self.group, True
                try:
                    stopped = self._loop()
                finally:  # from here on, rank 0 alone: what it is asked it does by itself
                    self._live_group, self.steering.in_loop = None, False
        except Exception as exc:  # reported as an event; the caller decides what to do
            failure = exc
        finally:
            self.steering.answer_all(self.control.last.snapshots)
        if failure is not None:
            # an evaluation or save asked for as it failed is not done: the error may have left
            # the weights mid-step (snapshots were answered above)
            try:
                self._flush_steps()
            except TrainingDiverged:
                pass
            message = str(failure) if isinstance(failure, TrainingDiverged) else f"{type(failure).__name__}: {failure}"
            return self._ended(ev.Failed(self.iter, self.clock.time_s(), message), "failed", message)
        if self.is_main:  # (what the others were asked is rank 0's, done by it)
            self.steering.serve_last(self.iter, several=self.group is not None)
        broken = self.divergence.message
        if broken is not None:  # held after a divergence, then stopped
            return self._ended(ev.Failed(self.iter, self.clock.time_s(), broken), "failed", broken)
        best = self.evaluator
        return self._ended(ev.Finished(self.iter, self.clock.time_s(), best.best_val_loss, best.best_iter, stopped),
                           "stopped" if stopped else "finished")

    def _ended(self, event: ev.Event, status: str, error: str | None = None) -> RunResult:
        self.reports.emit(event)
        return RunResult(status, self.iter, self.evaluator.best_val_loss, self.evaluator.best_iter, error)

    def _loop(self) -> bool:
        """Train to max_iters. Returns True when stopped early."""
        cfg = self.config
        start = self.iter
        while True:
            it = self.iter
            # what is due at the step a resumed run starts from was done before its checkpoint,
            # unless a stop abandoned it (then the checkpoint says so)
            skip_due = it == start and self._due_done
            evaluated = False
            best: bool | None = None  # a scheduled evaluation's checkpoint: written after the sample
            if (it % cfg.eval_interval == 0 or it == cfg.max_iters) and not skip_due:
                try:
                    best = self._evaluate(it)
                except EvaluationAbandoned:
                    return self._stop_and_save()  # due_done stays False: a resumed run evaluates here
                evaluated = True
            if self.sampler.due(it) and not skip_due:
                self._sample(it)
            elif self.sampler.early_due(it, one_process=self.group is None):
                self._sample(it, early=True)
                self.sampler.early_taken = True
            self._due_done = True
            if best is not None:  # ckpt.pt (and best.pt) with everything due at `it` done
                self._save(it, "eval", best=best)
            self._agree()
            if not self.steering.serve(it, evaluated):
                return self._stop_and_save()
            if it >= cfg.max_iters:
                self._flush_steps()
                return False
            if self.control.pause.is_set():
                self.steering.wait_while_paused(it)
            if self.control.stop.is_set():
                return self._stop_and_save()
            if self.threads.check() is not None:  # the machine's load changed: so did the threads
                self.reports.emit(ev.ThreadsChanged(it, self.clock.time_s(), self.threads.now, self.threads.reason))
            self.train_step(it)
            self.iter = it + 1
            self._due_done = False
            if self._flush_now if self._live_group is not None else self.reports.flush_due():
                self._flush_steps()

    def _agree(self) -> None:
        """Several processes: every rank takes on rank 0's requests (see model/distributed.py).
        One process: nothing to agree on."""
        if self._live_group is not None:
            self._flush_now = self._live_group.agree(self.steering.asked, self.control,
                                                     self.is_main and self.reports.flush_due())

    def train_step(self, it: int) -> None:
        """One optimizer step at iteration `it` (the loop calls it; so does `chargpt-tui bench`)."""
        cfg = self.config
        self.reports.step_timer.start()
        lr = lr_at(it, cfg)
        for group in self.optimizer.param_groups:  # Muon's own rate in proportion (model/optim.py)
            group["lr"] = lr * group.get("lr_scale", 1.0)
        xb, yb = self.corpus.get_batch("train", cfg.batch_size, self.model_config.block_size, self.train_gen,
                                       rows=self._rows)
        xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        # the step's rows (this process's share) in grad_accum micro-steps; DDP averages the
        # gradients over the processes in the last one's backward
        accum = cfg.grad_accum
        micro = len(xb) // accum
        loss_sum = torch.zeros((), device=self.device)
        for m in range(accum):
            rows = slice(m * micro, (m + 1) * micro)
            with no_sync(self.train_model, last=m == accum - 1), guarded(self.group):
                with autocast(self.device, self.dtype):
                    _, loss = self.train_model(xb[rows], yb[rows])
                loss = loss / accum if accum > 1 else loss
                (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            loss_sum += loss.detach().float()
        loss = loss_sum if self._live_group is None else self._live_group.mean(loss_sum)
        if self.scaler is None:
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
        else:  # float16: scaled gradients, unscaled before clipping; a step with inf or NaN is skipped
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.reports.step_done(it + 1, loss)
        self.reports.step_timer.stop()

    def _flush_steps(self) -> None:
        """Report the steps since the last report; a loss that is not finite diverges here."""
        bad = self.reports.flush()
        if bad is not None:
            self.divergence.diverge(f"the loss became {bad[1]} at step {bad[0]}", self.iter)

    # ---- what is due between steps: evaluations, samples, requests, pauses --------------------
    def _evaluate(self, it: int) -> bool | None:
        """Evaluate and report it. Returns whether it is the best so far, None when there was
        nothing to evaluate (broken weights); raises EvaluationAbandoned if a stop abandoned it."""
        self._flush_steps()
        if self.divergence.message is not None:  # nothing to learn from evaluating broken weights
            return None
        group = self._live_group  # several processes: each its rows of each batch
        losses = self.evaluator.estimate(it, lambda: self.steering.between_eval_batches(it), group)
        train_loss, val_loss = losses["train"], losses["val"]
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            self.divergence.diverge(f"the evaluation loss became {val_loss} at step {it}", self.iter)
            return None
        return self.evaluator.record(it, train_loss, val_loss)

    def _requested_evaluation(self, it: int) -> bool:
        """An evaluation asked for. When it is the best so far, best.pt (and ckpt.pt) get these
        weights, as after a scheduled one: best.pt always holds the lowest validation loss.
        False if a stop abandoned it."""
        try:
            best = self._evaluate(it)
        except EvaluationAbandoned:
            return False
        if best:
            self._save(it, "eval", best=True)
        return True

    def _sample(self, it: int, early: bool = False) -> None:
        # Broken weights must hold or stop the run, not crash the sampler.
        self.divergence.check_weights(self.model, it, self.iter)
        if self.divergence.message is None and self.is_main:  # (the others checked the weights, as rank 0)
            self.sampler.sample(it, early)

    def _stop_and_save(self) -> bool:
        self._flush_steps()
        self._save(self.iter, "stop")
        return True

    # ---- checkpoints -------------------------------------------------------------------------
    def _save(self, it: int, reason: str, best: bool = False) -> None:
        if self.run_dir is None and self.group is None:
            return
        self._flush_steps()  # a NaN among the steps not yet reported stops (or holds) here, unsaved
        self.divergence.check_weights(self.model, it, self.iter)
        if self.run_dir is None:  # a rank other than 0: it checked what rank 0 checks, and writes nothing
            return
        if self.divergence.message is not None:
            self.checkpoints.refuse(it)
        elif not self.checkpoints.save(it, self.state_dict(), reason, best) and best:
            self.evaluator.best_not_kept()  # best.pt holds the one before: it is the best kept

    def state_dict(self) -> dict[str, Any]:
        """What ckpt.pt holds for this run now: everything a run resumed from it needs to go on
        as this one would (model/checkpoint.py lists the keys)."""
        evaluation = self.evaluator.state_dict()
        extra: dict[str, Any] = {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **extra,
            "model_config": asdict(self.model_config),
            "train_config": asdict(self.config),
            "vocab": "".join(self.corpus.tokenizer.chars),
            "iter": self.iter,
            "due_done": self._due_done,
            "best_val_loss": evaluation["best_val_loss"],
            "best_iter": evaluation["best_iter"],
            **self.clock.state_dict(),  # elapsed_s
            "rng": rng_state(self.device, {"train_batches": self.train_gen.get_state(),
                                           "eval_batches": evaluation["generator"],
                                           "samples": self.sampler.state_dict()["generator"]}),
            "history": {**self.reports.state_dict(), "evals": evaluation["evals"]},
            "corpus": {"name": self.corpus.name, "path": self.corpus.path, "n_chars": len(self.corpus)},
            "world_size": self.group.world_size if self.group is not None else 1,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take a checkpoint's state back (the run's own configs are the trainer's already)."""
        self.model.load_state_dict(unwrapped_weights(state["model"]))
        if "optimizer" in state and (refused := load_moments(self.optimizer, state["optimizer"])):
            self._warnings.append(refused)  # a fork that changed --optimizer
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.iter = int(state["iter"])
        self._due_done = bool(state.get("due_done", True))
        history = state.get("history", {})
        self.evaluator.load_state_dict({**state, **history})
        self.clock.load_state_dict(state)
        self.reports.load_state_dict(history)
        lost = restore_rng(state.get("rng", {}), self.device, {
            "train_batches": self.train_gen, "eval_batches": self.evaluator.generator,
            "samples": self.sampler.generator})
        if lost:
            self._warnings.append(f"resumed on {self.device.type}; not restored from the checkpoint: "
                                  f"{', '.join(lost)} (training goes on; those draws differ from the saved run's)")

    # ---- reports -----------------------------------------------------------------------------
    def _started_event(self) -> ev.RunStarted:
        world = self.group.world_size if self.group is not None else 1
        name = describe_device(self.device)
        if self.group is not None:
            name = f"{name} x {self.group.world_size} processes ({self.group.backend})"
        return ev.RunStarted(
            self.iter, self.clock.time_s(), self.config.max_iters, self.model.num_params(),
            self.model_config.vocab_size, self.corpus.description, len(self.corpus), self.device.type, name,
            self.dtype, torch.get_num_threads(), torch.__version__,
            str(self.run_dir.path) if self.run_dir else None, self._resumed,
            flops_per_token(self.model_config, self.model.num_params(non_embedding=True)),
            asdict(self.model_config), asdict(self.config),
            self.reports.history.pairs(), tuple(self.evaluator.history),
            self.precision.reason, self.precision.short, world, self.threads.reason,
        )
