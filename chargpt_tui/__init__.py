"""chargpt-tui: train a character-level GPT on any text file and watch it learn in the terminal."""

__version__ = "0.1.0"
