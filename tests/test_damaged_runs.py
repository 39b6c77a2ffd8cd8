"""A run folder damaged or edited by hand (a field of the wrong type in metrics.jsonl or
config.json, a folder this user cannot read) is read as far as it can be, by every reader:
`runs`, the runs browser's rows and curves, a dashboard on the run. One bad folder once crashed
`runs`, `attach` and `serve` for every run beside it, and a bad field hung a dashboard at
"starting" (its reading thread died) or crashed it on the first format."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from helpers import app_until, permissions_apply, run_script

from chargpt_tui.dashboard.app import ChargptApp
from chargpt_tui.wire.event_fields import CONVERTERS
from chargpt_tui.wire.protocol import ProtocolError, event_from_record
from chargpt_tui.wire.run_curves import RunCurves
from chargpt_tui.wire.run_link import RunOnDisk
from chargpt_tui.wire.run_table import read_rows, sorted_rows
from chargpt_tui.wire.runs import list_runs, read_journal
from model import events as ev
from model.rundir import MetricsLog

WRONG = ["abc", None, [1], {"a": 1}, -1, 1.5, True, "1.2.0.012", 10**400]  # (the last: past a float's range)


def write_run(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({
        "model": {"n_layers": 1, "n_embed": 32}, "train": {"max_iters": 20, "learning_rate": 1e-3},
        "corpus": {"name": "tiny.txt", "path": "/nowhere/tiny.txt"}, "vocab": "abc", "preset": "cpu",
        "precision": {"dtype": "float32"}, "parent": {"path": "/runs/p", "checkpoint": "best", "iter": 5},
    }))
    log = MetricsLog(path / "metrics.jsonl")
    log(ev.RunStarted(0, 0.0, 20, 1000, 3, "tiny.txt", 5000, "cpu", "CPU", "float32", 1, "2.13", None, False, 0.0))
    log(ev.EvalDone(0, 0.1, 3.1, 3.0, 3.0, 0, True))
    log(ev.StepsDone(10, 5.0, tuple(range(1, 11)), tuple(3.0 - i / 100 for i in range(1, 11)), 1e-3, 1000.0, 5.0))
    log(ev.EvalDone(10, 5.5, 2.9, 2.8, 2.8, 10, True))
    log(ev.SampleGenerated(10, 5.6, "to be or not"))
    log(ev.CheckpointSaved(10, 5.7, "ckpt.pt", "eval", True))
    log(ev.Finished(10, 6.0, 2.8, 10, True))
    log.close()
    return path


def read_everything(root: Path) -> None:
    """What `runs`, the runs browser and a viewer's catch-up read of each run under root."""
    for summary in list_runs(root):
        assert isinstance(summary.iter, int) and isinstance(summary.elapsed_s, float)
        assert summary.best_iter is None or isinstance(summary.best_iter, int)
        json.loads(summary.to_json())
        path = Path(summary.path)
        read_journal(path).catch_up()
        curves = RunCurves(path)
        curves.update()
        curves.train_points(by_time=True), curves.val_points(by_time=True)
    rows = read_rows(root)
    for row in rows:
        for key in ("name", "state", "step", "best", "time", "text", "parent", "train.learning_rate"):
            row.cell(key), row.sort_key(key)
    sorted_rows(rows, "train.learning_rate")


def test_every_field_of_every_annotation_is_checked() -> None:
    for cls in ev.BY_KIND.values():
        for f in dataclasses.fields(cls):
            assert str(f.type) in CONVERTERS, (cls.__name__, f.name, f.type)


def test_a_record_with_a_field_of_the_wrong_type_is_refused() -> None:
    good = ev.EvalDone(10, 5.5, 2.9, 2.8, 2.8, 10, True).to_record()
    assert event_from_record(good) == ev.EvalDone(10, 5.5, 2.9, 2.8, 2.8, 10, True)
    for name, value in (("iter", "abc"), ("iter", None), ("iter", 1.5), ("iter", True), ("val_loss", "2.8"),
                        ("is_best", 1)):
        with pytest.raises(ProtocolError, match=name):
            event_from_record({**good, name: value})
    with pytest.raises(ProtocolError, match="text"):
        event_from_record(ev.SampleGenerated(1, 1.0, "x").to_record() | {"text": 5})
    nan = event_from_record({**good, "train_loss": None})  # how metrics.jsonl writes NaN
    assert nan.train_loss != nan.train_loss


def test_a_field_of_the_wrong_type_anywhere_in_metrics_jsonl(tmp_path: Path) -> None:
    lines = (write_run(tmp_path / "template") / "metrics.jsonl").read_text().splitlines()
    write_run(tmp_path / "root" / "a-good-one")
    run = tmp_path / "root" / "b-damaged"
    write_run(run)
    tried = 0
    for n, line in enumerate(lines):
        record = json.loads(line)
        for field in record:
            for value in WRONG:
                damaged = [*lines[:n], json.dumps({**record, field: value}), *lines[n + 1:]]
                (run / "metrics.jsonl").write_text("\n".join(damaged) + "\n")
                read_everything(tmp_path / "root")
                tried += 1
    assert tried > 300


def test_a_part_of_config_json_of_the_wrong_type(tmp_path: Path) -> None:
    run = write_run(tmp_path / "root" / "run")
    config = json.loads((run / "config.json").read_text())
    for key in config:
        for value in WRONG:
            (run / "config.json").write_text(json.dumps({**config, key: value}))
            read_everything(tmp_path / "root")
        if isinstance(config[key], dict):
            for inner in config[key]:
                for value in WRONG:
                    (run / "config.json").write_text(json.dumps({**config, key: {**config[key], inner: value}}))
                    read_everything(tmp_path / "root")
    for whole in ("[1]", '"x"', "[" * 100_000, ""):
        (run / "config.json").write_text(whole)
        read_everything(tmp_path / "root")


@pytest.mark.parametrize(("kind", "field", "value"), [
    ("sample", "text", 5), ("eval", "iter", None), ("eval", "val_loss", "abc"), ("start", "torch_version", 2),
    ("start", "iter", "abc"), ("config.json", "eval_interval", "abc"), ("config.json", "eval_iters", [1]),
    ("config.json", "muon_lr", "fast")])
async def test_a_dashboard_on_a_damaged_run_shows_what_it_can(tmp_path: Path, kind: str, field: str,
                                                              value: object) -> None:
    run = write_run(tmp_path / "run")
    if kind == "config.json":  # a setting of the wrong type, read into the start event
        config = json.loads((run / "config.json").read_text())
        config["train"] |= {"optimizer": "muon", "muon_lr": 0.02, field: value}
        (run / "config.json").write_text(json.dumps(config))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    damaged = [{**r, field: value} if r["event"] == kind else r for r in lines]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in damaged))
    app = ChargptApp(RunOnDisk(run), read_only=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await app_until(pilot, lambda: app.caught_up and app.chart.points)  # the rest of the run is there
        assert app.is_running
        await pilot.press("q")


def test_a_run_folder_this_user_cannot_read(tmp_path: Path) -> None:
    write_run(tmp_path / "runs" / "a-readable")
    hidden = write_run(tmp_path / "runs" / "b-hidden")
    hidden.chmod(0)
    try:
        listed = run_script(["runs", "runs", "--plain"], tmp_path, permissions_apply())
        assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
        assert "a-readable" in listed.stdout
        attach = run_script(["attach", "runs/b-hidden"], tmp_path, permissions_apply())
        assert attach.returncode == 2 and attach.stderr.strip().count("\n") == 0, attach.stderr
        assert "permission denied" in attach.stderr
    finally:
        hidden.chmod(0o755)
