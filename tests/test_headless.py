"""chargpt_tui/headless.py: the log lines of a run without a terminal."""

from __future__ import annotations

import io

from helpers import tiny_configs

from chargpt_tui.headless import HeadlessPrinter
from model import events as ev
from model.data import Corpus
from model.trainer import Trainer


def test_every_kind_of_event_is_handled_or_ignored_on_purpose() -> None:
    """A renamed or new event cannot be dropped without a sound."""
    printer = HeadlessPrinter(io.StringIO(), io.StringIO())
    handled, ignored = set(printer.handlers), set(HeadlessPrinter.IGNORED)
    assert handled | ignored == set(ev.BY_KIND.values()) and not handled & ignored


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
    assert out.getvalue().splitlines() == [
        "paused at step 12", "resumed at step 12", "hint: --preset cpu is made for a CPU"]
    assert "training diverged: the loss became nan at step 30" in err.getvalue()
