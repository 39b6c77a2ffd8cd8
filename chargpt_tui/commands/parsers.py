"""The flags of each command (argparse), and how bad usage ends: one line, exit status 2."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, NoReturn

from chargpt_tui import __version__
from model.config import (
    DEVICES,
    DTYPES,
    LR_SCHEDULES,
    OPTIMIZERS,
    PRESETS,
    TEMPERATURE_RULE,
    temperature_ok,
)

PROG = "chargpt-tui"
EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad usage or bad input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of argparse's usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---- argument types: each rejects bad values with a message argparse prints in one line ------
def _number(kind: Callable[[str], Any], test: Callable[[Any], bool], wanted: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not test(value) or value != value:  # value != value: NaN
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    parse.__name__ = wanted
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive number")
# torch's generators take 64-bit seeds (2**63 and up overflowed with a traceback); the run seeds
# a few of its own from seed + 1, 2, 3
seed_int = _number(int, lambda v: 0 <= v < 2**63 - 8, "an integer >= 0 below 2**63 - 8")
# threads past a few a core only slow a run, and far past (100,000) crashed PyTorch without a word
MAX_THREADS = 4 * (os.cpu_count() or 1)
threads_int = _number(int, lambda v: 0 < v <= MAX_THREADS, f"a positive integer up to {MAX_THREADS} "
                      f"(four a core of this machine's {os.cpu_count() or 1})")
non_negative_float = _number(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
dropout_float = _number(float, lambda v: 0 <= v < 1, "a dropout rate in [0, 1)")


# Flags that become config fields (dest -> field name is the same).
MODEL_FLAGS = ("block_size", "n_embed", "n_layers", "n_heads", "dropout")
TRAIN_FLAGS = (
    "batch_size", "grad_accum", "max_iters", "eval_interval", "eval_iters", "learning_rate", "lr_schedule",
    "warmup_iters", "min_lr", "weight_decay", "grad_clip", "sample_interval", "sample_tokens", "device", "dtype",
    "threads", "seed", "optimizer", "muon_lr", "muon_momentum",
)


def _add_model_flags(group: Any) -> None:
    group.add_argument("--block-size", type=positive_int, help="context length in characters (256)")
    group.add_argument("--n-embed", type=positive_int, help="embedding width (128)")
    group.add_argument("--n-layers", type=positive_int, help="transformer blocks (4)")
    group.add_argument("--n-heads", type=positive_int, help="attention heads per block; must divide --n-embed (4)")
    group.add_argument("--dropout", type=dropout_float, help="dropout rate in [0, 1) (0.2)")


def _add_device_flags(group: Any) -> None:
    group.add_argument("--device", choices=DEVICES, help="auto picks CUDA, then Apple MPS, then CPU (auto)")
    group.add_argument("--dtype", choices=DTYPES,
                       help="auto: on a CPU with native bfloat16, whichever of float32 and bfloat16 a short probe "
                            "finds faster for this model; on a GPU bfloat16, or float16 where it has none; else "
                            "float32; or float32, bfloat16, float16 (CUDA only) (auto)")
    group.add_argument("--threads", type=threads_int,
                       help="torch CPU threads (as many as cores other processes leave free, followed as it runs)")
    group.add_argument("--seed", type=seed_int, help="random seed (1337)")


def train_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Train a character-level GPT on a text file and watch it learn. The run trains in a "
        f"process of its own: press d to detach, '{PROG} attach' to come back, '{PROG} runs' to list runs. "
        f"Also: '{PROG} sample CKPT' prints text from a checkpoint.",
        epilog="Presets: " + "; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items()),
    )
    p.add_argument("text", nargs="?", metavar="TEXT",
                   help="UTF-8 text file to train on (default: the Python standard library's sources)")
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="hyperparameter recipe (default: cpu on a machine without a GPU, else seed)")
    _add_model_flags(p.add_argument_group("model (default: the preset's; the seed's in brackets)"))
    t = p.add_argument_group("training (default: the preset's; the seed's in brackets)")
    t.add_argument("--batch-size", type=positive_int,
                   help="sequences per step, over all processes of a torchrun job (64)")
    t.add_argument("--grad-accum", type=positive_int,
                   help="split each step's batch into this many micro-batches, for less memory (1)")
    t.add_argument("--max-iters", type=positive_int, help="training steps (5000)")
    t.add_argument("--eval-interval", type=positive_int, help="steps between evaluations (500)")
    t.add_argument("--eval-iters", type=positive_int, help="batches per split in an evaluation (200)")
    t.add_argument("--learning-rate", type=positive_float, help="AdamW learning rate (3e-4)")
    t.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="adamw everywhere (the seed), or muon: Muon for the blocks' weight matrices at --muon-lr, "
                   "AdamW for embeddings, head, biases and LayerNorm at --learning-rate (adamw)")
    t.add_argument("--muon-lr", type=positive_float, help="Muon's learning rate, on the same schedule (0.02)")
    t.add_argument("--muon-momentum", type=_number(float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
                   help="Muon's momentum (0.95)")
    t.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="constant (the seed) or warmup + cosine decay")
    t.add_argument("--warmup-iters", type=non_negative_int, help="linear warmup steps (0)")
    t.add_argument("--min-lr", type=non_negative_float, help="learning rate at the end of cosine decay (3e-5)")
    t.add_argument("--weight-decay", type=non_negative_float, help="AdamW weight decay on weight matrices (0.01)")
    t.add_argument("--grad-clip", type=non_negative_float, help="clip the gradient norm to this; 0: off (0)")
    t.add_argument("--sample-interval", type=positive_int, help="steps between text samples (500)")
    t.add_argument("--sample-tokens", type=positive_int, help="characters in each sample (200)")
    r = p.add_argument_group("running")
    _add_device_flags(r)
    r.add_argument("--out-dir", metavar="DIR",
                   help="run directory (default: runs/<text>-<time>; on resume: the checkpoint's; "
                   "a fork's: beside its parent)")
    r.add_argument("--resume", metavar="CKPT", help="continue training from a checkpoint")
    r.add_argument("--fork", metavar="RUN_DIR[@best|@latest]",
                   help="start a new run from another run's checkpoint (latest unless @best), with the "
                   "flags given changed (not the model's shape; dropout may change)")
    _add_cache_flag(r)
    r.add_argument("--headless", action="store_true", help="plain log lines instead of the dashboard")
    r.add_argument("--on-hangup", choices=("detach", "stop"), default="detach",
                   help="when the terminal goes away (SIGHUP): training goes on (detach), or stops with a "
                   "checkpoint (stop) (detach)")
    r.add_argument("--spawned", action="store_true", help=argparse.SUPPRESS)  # the dashboard's training process
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return p


def _add_cache_flag(group: Any) -> None:
    group.add_argument("--cache-dir", metavar="DIR",
                       help="where a text's token cache is kept (default: $CHARGPT_TUI_CACHE_DIR, else "
                       "$XDG_CACHE_HOME/chargpt-tui/corpora, else ~/.cache/chargpt-tui/corpora)")


def prepare_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} prepare", description="Encode a text once into its token cache (ids read through a "
                "memory map, so texts larger than memory train in little of it). Training does this by itself "
                "when the cache is missing or stale; this does it ahead of time, with a progress bar.")
    p.add_argument("text", metavar="TEXT", help="UTF-8 text file")
    _add_cache_flag(p)
    return p


def sample_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} sample", description="Print the prompt, then text generated by a checkpoint.")
    p.add_argument("checkpoint", metavar="CKPT", help="a ckpt.pt or best.pt from a run directory")
    p.add_argument("--prompt", default="", help="text to continue (default: start from nothing)")
    p.add_argument("--max-new-tokens", type=non_negative_int, default=500, help="characters to generate (500)")
    p.add_argument("--temperature", type=_number(float, temperature_ok, TEMPERATURE_RULE), default=1.0,
                   help=f"sampling temperature, {TEMPERATURE_RULE} (1.0)")
    p.add_argument("--top-k", type=positive_int, default=None, help="sample only from the k most likely characters")
    p.add_argument("--seed", type=seed_int, default=1337, help="random seed (1337)")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="where to run the model (cpu)")
    return p


def inspect_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} inspect", description="What a checkpoint's model does with a text: the probability "
                "it gave each character and its most likely next ones; where a layer and head looks "
                "(--attention); the loss at each character of a passage (--loss). Colours on a terminal, plain "
                "text when piped.")
    p.add_argument("checkpoint", metavar="CKPT", help="a ckpt.pt or best.pt from a run directory")
    p.add_argument("--prompt", default="", help="the text to look at (its last block_size characters)")
    p.add_argument("--attention", metavar="L.H", type=_layer_head,
                   help="the attention weights of layer L, head H (from 1), or of every head of layer L (L)")
    p.add_argument("--loss", metavar="TEXT_FILE", help="the loss of each character of the start of a text file")
    p.add_argument("--loss-chars", type=positive_int, default=1000, help="characters of it to look at (1000)")
    p.add_argument("--temperature", type=_number(float, temperature_ok, TEMPERATURE_RULE), default=1.0,
                   help=f"as generation would sample, {TEMPERATURE_RULE} (1.0)")
    p.add_argument("--top-k", type=positive_int, default=None, help="as generation would sample: the k most likely")
    p.add_argument("--show", type=positive_int, default=10, help="next characters listed (10)")
    return p


def _layer_head(text: str) -> tuple[int, int | None]:
    layer, _, head = text.partition(".")
    try:
        parsed = int(layer), int(head) if head else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a layer and head such as 1.2, or a layer such as 1") from None
    if parsed[0] < 1 or (parsed[1] is not None and parsed[1] < 1):
        raise argparse.ArgumentTypeError(f"{text!r}: layers and heads count from 1")
    return parsed


def attach_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} attach", description="Open the dashboard on a run: live if it is training, else "
                "as it was left. Detach with d; the run goes on.")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                   help="the run directory (default: the run training under runs/; a choice if several are)")
    p.add_argument("--read-only", action="store_true",
                   help="watch and generate only: the keys that steer training (pause, save, evaluate, stop) "
                   "do nothing")
    p.add_argument("--root", default="runs", help=argparse.SUPPRESS)
    p.add_argument("--browser", action="store_true", help=argparse.SUPPRESS)  # a tab's viewer, started by serve
    return p


def serve_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} serve", description="Serve the dashboard of a run (or the runs browser of a folder of "
                "runs) to a browser: each tab is one more viewer. The address printed carries a token; without it "
                "the page is refused.")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR | DIR",
                   help="a run directory, or a folder of them (default: the run training under runs/)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (127.0.0.1: this machine only; forward it with ssh -L)")
    p.add_argument("--port", type=_number(int, lambda v: 0 <= v <= 65535, "a port number (0: any free one)"),
                   default=8000, help="port to listen on; 0: any free port (8000)")
    p.add_argument("--read-only", action="store_true",
                   help="a view in which the keys that steer training (pause, save, evaluate, stop) do nothing")
    p.add_argument("--max-tabs", type=positive_int, default=8,
                   help="tabs open at once, each a viewer process of the run (8); the next is told so")
    p.add_argument("--root", default="runs", help=argparse.SUPPRESS)
    return p


def runs_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} runs", description="The runs in a folder: state, step, best validation loss, "
                "training time, text and the settings that differ. On a terminal, a browser of them: sort, "
                "filter, compare their curves (space), open (Enter), generate (g), fork (f). Piped: a table.")
    p.add_argument("dir", nargs="?", metavar="DIR", help="the folder of run directories (runs)")
    p.add_argument("--json", action="store_true", help="one JSON object per run, a line each")
    p.add_argument("--plain", action="store_true", help="the table as text, also on a terminal")
    p.add_argument("--read-only", action="store_true", help="open runs read-only, and start no forks")
    p.add_argument("--browser", action="store_true", help=argparse.SUPPRESS)  # a tab's browser, started by serve
    return p


def bench_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=f"{PROG} bench",
        description="Time training steps and generation at the given settings (default: the seed's) "
        "and print one JSON object, keyed like the seed script's own benchmark output.",
    )
    p.add_argument("--text", metavar="TEXT", default=None,
                   help="text file to load and train on (default: the built-in corpus)")
    p.add_argument("--batch-size", type=positive_int, help="sequences per step (64)")
    _add_model_flags(p)
    _add_device_flags(p)
    p.add_argument("--steps", type=non_negative_int, default=10, help="timed training steps; 0: none (10)")
    p.add_argument("--warmup", type=non_negative_int, default=3, help="untimed training steps first (3)")
    p.add_argument("--gen-tokens", type=non_negative_int, default=500,
                   help="characters generated from one, timed; 0: none (500)")
    return p


