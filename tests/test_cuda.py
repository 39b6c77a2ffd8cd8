"""On a CUDA GPU: --dtype auto's choice trains, float16 with its gradient scaler trains and
resumes, checkpoints load on the CPU, MFU's peak comes from the data sheet where the GPU is
known, and generation works. Marked cuda: skipped without a GPU (see benchmarks/gpu_check.sh)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import tiny_configs

from model import events as ev
from model.checkpoint import load_checkpoint, model_from_checkpoint
from model.data import Corpus
from model.flops import gpu_data_sheet, peak_flops
from model.rundir import RunDir
from model.trainer import Trainer

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("dtype", ["auto", "float32", "bfloat16", "float16"])
def test_training_on_the_gpu_in_each_dtype(corpus: Corpus, tmp_path: Path, dtype: str) -> None:
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    model_config, train_config = tiny_configs(corpus, device="cuda", dtype=dtype, max_iters=40, eval_interval=20,
                                              learning_rate=3e-3, grad_clip=1.0)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir)
    seen: list[ev.Event] = []
    trainer.add_listener(seen.append)
    assert trainer.run().status == "finished"
    assert trainer.dtype in ("float32", "bfloat16", "float16") and (dtype == "auto" or trainer.dtype == dtype)
    assert (trainer.scaler is not None) == (trainer.dtype == "float16")
    evals = [e for e in seen if isinstance(e, ev.EvalDone)]
    assert math.isfinite(evals[-1].val_loss) and evals[-1].val_loss < evals[0].val_loss
    state = load_checkpoint(run_dir.ckpt_path)  # read on the CPU
    model, tokenizer = model_from_checkpoint(state)
    assert next(model.parameters()).device.type == "cpu"
    resumed = Trainer(corpus, model_config, train_config, resume=state)
    assert resumed.iter == 40
    text = trainer.model.eval().generate(trainer.sampler.context(), 50)
    assert text.shape == (1, 51)


def test_the_peak_is_the_data_sheet_where_the_gpu_is_known() -> None:
    device = torch.device("cuda")
    peak, source = peak_flops(device, "float32")
    if gpu_data_sheet(torch.cuda.get_device_name(device)) is None:
        assert source == "measured matmul" and peak > 1e12
    else:
        assert "data sheet" in source
