"""The training loop of the seed, run by a Trainer that emits events and obeys controls.

    trainer = Trainer(corpus, model_config, train_config, run_dir=RunDir("runs/x"))
    trainer.add_listener(print)          # any callable taking an Event
    result = trainer.run()               # blocks; run it in a thread to steer it

Controls (pause, resume, request_save, request_eval, stop, snapshot) may be called from any
thread; they are acted on between steps, so a checkpoint never lands mid-step. The trainer
never prints and never waits on a listener: step events are batched to a few per second.

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

import copy
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import events as ev
from . import trainer_state
from .checkpoint import save_checkpoint
from .config import GPTConfig, TrainConfig
from .control import Requests, RunControl, take
from .cpu_threads import ThreadChoice
from .data import Corpus
from .device import choose_device, describe_device
from .distributed import ProcessGroup, guarded, no_sync
from .flops import flops_per_token
from .gpt import GPT
from .history import LossHistory
from .optim import lr_at, make_optimizer
from .precision import autocast, choose_precision, grad_scaler
from .precision_probe import probe_run
from .rundir import RunDir
from .step_timer import StepTimer

Listener = Callable[[ev.Event], None]

# A slow run shows one sample after this much training, when its first scheduled one is further off.
EARLY_SAMPLE_AFTER_S = 60.0
# Batches of each split in the evaluation at step 0 at most (Trainer.eval_batches).
FIRST_EVAL_BATCHES = 10


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class _Snapshot(Future):  # type: ignore[type-arg]
    """A snapshot asked for, and what to make of the model (None: a copy of it)."""

    def __init__(self, encode: Callable[[GPT], Any] | None) -> None:
        super().__init__()
        self.encode = encode


class _StopNow(Exception):
    """Raised inside an evaluation when a stop was requested, to abandon it."""


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
        if on_divergence not in ("stop", "pause"):
            raise ValueError("on_divergence is 'stop' or 'pause'")
        model_config.validate()
        train_config.validate()
        world = group.world_size if group is not None else 1
        train_config.check_processes(world)
        if model_config.vocab_size != corpus.tokenizer.vocab_size:
            raise ValueError("model vocab_size differs from the corpus vocabulary")
        corpus.check_block_size(model_config.block_size)
        self.corpus = corpus
        self.model_config = model_config
        self.config = train_config
        self.run_dir = run_dir
        self.listeners: list[Listener] = list(listeners)
        self.event_interval_s = event_interval_s
        # What a NaN or infinite loss does: "stop" fails the run (headless); "pause" holds the
        # loop, paused, so that a person can read what happened (the dashboard). Either way the
        # broken weights are never saved.
        self.on_divergence = on_divergence
        self.diverged: str | None = None

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
        # Separate generators for training batches, evaluation batches and samples: an extra
        # evaluation or sample (a key press) never changes which batches training sees.
        self.train_gen = torch.Generator().manual_seed(train_config.seed)
        self.eval_gen = torch.Generator().manual_seed(train_config.seed + 1)
        self.sample_gen = torch.Generator(device=self.device).manual_seed(train_config.seed + 2)
        # The early sample of a slow run (see _early_sample_due) draws from a generator of its
        # own: whether it was taken depends on the machine's speed, the scheduled ones must not.
        self.early_sample_gen = torch.Generator(device=self.device).manual_seed(train_config.seed + 3)
        self.early_sample_after_s = EARLY_SAMPLE_AFTER_S
        self._early_sampled = False
        self._steps_timed, self._steps_timed_s = 0, 0.0  # this process's steps reported, and their time
        self.step_timer = StepTimer(self.device)  # the steps' time on the device (model/step_timer.py)

        self.iter = 0
        self.best_val_loss = math.inf
        self.best_iter = -1
        self.step_history = LossHistory()
        self.eval_history: list[tuple[int, float, float]] = []
        self._elapsed_before = 0.0
        self._resumed = resume is not None
        # whether what is due at self.iter (its evaluation, its sample) is done: what a checkpoint
        # says as due_done, and what a run resumed from it skips (see _loop)
        self._due_done = False
        self._last_saved_iter = -1  # the step ckpt.pt in run_dir holds, as far as this run knows
        self.last_save_error: str | None = None  # why the latest save failed; None after a success
        self._warnings: list[str] = [self.precision.warning] if self.precision.warning else []
        if resume is not None:
            trainer_state.restore(self, resume)
            if run_dir is not None and run_dir.ckpt_path.exists():
                self._last_saved_iter = self.iter
            saved_world = int(resume.get("world_size", 1))
            if saved_world != world:
                self._warnings.append(
                    f"resumed with {world} process(es) from a checkpoint trained with {saved_world}: training goes "
                    "on from it, but not bit for bit as it would have with the same number")
        if group is not None:
            self.train_model = group.wrap(self.model)
            if not group.is_main:  # dropout: other masks than rank 0's (whose stream is the checkpoint's)
                torch.manual_seed(hash((train_config.seed, group.rank, self.iter)) & (2**63 - 1))

        self.control = RunControl()  # pause, stop, and requests: what the loop acts on
        # where requests from other threads go: the loop's control itself, or (several processes)
        # rank 0's inbox, which every rank's control follows at the agreed points (_agree)
        self._asked = self.control if group is None else RunControl()
        self._flush_now = False
        self._in_loop = False  # the loop runs (pauses hold it); outside it, requests are done at once
        # while held in _wait_while_paused: since when (paused time is not training time; and an
        # evaluation asked for there runs through)
        self._paused_since: float | None = None
        self._eval_gen_before: torch.Tensor | None = None  # the evaluation generator's state as the current one began
        self._t0 = time.perf_counter()
        self._pending_iters: list[int] = []
        self._pending_losses: list[torch.Tensor] = []
        self._last_flush = 0.0

    # ---- controls: safe from any thread -----------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    @property
    def paused(self) -> bool:
        return self._asked.pause.is_set()

    def pause(self) -> None:
        self._asked.pause.set()
        self.control.wake.set()

    def resume(self) -> bool:
        """Resume a paused loop. Refused (False) after the loss diverged: those weights are broken."""
        if self.diverged is not None:
            return False
        self._asked.pause.clear()
        self.control.wake.set()
        return True

    def request_save(self) -> None:
        """Save ckpt.pt at the next step boundary; at once (in this thread) when not training."""
        self.control.ask(self._asked.save.set, lambda: self._save(self.iter, "request"))

    def request_eval(self) -> None:
        """Evaluate at the next step boundary; at once (in this thread) when not training."""
        self.control.ask(self._asked.evaluate.set, lambda: self._requested_evaluation(self.iter))

    def hint(self, message: str) -> None:
        """Pass advice on to every listener as a Hint event. For listeners (the loop's thread)."""
        self._emit(ev.Hint(self.iter, self._time_s(), message))

    def stop(self) -> None:
        self._asked.stop.set()
        self.control.wake.set()

    @property
    def stop_requested(self) -> bool:
        return self._asked.stop.is_set()

    def snapshot(self, encode: Callable[[GPT], Any] | None = None) -> Future[Any]:
        """A copy of the model as it is now (eval mode), taken between steps; or, with `encode`,
        what encode(model) makes of the live model then (bytes of its weights, say: no copy of
        the model is made, and nothing changes the weights while it runs).

        For generating while training goes on. Resolves at the next step boundary (after the
        evaluation in progress, if any, unless a pause holds it: then at once), at the loop's end
        if that comes first, or at once when the loop is not running: never left unanswered. A
        cancelled future is skipped.
        """
        future: _Snapshot = _Snapshot(encode)
        self.control.ask(lambda: self.control.snapshots.put(future), lambda: self._answer_snapshot(future))
        return future

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait for a running loop to end (after stop(), say). True if it is not running now."""
        return self.control.wait_until_idle(timeout)

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        with self.control.run():
            return self._run()

    def _run(self) -> RunResult:
        self._t0 = time.perf_counter()
        failure: Exception | None = None
        try:
            with self.control.loop():  # requests queue for the loop inside; whoever asks does them after
                self._emit(self._started_event())
                for warning in self._warnings:  # once, at the start: bfloat16 emulated, say
                    self._emit(ev.Warning(self.iter, self._time_s(), warning))
                self._live_group, self._in_loop = self.group, True
                try:
                    stopped = self._loop()
                finally:  # from here on, rank 0 alone: what it is asked it does by itself
                    self._live_group, self._in_loop = None, False
        except Exception as exc:  # reported as an event; the caller decides what to do
            failure = exc
        finally:
            self._serve_snapshots(self.control.last.snapshots)
        last = self.control.last
        if failure is not None:
            # an evaluation or save asked for as it failed is not done: the error may have left
            # the weights mid-step (snapshots were answered above)
            try:
                self._flush_steps()
            except TrainingDiverged:
                pass
            message = str(failure) if isinstance(failure, TrainingDiverged) else f"{type(failure).__name__}: {failure}"
            self._emit(ev.Failed(self.iter, self._time_s(), message))
            return RunResult("failed", self.iter, self.best_val_loss, self.best_iter, message)
        if self.group is not None and self.is_main:  # asked as the loop ended, not yet agreed on
            last = Requests(last.evaluate or take(self._asked.evaluate), last.save or take(self._asked.save),
                            last.snapshots)
        if self.is_main:  # (what the others were asked is rank 0's, done by it)
            self._serve_last_requests(last)
        if self.diverged is not None:  # held after a divergence, then stopped
            self._emit(ev.Failed(self.iter, self._time_s(), self.diverged))
            return RunResult("failed", self.iter, self.best_val_loss, self.best_iter, self.diverged)
        status = "stopped" if stopped else "finished"
        self._emit(ev.Finished(self.iter, self._time_s(), self.best_val_loss, self.best_iter, stopped))
        return RunResult(status, self.iter, self.best_val_loss, self.best_iter)

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
                except _StopNow:
                    return self._stop_and_save()  # due_done stays False: a resumed run evaluates here
                evaluated = True
            if (it % cfg.sample_interval == 0 or it == cfg.max_iters) and it > 0 and not skip_due:
                self._sample(it)
            elif self._early_sample_due(it):
                self._sample(it, self.early_sample_gen)
                self._early_sampled = True
            self._due_done = True
            if best is not None:  # ckpt.pt (and best.pt) with everything due at `it` done
                self._save(it, "eval", best=best)
            self._agree()
            if not self._serve_requests(it, evaluated):
                return self._stop_and_save()
            if it >= cfg.max_iters:
                self._flush_steps()
                return False
            if self.control.pause.is_set():
                self._wait_while_paused(it)
            if self.control.stop.is_set():
                return self._stop_and_save()
            if self.threads.check() is not None:  # the machine's load changed: so did the threads
                self._emit(ev.ThreadsChanged(it, self._time_s(), self.threads.now, self.threads.reason))
            self.train_step(it)
            self.iter = it + 1
            self._due_done = False
            if self._flush_now if self._live_group is not None else self._flush_due():
                self._flush_steps()

    def _flush_due(self) -> bool:
        return time.perf_counter() - self._last_flush >= self.event_interval_s

    def _agree(self) -> None:
        """Several processes: every rank takes on rank 0's requests (see model/distributed.py).
        One process: nothing to agree on."""
        if self._live_group is not None:
            self._flush_now = self._live_group.agree(self._asked, self.control, self.is_main and self._flush_due())

    def train_step(self, it: int) -> None:
        """One optimizer step at iteration `it` (the loop calls it; so does `chargpt-tui bench`)."""
        cfg = self.config
        self.step_timer.start()
        lr = lr_at(it, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
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
        self._pending_iters.append(it + 1)
        self._pending_losses.append(loss.detach())
        self.step_timer.stop()

    def _flush_steps(self) -> None:
        """Send the steps since the last flush as one StepsDone event."""
        self._last_flush = time.perf_counter()
        if not self._pending_iters:
            return
        losses = torch.stack(self._pending_losses).float().cpu().tolist()  # one sync for the batch
        iters = tuple(self._pending_iters)
        step_s = self.step_timer.take()  # (after the losses' copy: on a GPU, the steps are done)
        self._pending_iters, self._pending_losses = [], []
        self._steps_timed += len(iters)
        self._steps_timed_s += step_s
        self.step_history.extend(iters, losses)
        tokens = len(iters) * self.config.batch_size * self.model_config.block_size
        self._emit(ev.StepsDone(
            iters[-1], self._time_s(), iters, tuple(losses), lr_at(iters[-1] - 1, self.config),
            tokens / step_s if step_s > 0 else 0.0, 1000.0 * step_s / len(iters),
        ))
        bad = [(i, x) for i, x in zip(iters, losses) if not math.isfinite(x)]
        if bad:
            self._diverge(f"the loss became {bad[0][1]} at step {bad[0][0]}")

    def _diverge(self, what: str) -> None:
        """The loss or the weights are no longer finite: stop (raise) or hold, paused."""
        if self.diverged is not None:
            return
        if self.on_divergence == "stop":
            self.diverged = f"{what}; training stopped; {self.kept_checkpoint()}"
            raise TrainingDiverged(self.diverged)
        self.diverged = f"{what}; training is held and these weights will not be saved; {self.kept_checkpoint()}"
        kept = self._kept_path()
        self._asked.pause.set()
        self.control.pause.set()
        self._emit(ev.Diverged(self.iter, self._time_s(), self.diverged, str(kept) if kept else None,
                               self._last_saved_iter))

    def eval_batches(self, it: int) -> int:
        """Batches of each split an evaluation at `it` takes: eval_iters, but at most
        FIRST_EVAL_BATCHES at step 0, where the model is untrained and its loss is about ln(vocab)
        whatever the batches (at the seed's settings on a 2-core CPU, 200 batches a split held an
        empty screen for 100 s)."""
        return min(self.config.eval_iters, FIRST_EVAL_BATCHES) if it == 0 else self.config.eval_iters

    @torch.no_grad()
    def estimate_loss(self, it: int) -> dict[str, float]:
        """Mean loss over eval_batches(it) random batches of each split, in eval mode (the seed's)."""
        cfg = self.config
        batches = self.eval_batches(it)
        total = 2 * batches
        self._emit(ev.EvalStarted(it, self._time_s(), batches))
        self.model.eval()
        last_report = time.perf_counter()
        out: dict[str, float] = {}
        # An evaluation abandoned by a stop leaves the batches it would have drawn undrawn, so a
        # resumed run that does it again sees the batches the uninterrupted run saw.
        eval_gen_state = self.eval_gen.get_state()
        self._eval_gen_before = eval_gen_state  # what a save while it is held saves (trainer_state.state_of)
        try:
            for s, split in enumerate(("train", "val")):
                losses = torch.zeros(batches)
                for k in range(batches):
                    self._agree()  # several processes: a stop abandons the evaluation in all of them
                    # a pause asked for during it holds it here, within a batch (an evaluation
                    # asked for while paused runs through: the person asked for it; and one done
                    # outside the loop, after the run, has no pause to hold for)
                    if self._in_loop and self.control.pause.is_set() and self._paused_since is None \
                            and not self.control.stop.is_set():
                        self._wait_while_paused(it, evaluating=True)
                    if self.control.stop.is_set():
                        self.eval_gen.set_state(eval_gen_state)
                        raise _StopNow
                    # several processes: each its rows of the batch, and the mean of their means below
                    rows = self._rows if self._live_group is not None else None
                    x, y = self.corpus.get_batch(split, cfg.batch_size, self.model_config.block_size, self.eval_gen,
                                                 rows=rows)
                    with autocast(self.device, self.dtype):
                        _, loss = self.model(x.to(self.device), y.to(self.device))
                    losses[k] = loss.float().item()
                    now = time.perf_counter()
                    if now - last_report >= self.event_interval_s:
                        last_report = now
                        self._emit(ev.EvalProgress(it, self._time_s(), s * batches + k + 1, total))
                if self._live_group is not None:
                    losses = self._live_group.mean(losses)
                out[split] = losses.mean().item()
        finally:
            self._eval_gen_before = None
            self.model.train()
        return out

    def _evaluate(self, it: int) -> bool | None:
        """Evaluate and report it. Returns whether it is the best so far, None when there was
        nothing to evaluate (broken weights); raises _StopNow if a stop abandoned it."""
        self._flush_steps()
        if self.diverged is not None:  # nothing to learn from evaluating broken weights
            return None
        losses = self.estimate_loss(it)
        train_loss, val_loss = losses["train"], losses["val"]
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            self._diverge(f"the evaluation loss became {val_loss} at step {it}")
            return None
        is_best = val_loss < self.best_val_loss
        if is_best:
            self.best_val_loss, self.best_iter = val_loss, it
        self.eval_history.append((it, train_loss, val_loss))
        self._emit(ev.EvalDone(it, self._time_s(), train_loss, val_loss, self.best_val_loss, self.best_iter, is_best,
                               self.eval_batches(it)))
        return is_best

    def _requested_evaluation(self, it: int) -> bool:
        """An evaluation asked for. When it is the best so far, best.pt (and ckpt.pt) get these
        weights, as after a scheduled one: best.pt always holds the lowest validation loss.
        False if a stop abandoned it."""
        try:
            best = self._evaluate(it)
        except _StopNow:
            return False
        if best:
            self._save(it, "eval", best=True)
        return True

    def _early_sample_due(self, it: int) -> bool:
        """One sample early in a slow run: once it has trained for early_sample_after_s, if the
        first scheduled sample is still more than that away (at the seed's settings on a slow
        CPU, step 500 is ten minutes in). The schedule goes on as before after it."""
        first = min(self.config.sample_interval, self.config.max_iters)  # the first scheduled sample
        if self.group is not None:  # decided by one process's clock: not where several must agree
            return False
        if self._early_sampled or it == 0 or it >= first or self._steps_timed == 0:
            return False
        if self._steps_timed_s < self.early_sample_after_s:
            return False
        step_s = self._steps_timed_s / self._steps_timed
        return (first - it) * step_s > self.early_sample_after_s

    def _sample(self, it: int, generator: torch.Generator | None = None) -> None:
        # Broken weights must hold or stop the run, not crash the sampler.
        if self.diverged is None and not self._weights_are_finite():
            self._diverge(f"the weights are no longer finite at step {it}")
        if self.diverged is not None or not self.is_main:  # (the others checked the weights, as rank 0)
            return
        context = self.sample_context()
        self.model.eval()
        try:
            ids = self.model.generate(context, self.config.sample_tokens, generator=generator or self.sample_gen)
        finally:
            self.model.train()
        text = self.corpus.tokenizer.decode(ids[0, context.shape[1]:].tolist())
        self._emit(ev.SampleGenerated(it, self._time_s(), text))

    def sample_context(self) -> torch.Tensor:
        """One newline (when the vocabulary has it, else the first character): a neutral start."""
        return torch.tensor([[self.corpus.tokenizer.start_id()]], dtype=torch.long, device=self.device)

    def _wait_while_paused(self, it: int, evaluating: bool = False) -> None:
        """Hold until resumed or stopped, serving requests meanwhile. `evaluating`: held inside an
        evaluation, which goes on from the same batch after; no other evaluation starts then (one
        asked for waits for the next step boundary), and a save holds the run as it was before
        this evaluation (checkpoint_state)."""
        self._flush_steps()
        self._emit(ev.Paused(it, self._time_s()))
        self._paused_since = time.perf_counter()
        try:
            while self.control.pause.is_set() and not self.control.stop.is_set():
                if self.is_main:  # (the others wait for rank 0 in _agree)
                    self.control.wake.wait(timeout=1.0)
                    self.control.wake.clear()
                self._agree()
                if not self._serve_requests(it, evaluated=evaluating):  # (none inside an evaluation)
                    break
        finally:  # time spent paused is not training time
            self._t0 += time.perf_counter() - self._paused_since
            self._paused_since = None
        if not self.control.stop.is_set():
            self._emit(ev.Resumed(it, self._time_s()))

    def _serve_requests(self, it: int, evaluated: bool = False) -> bool:
        """Act on the evaluate, save and snapshot requests made since the last step.
        Returns False if a stop request abandoned the evaluation."""
        requests = self.control.take(evaluate=not evaluated)  # just evaluated (or in one): a requested one waits
        abandoned = requests.evaluate and not self._requested_evaluation(it)
        if requests.save and not abandoned:  # (abandoned: the stop's own save comes next)
            self._save(it, "request")
        self._serve_snapshots(requests.snapshots)
        return not abandoned

    def _stop_and_save(self) -> bool:
        self._flush_steps()
        self._save(self.iter, "stop")
        return True

    # ---- checkpoints -------------------------------------------------------------------------
    def _save(self, it: int, reason: str, best: bool = False) -> None:
        if self.run_dir is None and self.group is None:
            return
        self._flush_steps()  # a NaN among the steps not yet reported stops (or holds) here, unsaved
        if self.diverged is None and not self._weights_are_finite():
            self._diverge(f"the weights are no longer finite at step {it}")
        if self.run_dir is None:  # a rank other than 0: it checked what rank 0 checks, and writes nothing
            return
        path = self.run_dir.ckpt_path
        if self.diverged is not None:
            self.last_save_error = f"not saved, the weights are broken; {self.kept_checkpoint()}"
            self._emit(ev.CheckpointFailed(it, self._time_s(), str(path), self.last_save_error))
            return
        try:
            save_checkpoint(self.checkpoint_state(it), path, also=self.run_dir.best_path if best else None)
        except OSError as exc:  # a full disk or a vanished folder must not end the run
            self.last_save_error = exc.strerror or str(exc)
            self._emit(ev.CheckpointFailed(it, self._time_s(), str(path), self.last_save_error))
            return
        self._last_saved_iter = it
        self.last_save_error = None
        self._emit(ev.CheckpointSaved(it, self._time_s(), str(path), reason, best))

    def _kept_path(self) -> Path | None:
        """ckpt.pt, if this run has one (saved by it, or the one it resumed from in run_dir)."""
        return self.run_dir.ckpt_path if self.run_dir is not None and self._last_saved_iter >= 0 else None

    def kept_checkpoint(self) -> str:
        """Which checkpoint holds the latest saved state, for messages."""
        kept = self._kept_path()
        return f"{kept} (step {self._last_saved_iter}) is kept" if kept else "no checkpoint was saved"

    def unsaved_warning(self, it: int) -> str | None:
        """For the end of a run whose latest save failed: what was lost and what is kept."""
        if self.last_save_error is None:
            return None
        return f"the checkpoint of step {it} could not be saved ({self.last_save_error}); {self.kept_checkpoint()}"

    def _weights_are_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def checkpoint_state(self, it: int) -> dict[str, Any]:
        """What ckpt.pt holds for this run at step `it` (model/trainer_state.py)."""
        return trainer_state.state_of(self, it)

    # ---- helpers -----------------------------------------------------------------------------
    def _time_s(self) -> float:
        """Training time: since the run first started, less the time paused (so far, while held)."""
        now = time.perf_counter() if self._paused_since is None else self._paused_since
        return self._elapsed_before + now - self._t0

    def _copy_model(self) -> GPT:
        model = copy.deepcopy(self.model)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def _serve_snapshots(self, futures: list[_Snapshot]) -> None:
        for future in futures:
            self._answer_snapshot(future)

    def _answer_snapshot(self, future: _Snapshot) -> None:
        if not future.set_running_or_notify_cancel():
            return  # cancelled: no copy made for nobody
        try:
            future.set_result(future.encode(self.model) if future.encode is not None else self._copy_model())
        except Exception as exc:  # out of memory, say: the caller hears of it rather than waits
            future.set_exception(exc)

    def _serve_last_requests(self, last: Requests) -> None:
        """At the loop's end: what was asked for while it ended. An evaluation is done unless a
        stop ended the run; a save always (snapshots were answered already)."""
        try:
            if last.evaluate and not self.control.stop.is_set():
                self._requested_evaluation(self.iter)
            if last.save:
                self._save(self.iter, "request")
        except Exception as exc:  # the run's own ending (finished, failed) is what to report
            self._emit(ev.Warning(self.iter, self._time_s(), f"a request at the end of the run failed: {exc}"))

    def _started_event(self) -> ev.RunStarted:
        n_params = self.model.num_params()
        world = self.group.world_size if self.group is not None else 1
        return ev.RunStarted(
            self.iter, self._time_s(), self.config.max_iters, n_params, self.model_config.vocab_size,
            self.corpus.description, len(self.corpus), self.device.type, self._device_description(),
            self.dtype, torch.get_num_threads(), torch.__version__,
            str(self.run_dir.path) if self.run_dir else None, self._resumed,
            flops_per_token(self.model_config, self.model.num_params(non_embedding=True)),
            asdict(self.model_config), asdict(self.config),
            self.step_history.pairs(), tuple(self.eval_history),
            self.precision.reason, self.precision.short, world, self.threads.reason,
        )

    def _device_description(self) -> str:
        name = describe_device(self.device)
        if self.group is None:
            return name
        return f"{name} x {self.group.world_size} processes ({self.group.backend})"

    def _emit(self, event: ev.Event) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception as exc:  # a broken listener must not end the training
                if isinstance(event, ev.Warning):
                    continue
                warning = ev.Warning(event.iter, event.time_s, str(exc) or type(exc).__name__)
                for other in self.listeners:
                    if other is not listener:
                        try:
                            other(warning)
                        except Exception:
                            pass
