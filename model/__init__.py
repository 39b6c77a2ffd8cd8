"""The character-level GPT and its training loop: PyTorch and NumPy only, never the UI."""

from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from .config import PRESETS, ConfigError, GPTConfig, TrainConfig, build_configs
from .data import Corpus, CorpusError
from .gpt import GPT
from .rundir import MetricsLog, RunDir, RunDirError
from .tokenizer import CharTokenizer, UnknownCharactersError
from .trainer import RunResult, Trainer

__all__ = [
    "GPT", "PRESETS", "CharTokenizer", "CheckpointError", "ConfigError", "Corpus", "CorpusError",
    "GPTConfig", "MetricsLog", "RunDir", "RunDirError", "RunResult", "TrainConfig", "Trainer",
    "UnknownCharactersError", "build_configs", "load_checkpoint", "model_from_checkpoint", "save_checkpoint",
]
