"""`chargpt-tui inspect CKPT --prompt TEXT [--attention L.H] [--loss TEXT_FILE]`: what a
checkpoint's model does with a text, printed: the probability it gave each character of the
prompt and its most likely next characters; where a layer's heads look; the loss at each
character of a passage, and by kind of character. Coloured on a terminal, plain when piped."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

from chargpt_tui.inside import render

from .parsers import UsageError


def inspect_command(args: argparse.Namespace) -> int:
    from model.checkpoint import load_checkpoint, model_from_checkpoint
    from model.inspection import attention_maps, char_losses, loss_by_class, next_char_probs

    model, tokenizer = model_from_checkpoint(load_checkpoint(args.checkpoint))
    model.eval()
    plain = not sys.stdout.isatty()
    console = Console(highlight=False, no_color=plain, soft_wrap=True, emoji=False, markup=False)
    prompt = args.prompt or tokenizer.chars[tokenizer.start_id()]  # nothing typed: what generation starts from
    _known(tokenizer, prompt, "the prompt")
    # every flag checked before anything is printed
    n_layers, n_heads = model.config.n_layers, model.config.n_heads
    if args.attention:
        layer, head = args.attention
        if layer > n_layers or (head is not None and head > n_heads):
            asked = f"{layer}.{head}" if head is not None else f"{layer}"
            raise UsageError(f"--attention {asked}: the model has {n_layers} layers of {n_heads} heads")
    if args.loss:
        text = _read(args.loss, args.loss_chars)
        _known(tokenizer, text, args.loss)
    block = model.config.block_size
    window = prompt[-block:]
    ids = tokenizer.encode(window)

    # what it predicts
    probs = next_char_probs(model, ids, args.temperature, args.top_k)
    given = [None] + [float(probs[t, ids[t + 1]]) for t in range(len(ids) - 1)]
    sampled = f"temperature {args.temperature:g}" + (f", top-k {args.top_k}" if args.top_k else "")
    _heading(console, f"What it predicts ({sampled})" + (f": the last {block} characters" if len(prompt) > block
                                                         else ""))
    if plain:
        for char, p in zip(window, given):
            console.print(f"{render.visible(char)}\t{'' if p is None else f'{p:.4f}'}")
    else:
        console.print(render.probability_legend())
        console.print(render.shaded(window, given, render.probability_style))
    last = probs[-1]
    top = last.topk(min(args.show, int((last > 0).sum()))).indices.tolist()
    console.print(Text(f"\nnext after {render.visible(window[-1])!s}:"))
    console.print(render.top_k_bars([(tokenizer.chars[i], float(last[i])) for i in top]))

    if args.attention:
        maps = attention_maps(model, ids)[layer - 1]
        for h in [head] if head is not None else range(1, n_heads + 1):
            weights = maps[h - 1].tolist()
            _heading(console, f"Where it looks: layer {layer}, head {h} (a row a character, the columns what it "
                              "attends to)")
            if not plain:
                console.print(render.heat_legend())
            console.print(render.heatmap(window, weights, plain=plain))
            console.print(render.attention_row(window, weights[-1], len(window) - 1))

    if args.loss:
        losses = char_losses(model, tokenizer.encode(text)).tolist()
        mean = sum(losses) / len(losses) if losses else float("nan")
        _heading(console, f"Where it struggles: the first {len(text):,} characters of {Path(args.loss).name} "
                          f"(mean loss {mean:.4f})")
        if not plain:
            console.print(render.loss_legend())
        console.print(render.shaded(text, [None, *losses], render.loss_style, plain=plain))
        console.print()
        console.print(render.class_table([(c.name, c.count, c.mean) for c in loss_by_class(text, losses)]))
    return 0


def _heading(console: Console, text: str) -> None:
    console.print()
    console.print(Text(text, style="bold"))


def _known(tokenizer, text: str, what: str) -> None:  # noqa: ANN001
    unknown = tokenizer.unknown_chars(text)
    if unknown:
        shown = " ".join(repr(c) for c in unknown[:10])
        raise UsageError(f"{what} has characters that are not in the checkpoint's vocabulary: {shown}")


def _read(path: str, chars: int) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(chars)
    except FileNotFoundError:
        raise UsageError(f"--loss {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--loss {path}: cannot read it as UTF-8 text ({exc})") from None
    if len(text) < 2:
        raise UsageError(f"--loss {path}: needs at least two characters")
    return text
