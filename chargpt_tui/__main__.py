from chargpt_tui.commands.cli import entry_point

entry_point()
