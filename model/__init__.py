"""The character-level GPT and its training loop: PyTorch and NumPy only, never the UI.

The names below load their modules on first use (PEP 562), so that `import model.events` (what a
dashboard viewer needs) does not load PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CheckpointError": "errors", "CorpusError": "errors", "load_checkpoint": "checkpoint",
    "model_from_checkpoint": "checkpoint", "save_checkpoint": "checkpoint", "PRESETS": "config",
    "ConfigError": "config", "GPTConfig": "config", "TrainConfig": "config", "build_configs": "config",
    "Corpus": "data", "GPT": "gpt", "LM": "gpt", "Head": "gpt", "MultiHeadAttention": "gpt", "MultHead": "gpt",
    "FeedForward": "gpt", "Block": "gpt", "MetricsLog": "rundir", "RunDir": "rundir", "RunDirError": "rundir",
    "CharTokenizer": "tokenizer", "UnknownCharactersError": "tokenizer", "RunResult": "trainer", "Trainer": "trainer",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
