"""The dashboard's screens over the main one: the generation prompt, the keys, the question on quitting."""

from .generate import GenerateScreen
from .help import HelpScreen
from .quit import QuitScreen

__all__ = ["GenerateScreen", "HelpScreen", "QuitScreen"]
