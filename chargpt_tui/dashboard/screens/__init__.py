"""The dashboard's screens over the main one: the generation prompt, the attention view, where the
model struggles, the keys, the question on quitting, the runs to overlay."""

from .attention import AttentionScreen
from .generate import GenerateScreen
from .help import HelpScreen
from .quit import QuitScreen
from .struggles import StrugglesScreen

__all__ = ["AttentionScreen", "GenerateScreen", "HelpScreen", "QuitScreen", "StrugglesScreen"]
