"""`python -m chargpt_tui`, and what torchrun starts in each process: the command line."""

from chargpt_tui.commands.cli import entry_point

entry_point()
