from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import make_text

from model.data import Corpus

if TYPE_CHECKING:
    from dashboards import Dashboard
    from serving import ServedRun


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked cuda skip, saying why, where there is no CUDA GPU."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these on one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def private_token_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Texts' token caches go to this session's folder (inherited by the processes tests start),
    not to the user's ~/.cache."""
    from model.token_cache import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("token-cache"))
    yield
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


@pytest.fixture
def corpus() -> Corpus:
    return Corpus.from_text(make_text(), "tiny")


@pytest.fixture(scope="session", autouse=True)
def no_training_process_outlives_the_tests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Training processes are meant to outlive their dashboards; not the test run. Any still
    holding a run directory of this session's at the end is ended (a failed test's leftovers
    would otherwise train on, taking a core from every later run on this machine)."""
    yield
    from chargpt_tui.wire.runtime import ServerInfo, is_running

    for server_json in tmp_path_factory.getbasetemp().rglob("server.json"):
        run_dir = server_json.parent
        info = ServerInfo.read(run_dir)
        if info is None or info.pid == os.getpid() or not is_running(run_dir):
            continue
        try:
            os.kill(info.pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture
def run(corpus: Corpus, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServedRun]:
    """A tiny run training in a thread of the test's process, served on a real socket (options
    for its RunServer by indirect parametrization)."""
    from helpers import tiny_configs
    from serving import ServedRun

    from model.rundir import RunDir
    from model.trainer import Trainer

    options = getattr(request, "param", {})
    model_config, train_config = tiny_configs(corpus, max_iters=1_000_000, eval_interval=40, sample_interval=40)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.02)
    with ServedRun(trainer, **options) as served:
        yield served


@pytest.fixture
def dashboard(corpus: Corpus, tmp_path: Path) -> Iterator[Dashboard]:
    """make(start=True, **train) -> (app, run): a dashboard attached to a served run. The run
    starts training at once unless start=False (then run.start() after changing the trainer)."""
    from dashboards import served_dashboards

    yield from served_dashboards(corpus, tmp_path)
