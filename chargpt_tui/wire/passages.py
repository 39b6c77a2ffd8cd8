"""A passage of a run's validation text, for the view of where the model struggles: read from
the run's text file (config.json names it), from its last tenth (the validation split), a few
KB at most whatever the file's size, starting at the beginning of a line."""

from __future__ import annotations

import os
from pathlib import Path

from .runs import read_config

VALIDATION_FROM = 0.9  # model/data.py's TRAIN_FRACTION: the validation split is what follows


def validation_passage(run_dir: Path, chars: int = 1000) -> str | None:
    """About `chars` characters of the run's validation text; None when its text is not a file
    here (the built-in corpus, or a text moved or on another machine)."""
    corpus = read_config(run_dir).get("corpus")
    if not isinstance(corpus, dict):
        return None
    path = corpus.get("path") or corpus.get("name")
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(int(size * VALIDATION_FROM))
            data = f.read(chars * 4 + 4096)
    except OSError:
        return None
    text = data.decode("utf-8", errors="ignore")
    start = text.find("\n") + 1  # from the start of a line (and past a character cut in two)
    passage = text[start:start + chars] if 0 < start < len(text) - 1 else text[:chars]
    return passage or None
