"""The generation prompt shows what the model expected: each generated character shaded by the
probability it was drawn with, and at a cursor the distribution it was drawn from. Those are
the model's figures: softmax(logits / temperature) over the top-k, of the snapshot generated from."""

from __future__ import annotations

import pytest
import torch
from helpers import make_text
from textual.app import App
from textual.widgets import Input, Static

from chargpt_tui.dashboard.screens import GenerateScreen
from chargpt_tui.dashboard.widgets.generated_text import GeneratedText
from chargpt_tui.inside.render import probability_style
from model.config import GPTConfig
from model.gpt import GPT
from model.inspection import next_char_probs
from model.tokenizer import CharTokenizer

TOL = 1e-5  # float32: the cached decode path and a whole forward pass add in different orders


class Host(App[None]):
    CSS_PATH = "../chargpt_tui/dashboard/screens.tcss"

    def __init__(self, model: GPT, tokenizer: CharTokenizer) -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer

    def on_mount(self) -> None:
        self.push_screen(GenerateScreen(lambda: self.model, self.tokenizer, source="a test model"))


async def generate(pilot, app: App, tokens: int, top_k: str = "") -> GenerateScreen:  # noqa: ANN001
    """In the prompt (opened by Host): "the ", `tokens` characters at temperature 0.8, top_k;
    Enter, and the screen once they have all come."""
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, GenerateScreen)
    for field, value in (("#prompt", "the "), ("#max-tokens", str(tokens)), ("#temperature", "0.8"),
                         ("#top-k", top_k)):
        screen.query_one(field, Input).value = value
    await pilot.press("enter")
    for _ in range(400):
        await pilot.pause(0.02)
        if len(screen.generated) == tokens:
            break
    return screen


@pytest.fixture(scope="module")
def model_and_tokenizer() -> tuple[GPT, CharTokenizer]:
    tokenizer = CharTokenizer(make_text(2000))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_embed=32, n_layers=2, n_heads=4,
                          dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # sharp distributions: a wrong one would show
    return model.eval(), tokenizer


async def test_each_generated_character_is_shaded_by_the_probability_it_was_drawn_with(
        model_and_tokenizer: tuple[GPT, CharTokenizer]) -> None:
    model, tokenizer = model_and_tokenizer
    app = Host(model, tokenizer)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await generate(pilot, app, 20, top_k="5")
        shown = screen.query_one(GeneratedText)
        assert len(screen.generated) == 20 and len(shown.tops) == 20
        text = "the " + screen.generated
        for i, char in enumerate(screen.generated):
            expected = next_char_probs(model, tokenizer.encode(text[:4 + i]), 0.8, 5)[-1]
            kept = dict(shown.tops[i])  # top-k 5: every character it could have drawn
            assert set(kept) == set(expected.nonzero()[:, 0].tolist())
            torch.testing.assert_close(torch.tensor([kept[j] for j in sorted(kept)]), expected[sorted(kept)],
                                       atol=TOL, rtol=0)
            assert shown.probs[i] == pytest.approx(float(expected[tokenizer.stoi[char]]), abs=TOL)
        rendered = shown.render()
        assert rendered.plain.startswith("the ")
        styles = [span.style for span in rendered.spans]
        assert styles[0] == probability_style(shown.probs[0])  # the first generated character's shade
        # the cursor: Tab to the text, then left: the distribution of the character before the last
        for _ in range(6):
            if shown.has_focus:
                break
            await pilot.press("tab")
        assert shown.has_focus and shown.cursor == 19
        await pilot.press("left")
        assert shown.cursor == 18
        panel = str(screen.query_one("#generate-top-k", Static).render())
        p = 100 * shown.probs[18]
        assert "character 19: " in panel and f"drawn with {p:.1f}%" in panel


async def test_what_is_kept_of_each_distribution_does_not_grow_with_the_vocabulary(
        model_and_tokenizer: tuple[GPT, CharTokenizer]) -> None:
    """With no top-k a character is drawn from the whole vocabulary; the prompt keeps only the
    most likely few of each (a text of 3,000 distinct characters kept 580 MB for 5,000)."""
    from chargpt_tui.dashboard.screens.generate import TOP_K_SHOWN

    model, tokenizer = model_and_tokenizer
    app = Host(model, tokenizer)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await generate(pilot, app, 10)  # no top-k: the whole vocabulary
        shown = screen.query_one(GeneratedText)
        assert tokenizer.vocab_size > TOP_K_SHOWN and len(shown.tops) == 10
        text = "the " + screen.generated
        for i in range(10):
            expected = next_char_probs(model, tokenizer.encode(text[:4 + i]), 0.8, None)[-1]  # the default 0.8
            assert len(shown.tops[i]) == TOP_K_SHOWN
            assert [p for _, p in shown.tops[i]] == pytest.approx(expected.topk(TOP_K_SHOWN).values.tolist(), abs=TOL)


def test_generating_with_distributions_draws_the_same_characters(model_and_tokenizer: tuple[GPT, CharTokenizer]
                                                                 ) -> None:
    model, tokenizer = model_and_tokenizer
    context = torch.tensor([tokenizer.encode("the cat ")])
    plain = model.generate(context, 60, 0.9, 7, torch.Generator().manual_seed(5))
    drawn: list[torch.Tensor] = []
    kept = list(model.generate_stream(context, 60, 0.9, 7, torch.Generator().manual_seed(5), distributions=drawn))
    assert torch.equal(torch.stack(kept, dim=1), plain[:, context.shape[1]:]) and len(drawn) == 60


def test_the_text_kept_is_bounded() -> None:
    """A generation of 999,999 characters (the most the prompt takes) must not keep a distribution
    of each, nor redraw them all at every chunk: the latest MAX_KEPT are kept and shown."""
    from chargpt_tui.dashboard.widgets.generated_text import MAX_KEPT

    shown = GeneratedText()
    shown.start("the ")
    for _ in range(30):
        shown.add("ab" * 200, [0.5] * 400, [((0, 0.5), (1, 0.5))] * 400)
    assert len(shown.chars) == len(shown.probs) == len(shown.tops) <= MAX_KEPT
    assert shown.dropped + len(shown.chars) == 12_000
    assert shown.render().plain.startswith(f"… {shown.dropped:,} earlier characters")
