"""A passage of a run's validation text, for the view of where the model struggles: read from
the run's text file (config.json names it), from its last tenth of characters (the validation
split), a few KB at most whatever the file's size, starting at the beginning of a line."""

from __future__ import annotations

import os
from pathlib import Path

from .runs import read_config

VALIDATION_FROM = 0.9  # model/data.py's TRAIN_FRACTION: the validation split is what follows
SCAN_BYTES = 16 << 20  # read back from the end at most this much to find where the split starts
CONTINUATION = bytes(range(0x80, 0xC0))  # UTF-8's continuation bytes: every other byte starts a character


def validation_passage(run_dir: Path, chars: int = 1000) -> str | None:
    """About `chars` characters of the run's validation text; None when its text is not a file
    here (the built-in corpus, or a text moved or on another machine)."""
    corpus = read_config(run_dir).get("corpus")
    if not isinstance(corpus, dict):
        return None
    path = corpus.get("path") or corpus.get("name")
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    n_chars = corpus.get("n_chars")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(_validation_start(f, size, n_chars if isinstance(n_chars, int) else None))
            data = f.read(chars * 4 + 4096)
    except OSError:
        return None
    text = data.decode("utf-8", errors="ignore")
    start = text.find("\n") + 1  # from the start of a line (and past a character cut in two)
    passage = text[start:start + chars] if 0 < start < len(text) - 1 else text[:chars]
    return passage or None


def _validation_start(f, size: int, n_chars: int | None) -> int:  # noqa: ANN001
    """A byte offset at or after the first character of the validation split (the last
    n_chars - int(0.9 n_chars) characters). Where every character is a byte, that character's
    own offset; otherwise counted back from the end of the file (a text whose last tenth is in
    another script than the rest has its split far from 90% of its bytes), at most SCAN_BYTES
    back: an offset with fewer validation characters after it is inside the split too."""
    if n_chars is None or n_chars == size:
        return int(size * VALIDATION_FROM)
    wanted = n_chars - int(n_chars * VALIDATION_FROM)  # characters in the split
    pos, counted, floor = size, 0, max(0, size - SCAN_BYTES)
    while pos > floor:
        step = min(1 << 16, pos - floor)
        pos -= step
        f.seek(pos)
        block = f.read(step)
        starts = len(block.translate(None, CONTINUATION))
        if counted + starts < wanted:
            counted += starts
            continue
        for i in range(len(block) - 1, -1, -1):  # the exact byte, in this block
            if block[i] < 0x80 or block[i] >= 0xC0:
                counted += 1
                if counted == wanted:
                    return pos + i
    return pos
