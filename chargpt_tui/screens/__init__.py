from .generate import GenerateScreen
from .help import HelpScreen
from .quit import QuitScreen

__all__ = ["GenerateScreen", "HelpScreen", "QuitScreen"]
