from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_text

from model.data import Corpus


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


@pytest.fixture
def corpus() -> Corpus:
    return Corpus.from_text(make_text(), "tiny")
