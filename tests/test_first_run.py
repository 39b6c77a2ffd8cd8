"""A first run that shows learning at once: without --preset a machine without a GPU gets the
preset made for a CPU (said on the start line; the seed's settings are `--preset seed`), and the
evaluation at step 0 is bounded, so it never holds an empty screen for minutes."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_script, tiny_configs

from model import events as ev
from model.config import PRESETS, GPTConfig, default_preset, preset_note
from model.data import Corpus
from model.evaluation import FIRST_EVAL_BATCHES
from model.trainer import Trainer


def test_the_default_preset_fits_the_device() -> None:
    assert default_preset("cpu") == "cpu"
    assert default_preset("cuda") == "seed" and default_preset("mps") == "seed"
    assert preset_note("cpu", "cpu") == "the CPU default" and preset_note("seed", "cuda") == "the GPU default"
    assert preset_note("seed", "cpu") == "asked for" and preset_note("resumed", "cpu") == "from the checkpoint"


def _text(tmp_path: Path) -> None:
    (tmp_path / "tiny.txt").write_text("to be or not to be, that is the question\n" * 400, encoding="utf-8")


def test_no_preset_on_a_cpu_is_the_cpu_preset_and_the_start_line_says_so(tmp_path: Path) -> None:
    _text(tmp_path)
    result = run_script(["tiny.txt", "--device", "cpu", "--max-iters", "2", "--out-dir", "run", "--headless"],
                        tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["preset"] == "cpu"
    for name, value in PRESETS["cpu"].model.items():
        assert config["model"][name] == value, name
    assert config["train"]["batch_size"] == PRESETS["cpu"].train["batch_size"]
    assert "preset cpu (the CPU default): " in result.stdout
    assert "--preset seed for the seed's settings" in result.stdout
    assert "changed by flags: max iters 2\n" in result.stdout  # (the preset's description says 2200)


def test_preset_seed_is_the_seeds_settings(tmp_path: Path) -> None:
    _text(tmp_path)
    result = run_script(["tiny.txt", "--preset", "seed", "--device", "cpu", "--max-iters", "1", "--eval-iters", "1",
                         "--batch-size", "2", "--out-dir", "run", "--headless"], tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    seed = GPTConfig(vocab_size=config["model"]["vocab_size"])
    assert config["preset"] == "seed" and config["model"] == seed.__dict__
    assert "preset seed (asked for)" in result.stdout


def test_the_evaluation_at_step_0_is_bounded_and_says_so(corpus: Corpus) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=10, eval_interval=10, eval_iters=50)
    trainer = Trainer(corpus, model_config, train_config)
    seen: list[ev.Event] = []
    trainer.add_listener(seen.append)
    trainer.run()
    started = [(e.iter, e.eval_iters) for e in seen if isinstance(e, ev.EvalStarted)]
    done = [(e.iter, e.batches) for e in seen if isinstance(e, ev.EvalDone)]
    assert started == done == [(0, FIRST_EVAL_BATCHES), (10, 50)]


def test_the_headless_line_of_a_bounded_evaluation_says_so(tmp_path: Path) -> None:
    _text(tmp_path)
    result = run_script(["tiny.txt", "--device", "cpu", "--threads", "1", "--max-iters", "2", "--eval-iters", "30",
                         "--block-size", "16", "--out-dir", "run", "--headless"], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert f"({FIRST_EVAL_BATCHES} batches: a first look)" in lines[0] and "first look" not in lines[-1], lines
