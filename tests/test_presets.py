"""The presets are what README and the docs say they are."""

from __future__ import annotations

from pathlib import Path

from model.config import PRESETS, build_configs

ROOT = Path(__file__).resolve().parent.parent


def test_the_10_minute_presets_sizes_are_those_readme_gives() -> None:
    model, train = build_configs("cpu-10min", vocab_size=65)
    assert (model.n_layers, model.n_embed, model.n_heads, model.block_size, model.dropout) == (4, 128, 4, 128, 0.0)
    assert (train.batch_size, train.max_iters, train.optimizer) == (16, 4600, "adamw")
    assert (train.learning_rate, train.lr_schedule, train.min_lr) == (2e-3, "cosine", 2e-4)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`--preset cpu-10min`: 4 layers x 128, block 128, batch 16, 4600 steps" in readme
    flags = (ROOT / "docs" / "presets-and-flags.md").read_text(encoding="utf-8")
    assert "| `cpu-10min` | 4 layers x 128, 4 heads, block 128, no dropout | batch 16, 4600 iters" in flags


def test_every_preset_is_in_the_docs_table() -> None:
    flags = (ROOT / "docs" / "presets-and-flags.md").read_text(encoding="utf-8")
    for name in PRESETS:
        assert f"| `{name}`" in flags, name
