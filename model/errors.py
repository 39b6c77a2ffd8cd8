"""The errors the core reports to users, in a module of their own that imports nothing heavy:
the command line catches them without loading PyTorch (a dashboard viewer never needs it)."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint cannot be read or used. The message is one line meant for the user."""


class CorpusError(ValueError):
    """The text cannot be used for training. The message is one line meant for the user."""
