"""A training run's inputs from its flags: the text, the configs, the run directory and the
checkpoint it resumes from, all checked before anything is written (for one process, or each
rank of a torchrun job)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.config import GPTConfig, TrainConfig, build_configs
from model.errors import CorpusError
from model.rundir import RunDir

from .parsers import MODEL_FLAGS, TRAIN_FLAGS, UsageError

if TYPE_CHECKING:
    from model.data import Corpus
    from model.tokenizer import CharTokenizer


def prepare_training(
    args: argparse.Namespace, create_run_dir: bool = True
) -> tuple[Corpus, GPTConfig, TrainConfig, RunDir, dict[str, Any] | None]:
    """Everything that can fail on bad input, checked before anything is written (the run
    directory is made last, unless create_run_dir is False: a torchrun rank other than 0)."""
    from model.checkpoint import configs_from_checkpoint, load_checkpoint
    from model.tokenizer import CharTokenizer

    target = Path(args.out_dir) if args.out_dir else Path(args.resume).resolve().parent if args.resume else None
    if target is not None:  # (a new run's or a fork's default folder is new)
        _refuse_another_runs_folder(target, args.resume)
    overrides = {name: getattr(args, name) for name in (*MODEL_FLAGS, *TRAIN_FLAGS)}
    resume_state = None
    fork = getattr(args, "fork", None)
    if args.resume and fork:
        raise UsageError("--resume and --fork: one or the other (resume goes on in the same run directory, "
                         "a fork starts a new one)")
    if args.resume or fork:
        flag = "--resume" if args.resume else "--fork"
        if args.preset:
            raise UsageError(f"--preset cannot be combined with {flag} (the checkpoint has its settings)")
        if fork:
            from .fork import CHECKPOINTS, FORKABLE_MODEL_FLAGS, fork_state, parse_fork

            parent_dir, which = parse_fork(fork)
            resume_state = fork_state(load_checkpoint(parent_dir / CHECKPOINTS[which]), parent_dir, which)
            changeable: tuple[str, ...] = FORKABLE_MODEL_FLAGS
        else:
            changeable = ()
            resume_state = load_checkpoint(args.resume)
            if args.out_dir and Path(args.out_dir).resolve() != Path(args.resume).resolve().parent:
                # in another folder, as a fork: its best.pt is the best of its own evaluations (the
                # best the checkpoint names is a file in the folder it came from, not there)
                resume_state = {k: v for k, v in resume_state.items() if k not in ("best_val_loss", "best_iter")}
        model_config, saved_train = configs_from_checkpoint(resume_state)
        if args.resume and overrides["optimizer"] not in (None, saved_train.optimizer):
            raise UsageError(f"--optimizer cannot change when resuming (the checkpoint's moments are "
                             f"{saved_train.optimizer}'s); fork the run to try {overrides['optimizer']}")
        changed = [f"--{n.replace('_', '-')}" for n in MODEL_FLAGS if n not in changeable
                   and overrides[n] is not None and overrides[n] != getattr(model_config, n)]
        if changed:
            how = "when resuming" if args.resume else "in a fork"
            raise UsageError(f"{', '.join(changed)} cannot change {how} (the model's shape is fixed)")
        model_config = replace(model_config, **{n: overrides[n] for n in changeable
                                                if overrides[n] is not None})
        tokenizer = CharTokenizer(resume_state["vocab"])
        corpus = _load_corpus(args.text, tokenizer, resume_state, args.cache_dir)
        train_config = TrainConfig(**{**asdict(saved_train), **{k: v for k, v in overrides.items()
                                                                 if k in TRAIN_FLAGS and v is not None}})
        train_config.validate()
        at, due_done = int(resume_state["iter"]), bool(resume_state.get("due_done", True))
        # a checkpoint stopped during its last evaluation resumes to do just that
        if train_config.max_iters < at or (train_config.max_iters == at and (due_done or fork)):
            raise UsageError(
                f"the checkpoint is at step {resume_state['iter']}, which is not before --max-iters "
                f"{train_config.max_iters}; pass a larger --max-iters to train on"
            )
    else:
        corpus = _load_corpus(args.text, None, None, args.cache_dir)
        if args.preset is None:  # the one made for this machine (said under the start line, kept in config.json)
            args.preset = _default_preset(args.device)
        model_config, train_config = build_configs(args.preset, overrides, corpus.tokenizer.vocab_size)
    corpus.check_block_size(model_config.block_size)
    from model.device import choose_device
    from model.precision import check_dtype

    check_dtype(train_config.dtype, choose_device(train_config.device))
    if args.out_dir:
        out_dir = Path(args.out_dir)
    elif args.resume:
        out_dir = Path(args.resume).resolve().parent
    elif fork:  # beside its parent, where a list of those runs finds it
        out_dir = RunDir.default_path(corpus.name, root=parent_dir.parent)
    else:
        out_dir = RunDir.default_path(corpus.name)
    run_dir = RunDir(out_dir)
    if create_run_dir:
        run_dir.prepare()
    return corpus, model_config, train_config, run_dir, resume_state


def _refuse_another_runs_folder(out_dir: Path, resume: str | None) -> None:
    """A new run (or one resumed from elsewhere) never trains into a folder that holds another
    run's checkpoints: its first evaluation would replace them."""
    from chargpt_tui.wire.runtime import is_running

    if resume and Path(resume).resolve().parent == out_dir.resolve():  # resuming in its own folder
        ckpt = out_dir / "ckpt.pt"
        if Path(resume).is_file() and ckpt.is_file() and not os.path.samefile(resume, ckpt):
            fork = f"fork it instead (--fork {out_dir}@best), or " if Path(resume).name == "best.pt" else ""
            raise UsageError(f"--resume {resume}: going on from it there would replace {ckpt}, the run's "
                             f"latest state; {fork}name another --out-dir")
        return
    if is_running(out_dir):
        return  # its lock says so, naming the process
    saved = RunDir(out_dir).checkpoints()
    if saved:
        go_on = f"go on with it with --resume {out_dir / 'ckpt.pt'}, or " if "ckpt.pt" in saved else ""
        raise UsageError(f"--out-dir {out_dir} holds a run already ({' and '.join(saved)}, which this one would "
                         f"replace): {go_on}name another --out-dir")


def _default_preset(device: str | None) -> str:
    from model.config import default_preset
    from model.device import choose_device

    return default_preset(choose_device(device or "auto").type)


def _load_corpus(text: str | None, tokenizer: CharTokenizer | None, resume_state: dict[str, Any] | None,
                 cache_dir: str | None = None) -> Corpus:
    from model.data import BUILTIN_CORPUS_NAME, Corpus
    from model.distributed import is_main_process

    from .prepare import cached_corpus

    name = text
    if name is None and resume_state is not None:
        saved = resume_state.get("corpus", {})
        name = saved.get("path") or saved.get("name") or BUILTIN_CORPUS_NAME
        if name != BUILTIN_CORPUS_NAME and not Path(name).exists():
            raise UsageError(f"the checkpoint was trained on {name}, which is not there; name the text to train on")
    if name is None or name == BUILTIN_CORPUS_NAME:
        corpus = Corpus.builtin(tokenizer)
        if text is None and resume_state is None and is_main_process():
            print(f"no TEXT given: training on the built-in corpus, {corpus.description}", file=sys.stderr)
        return corpus
    try:
        return cached_corpus(name, tokenizer, cache_dir, quiet=not is_main_process())
    except CorpusError as exc:
        if tokenizer is not None and "not in the vocabulary" in str(exc):
            raise CorpusError(f"{exc} of the checkpoint; resume on text the model knows") from None
        raise


