"""The figures shown of the model's inside are the model's: the probabilities are what generation
samples from (softmax(logits / temperature) over the top-k), the attention weights are the ones
the model's attention applies (they rebuild its output), and the per-character losses average
to the loss the evaluation computes for the same characters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import TINY_FLAGS, make_text, one_clear_line
from torch.nn import functional as F

from chargpt_tui.commands.cli import main
from model.attention import causal_self_attention, merge_heads, split_heads
from model.config import GPTConfig
from model.gpt import GPT
from model.inspection import attention_maps, char_class, char_losses, loss_by_class, next_char_probs

# float32 throughout; the model's fused attention (scaled_dot_product_attention) and the
# explicit softmax here add in different orders: agreement to 1e-5 of values of order 1 is
# float32 rounding, not a different computation (a wrong mask or scale differs by 1e-2 or more)
TOL = 1e-5


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=11, block_size=16, n_embed=32, n_layers=2, n_heads=4, dropout=0.2))
    # trained-looking weights: the initialisation's near-uniform attention would hide a wrong mask
    with torch.no_grad():
        for p in gpt.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return gpt.train()  # as a snapshot of a training run is: inspection must not use its dropout


def ids(n: int, seed: int = 1) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 11, (n,), generator=g).tolist()


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (0.7, None), (1.3, 4)])
def test_probabilities_are_softmax_of_the_logits_over_temperature(model: GPT, temperature: float,
                                                                  top_k: int | None) -> None:
    context = ids(10)
    probs = next_char_probs(model, context, temperature, top_k)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([context]))[0][0]
    model.train()
    expected = F.softmax(logits / temperature, dim=-1)
    if top_k is not None:
        kth = logits.topk(top_k).values[:, -1:]
        expected = F.softmax((logits / temperature).masked_fill(logits < kth, float("-inf")), dim=-1)
        assert ((probs > 0).sum(dim=-1) == top_k).all()
    torch.testing.assert_close(probs, expected, atol=TOL, rtol=0)
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(10), atol=TOL, rtol=0)
    assert model.training  # left as it was


def test_generation_samples_from_those_probabilities(model: GPT) -> None:
    context = ids(10)
    probs = next_char_probs(model, context, 0.8, 5)[-1]
    first = next(model.generate_stream(torch.tensor([context]), 1, 0.8, 5, torch.Generator().manual_seed(3)))
    assert int(first[0]) == int(torch.multinomial(probs[None], 1, generator=torch.Generator().manual_seed(3))[0, 0])


def test_attention_rows_sum_to_one_with_zeros_above_the_diagonal(model: GPT) -> None:
    maps = attention_maps(model, ids(12))
    assert maps.shape == (2, 4, 12, 12)
    torch.testing.assert_close(maps.sum(dim=-1), torch.ones(2, 4, 12), atol=TOL, rtol=0)
    assert (maps.triu(diagonal=1) == 0).all()
    assert maps[0, 0, 0, 0] == pytest.approx(1.0)  # the first character can only look at itself
    # not uniform: the test would pass for a wrong scale otherwise
    assert maps[:, :, -1].max() > 2 / 12


def test_attention_weights_are_the_ones_the_model_applies(model: GPT) -> None:
    """Each layer's weights times its values, projected, is the model's own attention output."""
    context = ids(14)
    maps = attention_maps(model, context)
    model.eval()
    with torch.no_grad():
        idx = torch.tensor([context])
        x = model.token_embedding(idx) + model.position_embedding(torch.arange(14))
        for layer, block in enumerate(model.blocks):
            qkv = block.sa.qkv(block.ln1(x))
            _, _, v = split_heads(qkv, block.sa.n_heads)
            rebuilt = merge_heads(maps[layer][None] @ v)
            torch.testing.assert_close(rebuilt, causal_self_attention(qkv, block.sa.n_heads, 0.0), atol=TOL, rtol=0)
            x = block(x)
    model.train()


def test_a_long_context_is_shown_for_its_last_block(model: GPT) -> None:
    context = ids(40)
    assert attention_maps(model, context).shape[-1] == 16
    torch.testing.assert_close(attention_maps(model, context), attention_maps(model, context[-16:]))


def test_per_character_losses_average_to_the_evaluations_loss(model: GPT) -> None:
    passage = ids(16 * 3 + 1)
    losses = char_losses(model, passage)
    assert losses.shape == (48,)
    model.eval()
    with torch.no_grad():
        # the evaluation's loss for the same rows: model(x, y)'s mean cross-entropy
        x = torch.tensor([passage[i:i + 16] for i in range(0, 48, 16)])
        y = torch.tensor([passage[i + 1:i + 17] for i in range(0, 48, 16)])
        _, loss = model(x, y)
        first_row = float(model(x[:1], y[:1])[1])
    model.train()
    assert float(losses.mean()) == pytest.approx(float(loss), abs=TOL)
    assert float(losses[:16].mean()) == pytest.approx(first_row, abs=TOL)


def test_the_kinds_of_character() -> None:
    text = "Hi, you.\nOK"
    kinds = [char_class(text[i], text[i - 1] if i else "") for i in range(len(text))]
    assert kinds == ["word start", "inside a word", "punctuation", "space", "word start", "inside a word",
                     "inside a word", "punctuation", "newline", "word start", "inside a word"]
    by_class = {c.name: c for c in loss_by_class(text, [float(i) for i in range(len(text) - 1)])}
    assert by_class["newline"].count == 1 and by_class["newline"].mean == 7.0
    assert by_class["word start"].count == 2 and by_class["word start"].mean == (3.0 + 8.0) / 2


# ---- `chargpt-tui inspect` ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inspect")
    text = root / "tiny.txt"
    text.write_text(make_text(), encoding="utf-8")
    assert main([str(text), *TINY_FLAGS, "--headless", "--out-dir", str(root / "run")]) == 0
    return root / "run" / "best.pt"


def test_inspect_prints_the_models_figures_plain_when_piped(checkpoint: Path, capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    from model.checkpoint import load_checkpoint, model_from_checkpoint

    passage = tmp_path / "passage.txt"
    passage.write_text(make_text(300, seed=5), encoding="utf-8")
    prompt = "The cat"
    assert main(["inspect", str(checkpoint), "--prompt", prompt, "--attention", "2.3", "--loss", str(passage),
                 "--temperature", "0.8"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # piped: plain
    model, tokenizer = model_from_checkpoint(load_checkpoint(checkpoint))
    probs = next_char_probs(model, tokenizer.encode(prompt), 0.8)
    lines = out.splitlines()
    start = lines.index("What it predicts (temperature 0.8)")
    shown = [line.split() for line in lines[start + 1:start + 1 + len(prompt)]]
    assert [row[0] for row in shown] == ["T", "h", "e", "␣", "c", "a", "t"]  # the first: nothing before it
    assert float(shown[3][1]) == pytest.approx(float(probs[2, tokenizer.encode(" ")[0]]), abs=1e-4)
    assert "Where it looks: layer 2, head 3" in out and "position 6 (t) looks at:" in out
    losses = char_losses(model, tokenizer.encode(passage.read_text()))
    assert f"mean loss {float(losses.mean()):.4f}" in out
    assert "inside a word" in out and "word start" in out


@pytest.mark.parametrize(("args", "fragment"), [
    (["--attention", "3.1"], "the model has 2 layers of 4 heads"),
    (["--attention", "3"], "--attention 3: the model has 2 layers"),
    (["--attention", "0.1"], "count from 1"),
    (["--attention", "x"], "a layer and head such as 1.2"),
    (["--prompt", "€"], "not in the checkpoint's vocabulary"),
    (["--loss", "/nonexistent/passage.txt"], "no such file"),
])
def test_inspect_bad_input_is_one_clear_line(checkpoint: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                             fragment: str) -> None:
    try:
        status = main(["inspect", str(checkpoint), *args])
    except SystemExit as exc:  # argparse's own checks end here, through the same one-line error
        status = exc.code
    assert status == 2
    out, err = capsys.readouterr()
    one_clear_line(err, fragment)
    assert out == ""  # nothing printed before the flags were found wrong


# ---- the dashboard's views: a (attention) and w (where it struggles), on a finished run -----------
async def test_the_dashboards_attention_and_struggles_views_show_the_models_figures(checkpoint: Path) -> None:
    from chargpt_tui.dashboard.app import ChargptApp
    from chargpt_tui.dashboard.screens import AttentionScreen, StrugglesScreen
    from chargpt_tui.dashboard.widgets.attention_map import AttentionMap
    from chargpt_tui.wire.passages import validation_passage
    from chargpt_tui.wire.run_link import RunOnDisk
    from model.checkpoint import load_checkpoint, model_from_checkpoint

    run_dir = checkpoint.parent
    model, tokenizer = model_from_checkpoint(load_checkpoint(run_dir / "best.pt"))  # a finished run: its best
    app = ChargptApp(RunOnDisk(run_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(200):
            await pilot.pause(0.05)
            if app.caught_up and app.samples.latest_iter is not None:
                break
        await pilot.press("a")
        screen = app.screen
        assert isinstance(screen, AttentionScreen)
        shown = screen.query_one(AttentionMap)
        for _ in range(200):
            await pilot.pause(0.05)
            if shown.maps:
                break
        prompt = app.samples.latest_text.strip("\n")[:64][-16:]  # its last block
        assert shown.chars == prompt
        expected = attention_maps(model, tokenizer.encode(prompt))
        torch.testing.assert_close(torch.tensor(shown.maps), expected, atol=TOL, rtol=0)
        assert shown.has_focus and shown.query_index == len(prompt) - 1
        assert (shown.layer_index, shown.head_index) == (0, 0)
        await pilot.press("up", "right", "right_square_bracket")
        assert (shown.query_index, shown.head_index, shown.layer_index) == (len(prompt) - 2, 1, 1)
        text = shown.render().plain
        assert "layer 2/2 · head 2/4" in text and f"position {len(prompt) - 2} (" in text
        await pilot.press("escape")
        await pilot.press("w")
        screen = app.screen
        assert isinstance(screen, StrugglesScreen)
        for _ in range(200):
            await pilot.pause(0.05)
            if screen.losses:
                break
        passage = validation_passage(run_dir)
        assert passage and screen.passage == passage
        expected_losses = char_losses(model, tokenizer.encode(passage))
        torch.testing.assert_close(torch.tensor(screen.losses), expected_losses, atol=TOL, rtol=0)
        mean = float(expected_losses.mean())
        assert f"mean loss {mean:.4f}" in str(screen.query_one("#struggles-problem").render())
        assert "inside a word" in str(screen.query_one("#struggles-table").render())


def test_the_attention_map_draws_a_prompt_shorter_than_its_window() -> None:
    """A prompt of 2 characters: the window is never wider or taller than the prompt (it indexed
    past the end: the dashboard crashed on "ab" + Enter)."""
    from chargpt_tui.dashboard.widgets.attention_map import AttentionMap

    shown = AttentionMap()
    shown.show("ab", [[[[1.0, 0.0], [0.3, 0.7]]]])
    text = shown.render().plain
    assert "layer 1/1 · head 1/1" in text and "position 1 (b) looks at: 1 (b) 0.700,  0 (a) 0.300" in text


@pytest.mark.parametrize("plain", [True, False])
def test_the_heatmaps_columns_stay_one_cell_each_for_wide_and_combining_characters(plain: bool) -> None:
    """A CJK character takes two cells, a combining accent none: as labels they pushed the rows
    of the heatmap out of line with the columns."""
    from rich.cells import cell_len

    from chargpt_tui.inside import render

    chars = "ab漢字c\u0301"
    n = len(chars)
    weights = [[1.0 / (q + 1) if k <= q else 0.0 for k in range(n)] for q in range(n)]
    lines = render.heatmap(chars, weights, plain=plain).plain.split("\n")
    assert {cell_len(line) for line in lines} == {2 + n}
    bars = render.top_k_bars([("漢", 0.5), ("a", 0.25)]).plain.split("\n")
    assert len({cell_len(line.split("%")[0]) for line in bars}) == 1  # the percentages line up


@pytest.mark.parametrize("scan_bytes", [16 << 20, 1024])
def test_the_struggles_passage_is_validation_text_when_the_last_tenth_is_in_another_script(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scan_bytes: int) -> None:
    """The split is at 90% of the characters; 90% of the bytes of a text whose first nine tenths
    are CJK (3 bytes a character) and last tenth ASCII is deep in the training text. With a
    short scan back from the end, the passage starts later in the split, still inside it."""
    import json

    from chargpt_tui.wire import passages

    monkeypatch.setattr(passages, "SCAN_BYTES", scan_bytes)
    train = ("漢字かな\n" * 6000)[:27000]
    val = ("plain ascii words\n" * 500)[:3000]
    text = train + val
    path = tmp_path / "mixed.txt"
    path.write_text(text, encoding="utf-8")
    assert int(0.9 * len(text)) == len(train)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"corpus": {"name": "mixed.txt", "path": str(path),
                                                            "n_chars": len(text)}}))
    passage = passages.validation_passage(run, chars=500)
    assert passage and len(passage) == 500 and passage in val
