"""The default CPU thread count follows the cores other processes leave free
(model/cpu_threads.py): the choice given a fake load, its changes as the load changes, what
fixes it, and a run that reports a change."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tiny_configs

from model import events as ev
from model.cpu_threads import CHECK_S, CpuTimes, ThreadChoice, free_cores, read_cpu_times, threads_for
from model.data import Corpus
from model.trainer import Trainer

CPUS = frozenset({0, 1})


class FakeMachine:
    """/proc/stat as a test wants it: `others` cores' worth of other processes' CPU time, and
    `own` of this process's, accrue as the fake clock moves."""

    def __init__(self, others: float = 0.0, own: float = 0.0) -> None:
        self.others, self.own = others, own
        self.t, self.busy, self.own_s = 0.0, 0.0, 0.0
        self.set_to: list[int] = []

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.busy += (self.others + self.own) * seconds
        self.own_s += self.own * seconds

    def read(self, cpus: frozenset[int]) -> CpuTimes:
        return CpuTimes(self.busy, self.own_s, self.t)

    def clock(self) -> float:
        return self.t

    def choice(self, most: int = 2) -> ThreadChoice:
        made = ThreadChoice(None, "", CPUS, most, read=self.read, clock=self.clock, set_threads=self.set_to.append)
        made._last = self.read(CPUS)
        made._next_check = self.t + CHECK_S
        return made


def test_free_cores_leave_out_this_process_and_count_the_others() -> None:
    before, after = CpuTimes(10.0, 4.0, 100.0), CpuTimes(13.0, 5.0, 101.0)  # 3 core-seconds in 1 s, 1 of them ours
    assert free_cores(2, before, after) == pytest.approx(0.0)
    assert free_cores(4, before, after) == pytest.approx(2.0)
    assert free_cores(2, before, CpuTimes(10.3, 4.0, 101.0)) == pytest.approx(1.7)


@pytest.mark.parametrize("free, most, expected", [
    (2.0, 2, 2), (1.0, 2, 1), (1.6, 2, 2), (1.4, 2, 1), (0.0, 2, 1), (15.2, 8, 8), (3.9, 16, 4),
])
def test_threads_for_free_cores(free: float, most: int, expected: int) -> None:
    assert threads_for(free, most) == expected


def test_one_core_busy_at_the_start_gives_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = FakeMachine(others=1.0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("model.cpu_threads.time.sleep", machine.advance)
    monkeypatch.setattr("model.cpu_threads.torch.get_num_threads", lambda: 2)
    monkeypatch.setattr("model.cpu_threads.os.sched_getaffinity", lambda pid: {0, 1})
    choice = ThreadChoice.start(read=machine.read, clock=machine.clock, set_threads=machine.set_to.append)
    assert (choice.now, choice.reason, machine.set_to) == (1, "1 of 2 cores busy", [1])
    machine.others = 0.0
    choice = ThreadChoice.start(read=machine.read, clock=machine.clock, set_threads=machine.set_to.append)
    assert (choice.now, choice.reason, choice.adaptive) == (2, "2 cores free", True)


def test_the_count_follows_the_load_once_two_looks_agree() -> None:
    machine = FakeMachine(others=0.0, own=2.0)
    choice = machine.choice()
    assert choice.now == 2
    machine.others, machine.own = 1.0, 1.0  # another process takes a core; ours share the other
    machine.advance(CHECK_S / 2)
    assert choice.check() is None  # not yet time to look
    machine.advance(CHECK_S / 2)
    assert choice.check() is None and choice.now == 2  # one look: it could be a moment's load
    machine.advance(CHECK_S)
    assert choice.check() == 1 and choice.now == 1 and choice.reason == "1 of 2 cores busy"
    assert machine.set_to == [1]
    machine.advance(CHECK_S)
    assert choice.check() is None  # the other process still runs: one thread stays
    machine.others, machine.own = 0.0, 1.0  # it ended
    machine.advance(CHECK_S)
    assert choice.check() is None
    machine.advance(CHECK_S)
    assert choice.check() == 2 and choice.reason == "2 cores free" and machine.set_to == [1, 2]


def test_a_passing_load_changes_nothing() -> None:
    machine = FakeMachine(own=2.0)
    choice = machine.choice()
    for others in (1.0, 0.0, 1.0, 0.0):  # a burst each other look
        machine.others = others
        machine.advance(CHECK_S)
        assert choice.check() is None
    assert machine.set_to == [] and choice.now == 2


def test_threads_asked_for_are_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_reading(cpus: frozenset[int]) -> CpuTimes:
        raise AssertionError("measured")

    set_to: list[int] = []
    choice = ThreadChoice.start(3, read=no_reading, set_threads=set_to.append)
    assert (choice.now, choice.reason, choice.adaptive, set_to) == (3, "--threads", False, [3])
    assert choice.check() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as torchrun sets it: PyTorch took it already
    monkeypatch.setattr("model.cpu_threads.torch.get_num_threads", lambda: 1)
    choice = ThreadChoice.start(read=no_reading, set_threads=set_to.append)
    assert (choice.now, choice.reason, choice.adaptive) == (1, "OMP_NUM_THREADS", False)
    monkeypatch.delenv("OMP_NUM_THREADS")
    choice = ThreadChoice.start(measure=False, read=no_reading, set_threads=set_to.append)  # a GPU run
    assert not choice.adaptive and choice.reason == "PyTorch's default"


def test_without_proc_stat_pytorchs_default_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("model.cpu_threads.torch.get_num_threads", lambda: 4)
    choice = ThreadChoice.start(read=lambda cpus: None, window_s=0, set_threads=lambda n: None)
    assert (choice.now, choice.adaptive, choice.reason) == (4, False, "this system's default")


def test_this_machines_proc_stat_reads(tmp_path: Path) -> None:
    times = read_cpu_times(CPUS)
    if not Path("/proc/stat").exists():
        assert times is None
    else:
        assert times is not None and times.busy >= 0 and times.own > 0


def test_a_run_reports_a_change_of_threads(corpus: Corpus) -> None:
    machine = FakeMachine(own=2.0)
    model_config, train_config = tiny_configs(corpus, max_iters=6, eval_interval=6)
    trainer = Trainer(corpus, model_config, train_config)
    trainer.threads = machine.choice()
    seen: list[ev.Event] = []
    trainer.add_listener(seen.append)
    machine.others, machine.own = 1.0, 1.0
    original_step = trainer.train_step

    def step(it: int) -> None:
        machine.advance(CHECK_S)  # each step "takes" a look's interval
        original_step(it)

    trainer.train_step = step  # type: ignore[method-assign]
    assert trainer.run().status == "finished"
    changed = [e for e in seen if isinstance(e, ev.ThreadsChanged)]
    assert [(e.threads, e.reason) for e in changed] == [(1, "1 of 2 cores busy")]
    assert changed[0].iter == 2  # looked before steps 1 and 2; the second look agreed


def test_a_late_viewer_is_told_the_threads_now() -> None:
    from helpers import one_of_each_kind

    from chargpt_tui.wire.journal import RunJournal

    journal = RunJournal()
    started = one_of_each_kind()[0]
    journal.add(started, 1.0)
    journal.add(ev.ThreadsChanged(3, 2.0, 1, "1 of 2 cores busy"), 2.0)
    replayed = [e for e, _ in journal.catch_up() if isinstance(e, ev.ThreadsChanged)]
    assert [(e.threads, e.reason) for e in replayed] == [(1, "1 of 2 cores busy")]
    journal.add(started, 3.0)  # a new segment starts with its own count
    assert not [e for e, _ in journal.catch_up() if isinstance(e, ev.ThreadsChanged)]


def test_the_reason_counts_busy_cores_not_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # PyTorch's default can be fewer threads than cores (a thread per physical core): 8 threads
    # on 16 idle logical CPUs is not "8 of 16 cores busy"
    machine = FakeMachine(others=0.0)
    monkeypatch.setattr("model.cpu_threads.time.sleep", machine.advance)
    choice = ThreadChoice(None, "", frozenset(range(16)), 8, read=machine.read, clock=machine.clock,
                          set_threads=machine.set_to.append)
    choice.measure_now(0.25)
    assert (choice.now, choice.reason) == (8, "16 cores free")
    machine.others = 3.0
    choice.measure_now(0.25)
    assert (choice.now, choice.reason) == (8, "3 of 16 cores busy")  # 13 free: still at most 8
