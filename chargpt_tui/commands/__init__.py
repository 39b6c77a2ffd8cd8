"""The command line: flags into configs, and each command (train, attach, runs, serve, sample, prepare, ...)."""
