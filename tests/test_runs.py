"""Runs read back from disk: the state `chargpt-tui runs` reports, and the history a viewer of a
run that is not running is shown, from metrics.jsonl files written the way MetricsLog writes them."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

from chargpt_tui.wire.journal import RunJournal
from chargpt_tui.wire.runs import list_runs, load_journal_cache, read_journal, save_journal_cache, summarize
from chargpt_tui.wire.runtime import RunLock, ServerInfo, is_running, write_server_info
from model import events as ev
from model.rundir import MetricsLog


def start(it: int = 0, resumed: bool = False) -> ev.RunStarted:
    return ev.RunStarted(it, float(it), 100, 1000, 10, "tiny.txt", 5000, "cpu", "CPU", "float32", 1, "2", None,
                         resumed, 6000.0)


def write_run(path: Path, events: list[ev.Event], max_iters: int = 100) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({
        "train": {"max_iters": max_iters, "eval_interval": 10}, "model": {}, "corpus": {"name": "data/tiny.txt"},
        "vocab": "abc", "preset": "cpu",
    }))
    log = MetricsLog(path / "metrics.jsonl")
    for event in events:
        log(event)
    log.close()
    return path


def steps(first: int, last: int) -> ev.StepsDone:
    iters = tuple(range(first, last + 1))
    return ev.StepsDone(last, float(last), iters, tuple(3.0 - i / 100 for i in iters), 1e-3, 1000.0, 5.0)


def evaluated(it: int, val: float, best: float, best_iter: int) -> ev.EvalDone:
    return ev.EvalDone(it, float(it), val + 0.1, val, best, best_iter, val == best)


def test_states_of_runs(tmp_path: Path) -> None:
    write_run(tmp_path / "a-finished", [start(), evaluated(0, 3.0, 3.0, 0), steps(1, 100),
                                        evaluated(100, 2.0, 2.0, 100), ev.Finished(100, 100.0, 2.0, 100, False)])
    write_run(tmp_path / "b-stopped", [start(), evaluated(0, 3.0, 3.0, 0), steps(1, 42),
                                       ev.Finished(42, 42.0, 3.0, 0, True)])
    write_run(tmp_path / "c-failed", [start(), evaluated(0, 3.0, 3.0, 0), steps(1, 7), ev.Failed(7, 7.0, "boom")])
    crashed = write_run(tmp_path / "d-crashed", [start(), evaluated(0, 3.0, 3.0, 0), steps(1, 55)])
    with open(crashed / "metrics.jsonl", "a") as f:
        f.write('{"event": "step", "iter": 5')  # torn by the kill
    (tmp_path / "not-a-run").mkdir()
    runs = {r.name: r for r in list_runs(tmp_path)}
    assert set(runs) == {"a-finished", "b-stopped", "c-failed", "d-crashed"}
    done = runs["a-finished"]
    assert (done.state, done.iter, done.best_val_loss, done.best_iter) == ("finished", 100, 2.0, 100)
    assert done.max_iters == 100 and done.corpus == "data/tiny.txt" and done.elapsed_s == 100.0
    assert (runs["b-stopped"].state, runs["b-stopped"].iter) == ("stopped", 42)
    assert (runs["c-failed"].state, runs["c-failed"].iter) == ("failed", 7)
    assert (runs["d-crashed"].state, runs["d-crashed"].iter, runs["d-crashed"].pid) == ("crashed", 55, None)


def test_a_resumed_run_is_judged_by_its_latest_segment(tmp_path: Path) -> None:
    path = write_run(tmp_path / "r", [
        start(), evaluated(0, 3.0, 3.0, 0), steps(1, 30), ev.Finished(30, 30.0, 3.0, 0, True),
        start(20, resumed=True), steps(21, 25),  # resumed from step 20, then killed
    ])
    summary = summarize(path)
    assert summary.state == "crashed" and summary.iter == 25
    assert summary.best_val_loss == 3.0  # the evaluation before the resume still counts


def test_a_long_file_is_read_from_its_end(tmp_path: Path) -> None:
    path = write_run(tmp_path / "long", [start(), evaluated(0, 3.0, 3.0, 0), steps(1, 50_000),
                                         evaluated(50_000, 1.5, 1.5, 50_000),
                                         ev.Finished(50_000, 9.0, 1.5, 50_000, False)], max_iters=50_000)
    assert os.path.getsize(path / "metrics.jsonl") > 3_000_000
    summary = summarize(path)
    assert (summary.state, summary.iter, summary.best_val_loss) == ("finished", 50_000, 1.5)


def test_a_running_run_is_known_by_its_lock(tmp_path: Path) -> None:
    path = write_run(tmp_path / "live", [start(), steps(1, 10)])
    lock = RunLock(path)
    lock.acquire()
    try:
        write_server_info(path, ServerInfo(os.getpid(), "here", "/nowhere.sock", 1, 0.0))
        assert is_running(path)
        summary = summarize(path)
        assert summary.state == "running" and summary.pid == os.getpid()
    finally:
        lock.release()
    assert not is_running(path) and summarize(path).state == "crashed"


def test_the_journal_read_back_matches_the_one_kept_live(tmp_path: Path) -> None:
    events: list[ev.Event] = [start(), evaluated(0, 3.0, 3.0, 0), steps(1, 10), ev.SampleGenerated(10, 10.0, "hi"),
                              evaluated(10, 2.5, 2.5, 10), steps(11, 20), ev.Paused(20, 20.0),
                              ev.Warning(20, 20.0, "careful")]
    live = RunJournal()
    for event in events:
        live.add(event, 1.0)
    path = write_run(tmp_path / "j", events)
    disk = read_journal(path)
    assert disk.steps.pairs() == live.steps.pairs() and disk.evals == live.evals
    assert [type(e) for e, _ in disk.recent] == [type(e) for e, _ in live.recent]
    assert disk.paused and disk.iter == 20
    caught_up = [e for e, _ in disk.catch_up()]
    assert isinstance(caught_up[0], ev.RunStarted) and caught_up[0].train_config["eval_interval"] == 10
    assert isinstance(caught_up[-1], ev.Paused)


def test_a_resume_from_an_earlier_checkpoint_drops_the_lost_steps(tmp_path: Path) -> None:
    path = write_run(tmp_path / "back", [start(), evaluated(0, 3.0, 3.0, 0), steps(1, 30), evaluated(30, 2.0, 2.0, 30),
                                         steps(31, 45), start(30, resumed=True), steps(31, 35)])
    journal = read_journal(path)
    iters = [int(i) for i, _ in journal.steps.pairs()]
    assert iters == list(range(1, 36))  # 36-45 were lost with the killed process
    assert [e[0] for e in journal.evals] == [0, 30]


@pytest.mark.parametrize("text", ['{"event": "step", "iter": 1, "time_s": 0.1, "loss": null, "lr": 0.001}\n'])
def test_a_nan_loss_logged_as_null_reads_back(tmp_path: Path, text: str) -> None:
    path = write_run(tmp_path / "nan", [start()])
    with open(path / "metrics.jsonl", "a") as f:
        f.write(text)
    journal = read_journal(path)
    assert len(journal.steps) == 1


def test_a_resumed_run_serves_its_earlier_samples_and_messages(corpus: object, tmp_path: Path) -> None:
    """A late viewer of a resumed run sees what was logged before the resume, with the loss
    history of the checkpoint it resumed from."""
    from helpers import tiny_configs
    from serving import ServedRun

    from model.checkpoint import load_checkpoint
    from model.rundir import RunDir
    from model.trainer import Trainer

    model_config, train_config = tiny_configs(corpus, max_iters=20, eval_interval=10, sample_interval=10)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    with ServedRun(Trainer(corpus, model_config, train_config, run_dir=run_dir)) as first:
        first.thread.join(timeout=60)
    state = load_checkpoint(run_dir.ckpt_path)
    more = type(train_config)(**{**train_config.__dict__, "max_iters": 1_000_000})
    with ServedRun(Trainer(corpus, model_config, more, run_dir=run_dir, resume=state), start=False) as second:
        assert not any(isinstance(e, ev.Finished) for e, _ in second.server.journal.catch_up())
        second.start()
        deadline = time.monotonic() + 60
        while second.server.journal.iter < 25:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        caught_up = [e for e, _ in second.server.journal.catch_up()]
    samples = [e.iter for e in caught_up if isinstance(e, ev.SampleGenerated)]
    assert samples[:2] == [10, 20]  # from metrics.jsonl, before the resume
    start = caught_up[0]
    assert isinstance(start, ev.RunStarted) and start.resumed and len(start.step_history) >= 25
    assert not any(isinstance(e, ev.Finished) for e in caught_up)  # the first segment's end is not this one's


def test_a_finished_runs_journal_is_read_from_its_cache_while_metrics_are_unchanged(tmp_path: Path) -> None:
    events: list[ev.Event] = [start(), evaluated(0, 3.0, 3.0, 0), steps(1, 10), ev.SampleGenerated(10, 10.0, "hi"),
                              evaluated(10, 2.5, 2.5, 10), steps(11, 20),
                              ev.StepsDone(21, 21.0, (21,), (float("nan"),), 1e-3, 1000.0, 5.0),
                              ev.Finished(21, 21.0, 2.5, 10, False)]
    path = write_run(tmp_path / "c", events)
    assert load_journal_cache(path) is None  # none yet
    save_journal_cache(path)
    cached = load_journal_cache(path)
    parsed = read_journal(path).catch_up()
    assert cached is not None
    assert [type(e) for e, _ in cached] == [type(e) for e, _ in parsed]
    assert str(cached[0][0].step_history) == str(parsed[0][0].step_history)  # nan as nan
    assert len(cached[0][0].step_history) == 21 and math.isnan(cached[0][0].step_history[-1][1])
    assert cached[0][0].eval_history == parsed[0][0].eval_history
    with open(path / "metrics.jsonl", "a", encoding="utf-8") as f:  # resumed since: the cache is stale
        f.write(json.dumps({"event": "step", "iter": 22, "time_s": 22.0, "loss": 1.0, "lr": 1e-3}) + "\n")
    assert load_journal_cache(path) is None
    save_journal_cache(path)
    (path / "journal.json").write_text('{"version": 1, "metrics_bytes": ')  # torn
    assert load_journal_cache(path) is None
    save_journal_cache(path)
    assert load_journal_cache(path) is not None
    (path / "journal.json").write_text(json.dumps({"version": 99, "metrics_bytes": 0, "events": []}))
    assert load_journal_cache(path) is None


def test_another_users_running_run_is_not_called_crashed(tmp_path: Path) -> None:
    """Its lock file is theirs (0600): it cannot be opened to test. What its server.json says of
    its process decides (listed as running, with its pid), not "crashed"."""
    import shutil
    import socket
    import subprocess
    import sys
    import tempfile

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to look as another uid")
    shared = Path(tempfile.mkdtemp(prefix="chargpt-shared-"))  # a folder others may read, as README suggests
    try:
        shared.chmod(0o755)
        path = write_run(shared / "theirs", [start(), steps(1, 10)])
        for p in (path, *path.iterdir()):
            p.chmod(0o755 if p.is_dir() else 0o644)
        lock = RunLock(path)
        lock.acquire()
        try:
            write_server_info(path, ServerInfo(os.getpid(), socket.gethostname(), "/nowhere.sock", 1, 0.0))
            (path / "server.json").chmod(0o644)
            assert oct((path / ".lock").stat().st_mode & 0o777) == "0o600"
            result = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                                     sys.executable, "-m", "chargpt_tui", "runs", str(shared), "--json"],
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            listed = json.loads(result.stdout.splitlines()[0])
            assert (listed["state"], listed["pid"]) == ("running", os.getpid())
        finally:
            lock.release()
        assert summarize(path).state == "crashed"  # (ours to test now: not held, and nothing says it finished)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_run_whose_lock_cannot_be_read_and_names_no_process_is_unknown(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from chargpt_tui.wire import runtime

    path = write_run(tmp_path / "theirs", [start(), steps(1, 10)])
    real_open = os.open

    def open_(file: object, *args: object, **kwargs: object) -> int:
        if str(file).endswith(".lock"):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(runtime.os, "open", open_)
    assert summarize(path).state == "unknown"


def test_a_long_runs_metrics_are_read_a_chunk_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """read_journal (the training process at a resume and as it ends; a viewer of a run on disk)
    and RunCurves (the runs browser) read metrics.jsonl whole: about 6.7 times its size in
    memory, 7 GB for a 1 GB file. Read a chunk at a time, they hold a chunk and a block of steps."""
    import tracemalloc

    from chargpt_tui.wire import runs
    from chargpt_tui.wire.run_curves import RunCurves

    n = 200_000
    run = write_run(tmp_path / "run", [start(), evaluated(0, 3.0, 3.0, 0),
                                       *[steps(i * 1000 + 1, (i + 1) * 1000) for i in range(n // 1000)],
                                       evaluated(n, 2.0, 2.0, n), ev.Finished(n, 100.0, 2.0, n, False)], max_iters=n)
    size = (run / "metrics.jsonl").stat().st_size

    def read() -> tuple[list, list[float]]:
        curves = RunCurves(run)
        curves.update()
        (xs, ys), (vx, vy) = curves.train_points(), curves.val_points()
        return read_journal(run).catch_up(), [*xs, *ys, *vx, *vy, curves.last_iter]

    monkeypatch.setattr(runs, "READ_CHUNK", 2 * size)  # (in one piece)
    whole = read()
    monkeypatch.setattr(runs, "READ_CHUNK", 64 << 10)
    tracemalloc.start()
    try:
        chunked = read()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert chunked[0] == whole[0]
    # the same points, summed in other slices (LossHistory adds whole points at once where it can)
    assert chunked[1] == pytest.approx(whole[1], rel=1e-12)
    assert peak < size / 2, (peak, size)
