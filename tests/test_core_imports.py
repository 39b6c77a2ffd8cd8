"""model/ is the core: importing it and training a step must not pull in the UI."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_training_a_step_leaves_textual_out() -> None:
    code = textwrap.dedent(
        """
        import sys
        import model
        from model.config import GPTConfig, TrainConfig
        from model.data import Corpus
        from model.trainer import Trainer

        corpus = Corpus.from_text("hello world, " * 200, "tiny")
        mc = GPTConfig(vocab_size=corpus.tokenizer.vocab_size, block_size=8, n_embed=16, n_layers=1, n_heads=2)
        tc = TrainConfig(batch_size=2, max_iters=1, eval_interval=1, eval_iters=1, device="cpu")
        assert Trainer(corpus, mc, tc).run().status == "finished"
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "textual_plotext", "chargpt_tui"))
        print(leaked)
        sys.exit(1 if leaked else 0)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
