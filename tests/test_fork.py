"""`--fork RUN_DIR[@best|@latest]`: a new run from another run's checkpoint, with settings
changed, that records its parent and the step it forked at, and whose curve starts there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import TINY_FLAGS, make_text, one_clear_line

from chargpt_tui.commands.cli import main
from chargpt_tui.wire.run_curves import RunCurves
from chargpt_tui.wire.run_table import read_rows


def _flags(**changed: str) -> list[str]:
    flags = list(TINY_FLAGS)
    for name, value in changed.items():
        flag = "--" + name.replace("_", "-")
        if flag in flags:
            flags[flags.index(flag) + 1] = value
        else:
            flags += [flag, value]
    return flags


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    text = root / "tiny.txt"
    text.write_text(make_text(), encoding="utf-8")
    run = root / "runs" / "parent"
    assert main([str(text), *_flags(max_iters="20"), "--headless", "--out-dir", str(run)]) == 0
    return run


def _child(parent: Path, capsys: pytest.CaptureFixture[str], spec: str, *flags: str) -> Path:
    before = set(parent.parent.iterdir())
    assert main(["--fork", spec, "--headless", *flags]) == 0, capsys.readouterr().err
    (child,) = set(parent.parent.iterdir()) - before  # beside its parent
    return child


def test_a_fork_records_its_parent_and_starts_at_the_parents_step(parent: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    best = torch.load(parent / "best.pt", weights_only=True)
    child = _child(parent, capsys, f"{parent}@best", "--learning-rate", "0.002", "--dropout", "0.0",
                   "--max-iters", "30", "--eval-interval", "5")
    config = json.loads((child / "config.json").read_text())
    assert config["parent"] == {"path": str(parent.resolve()), "checkpoint": "best", "iter": int(best["iter"])}
    assert config["train"]["learning_rate"] == 0.002 and config["model"]["dropout"] == 0.0
    curves = RunCurves(child)
    curves.update()
    # its curve starts at the parent's step: an evaluation there, then the steps after it
    assert curves.evals[0][0] == best["iter"]
    assert curves.steps.iters[0] == best["iter"] + 1
    assert curves.last_iter == 30
    # its own best: not the parent's carried over
    state = torch.load(child / "best.pt", weights_only=True)
    assert state["best_iter"] >= best["iter"]
    # the table shows the lineage
    rows = {r.name: r for r in read_rows(parent.parent)}
    assert rows[child.name].cell("parent") == f"parent @{best['iter']}"


def test_a_resumed_fork_still_names_its_parent(parent: Path, capsys: pytest.CaptureFixture[str]) -> None:
    child = _child(parent, capsys, str(parent), "--max-iters", "25")  # @latest by default: step 20
    assert json.loads((child / "config.json").read_text())["parent"]["iter"] == 20
    assert main(["--resume", str(child / "ckpt.pt"), "--headless", "--max-iters", "28"]) == 0
    config = json.loads((child / "config.json").read_text())
    assert config["parent"] == {"path": str(parent.resolve()), "checkpoint": "latest", "iter": 20}


@pytest.mark.parametrize(("args", "fragments"), [
    (["--n-layers", "3"], ("--n-layers cannot change in a fork",)),
    (["--preset", "cpu"], ("--preset cannot be combined with --fork",)),
    (["--max-iters", "20"], ("not before --max-iters 20",)),
])
def test_what_a_fork_cannot_change_is_one_clear_line(parent: Path, capsys: pytest.CaptureFixture[str],
                                                     args: list[str], fragments: tuple[str, ...]) -> None:
    assert main(["--fork", str(parent), "--headless", *args]) == 2
    one_clear_line(capsys.readouterr().err, *fragments)


def test_a_fork_of_nothing_is_one_clear_line(tmp_path: Path, parent: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--fork", str(tmp_path / "nowhere"), "--headless"]) == 2
    one_clear_line(capsys.readouterr().err, "no such run directory")
    empty = tmp_path / "empty-run"
    empty.mkdir()
    assert main(["--fork", f"{empty}@best", "--headless"]) == 2
    one_clear_line(capsys.readouterr().err, "not a run directory")
    (empty / "config.json").write_text("{}")  # a run that has saved nothing yet
    assert main(["--fork", f"{empty}@best", "--headless"]) == 2
    one_clear_line(capsys.readouterr().err, "no best checkpoint yet")
    assert main(["--fork", str(parent), "--resume", str(parent / "ckpt.pt")]) == 2
    one_clear_line(capsys.readouterr().err, "one or the other")
