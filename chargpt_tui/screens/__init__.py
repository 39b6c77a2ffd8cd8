from .generate import GenerateScreen
from .help import HelpScreen

__all__ = ["GenerateScreen", "HelpScreen"]
