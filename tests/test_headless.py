"""chargpt_tui/host/headless.py: the log lines of a run without a terminal."""

from __future__ import annotations

import io
import os
import re
import threading
import time

from helpers import one_of_each_kind, tiny_configs

from chargpt_tui.host.headless import HeadlessPrinter
from model import events as ev
from model.data import Corpus
from model.trainer import Trainer


def test_every_kind_of_event_is_handled_or_ignored_on_purpose() -> None:
    """A renamed or new event cannot be dropped without a sound: each kind, handed to the printer,
    prints a line (or, ignored on purpose, none)."""
    handled, ignored = set(HeadlessPrinter(io.StringIO(), io.StringIO()).handlers), set(HeadlessPrinter.IGNORED)
    assert handled | ignored == set(ev.BY_KIND.values()) and not handled & ignored
    for event in one_of_each_kind():
        out, err = io.StringIO(), io.StringIO()
        printer = HeadlessPrinter(out, err, progress_interval_s=0.0)
        printer(event)
        assert printer.drain(5)
        printed = out.getvalue() + err.getvalue()
        assert bool(printed) == (type(event) not in ignored), (event, printed)
        assert all(line.strip() for line in printed.splitlines()), printed


def test_a_pipe_nobody_reads_never_stops_training(corpus: Corpus) -> None:
    """stdout a pipe that is full and never read (or a terminal stopped with Ctrl-S): the loop
    goes on, and its lines wait, bounded, or are dropped and counted."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"x" * 65536)  # fill the pipe: any further write blocks
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    stream = os.fdopen(write_end, "w", encoding="utf-8")
    printer = HeadlessPrinter(stream, stream, progress_interval_s=0.0)
    printer.out.max_queued_chars = printer.err.max_queued_chars = 2000
    model_config, train_config = tiny_configs(corpus, max_iters=60, eval_interval=5, sample_interval=5)
    trainer = Trainer(corpus, model_config, train_config, listeners=(printer,), event_interval_s=0.0)
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(trainer.run()), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(60)
    try:
        assert not thread.is_alive(), "training stopped on a full pipe"
        assert result[0].status == "finished" and result[0].iter == 60  # type: ignore[attr-defined]
        assert time.monotonic() - started < 30  # (what it waits for its last lines: 2 s a stream)
        assert printer.out.dropped > 0  # more than 2000 characters of lines: the rest were counted
        with os.fdopen(read_end, "rb") as reader:  # someone reads at last: what waited arrives, and the count
            os.set_blocking(read_end, False)
            seen = b""
            deadline = time.monotonic() + 10
            while b"log lines were dropped here" not in seen and time.monotonic() < deadline:
                try:
                    seen += reader.read() or b""
                except BlockingIOError:
                    pass
                time.sleep(0.01)
            assert re.search(rb"\(\d+ log lines were dropped here: the output was not being read\)", seen)
    finally:
        stream.close()


def test_a_run_prints_its_evaluations_samples_and_ending(corpus: Corpus) -> None:
    out, err = io.StringIO(), io.StringIO()
    model_config, train_config = tiny_configs(corpus)
    trainer = Trainer(corpus, model_config, train_config, listeners=(HeadlessPrinter(out, err),))
    trainer.run()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("training on ")
    assert [line.split(":")[0] for line in lines if "val loss" in line and line.startswith("step")] == [
        "step 0", "step 10", "step 20"]
    assert "--- sample at step 10 ---" in lines and "--- sample at step 20 ---" in lines
    assert lines[-1].startswith("finished at step 20 after ")
    assert err.getvalue() == ""


def test_pauses_a_divergence_and_hints_are_logged() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = HeadlessPrinter(out, err)
    printer(ev.Paused(12, 3.0))
    printer(ev.Resumed(12, 9.0))
    printer(ev.Diverged(30, 12.0, "the loss became nan at step 30", None, -1))
    printer(ev.Hint(31, 13.0, "--preset cpu is made for a CPU"))
    assert printer.drain(5)
    assert out.getvalue().splitlines() == [
        "paused at step 12", "resumed at step 12", "hint: --preset cpu is made for a CPU"]
    assert "training diverged: the loss became nan at step 30" in err.getvalue()


def test_the_line_writer_lives_on_after_a_stream_that_failed() -> None:
    """A stream that fails unexpectedly (stdout closed: sys.stdout is None) loses those lines,
    not the writer: later lines are written, and waiting for them never takes its full time."""
    from chargpt_tui.host.line_writer import LineWriter

    class Flaky(io.StringIO):
        failed = False

        def write(self, text: str) -> int:
            if not Flaky.failed:
                Flaky.failed = True
                raise AttributeError("'NoneType' object has no attribute 'write'")
            return super().write(text)

    stream = Flaky()
    writer = LineWriter(stream)
    writer.write_line("lost")
    assert writer.drain(5)
    writer.write_line("kept")
    started = time.monotonic()
    assert writer.drain(5) and time.monotonic() - started < 1
    assert stream.getvalue() == "kept\n"
