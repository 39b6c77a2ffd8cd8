"""Where a float32 training step at the seed's settings goes, by taking parts away.

    python benchmarks/step_budget.py [TEXT] [--rounds 4] [--steps 6]

One process, one Trainer, windows of `--steps` training steps that alternate between:
- `as is`: the step as `chargpt-tui` trains it (attention with dropout, model/attention.py);
- `sdpa, no attn dropout`: attention through PyTorch's fused scaled_dot_product_attention
  without dropout (what the attention would cost with PyTorch's own fused CPU kernel, which
  refuses dropout);
- `no attention`: each block's attention output replaced by its values (the step without
  attention at all: the linear layers, LayerNorms, dropouts, loss and optimizer);
then the median of each, and each part's share. Plus the linear layers' products alone (the
same shapes, forward and backward) and the machine's float32 peak through oneDNN on a 4096 x
4096 product, so that what is left for attention can be read against both. Run alone on the
machine (its CPU is printed first); the windows alternate so that drift hits all alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model import gpt  # noqa: E402
from model.attention import merge_heads, split_heads  # noqa: E402
from model.benchmark import load_corpus  # noqa: E402
from model.config import GPTConfig, TrainConfig  # noqa: E402
from model.device import tune_malloc  # noqa: E402
from model.trainer import Trainer  # noqa: E402

AS_IS = gpt.causal_self_attention


def sdpa_without_dropout(qkv: torch.Tensor, n_heads: int, dropout_p: float) -> torch.Tensor:
    q, k, v = split_heads(qkv, n_heads)
    return merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=True))


def no_attention(qkv: torch.Tensor, n_heads: int, dropout_p: float) -> torch.Tensor:
    return qkv[..., 2 * (qkv.shape[-1] // 3) :] * 1.0


VARIANTS = {"as is": AS_IS, "sdpa, no attn dropout": sdpa_without_dropout, "no attention": no_attention}


def linears_alone(model_config: GPTConfig, tokens: int, rounds: int = 5) -> float:
    """ms for forward + backward of every Linear of the model at a step's rows (their inputs
    random), through the model's own Linear class."""
    C = model_config.n_embed
    shapes = [(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)] * model_config.n_layers + [(C, model_config.vocab_size)]
    layers = [gpt.Linear(i, o, bias=(i, o) != (C, 3 * C)) for i, o in shapes]
    inputs = {i: torch.randn(tokens, i, requires_grad=True) for i in {s[0] for s in shapes}}
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for layer, (i, o) in zip(layers, shapes):
            layer(inputs[i]).backward(torch.ones(tokens, o))
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[1:])


def onednn_peak() -> float:
    """GFLOP/s of a 4096 x 4096 float32 product through oneDNN (the machine's peak, nearly)."""
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    product = torch.ops.mkldnn._linear_pointwise
    product(a, b, None, "none", [], "")
    start = time.perf_counter()
    for _ in range(3):
        product(a, b, None, "none", [], "")
    return 3 * 2 * 4096**3 / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("text", nargs="?")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    tune_malloc()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"cpu: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    corpus, _ = load_corpus(args.text)
    model_config = GPTConfig(vocab_size=corpus.tokenizer.vocab_size)
    trainer = Trainer(corpus, model_config, TrainConfig(dtype="float32"))
    it = 0
    for _ in range(3):
        trainer.train_step(it)
        it += 1
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            gpt.causal_self_attention = VARIANTS[name]
            trainer.train_step(it)  # one untimed step after each change
            it += 1
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step(it)
                it += 1
            times[name].append((time.perf_counter() - start) / args.steps * 1000)
    gpt.causal_self_attention = AS_IS
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:24s} {medians[name]:6.0f} ms a step (windows: {', '.join(f'{x:.0f}' for x in t)})")
    base = medians["no attention"]
    print(
        f"attention with dropout: {medians['as is'] - base:.0f} ms a step "
        f"({(medians['as is'] - base) / medians['as is']:.0%} of it); PyTorch's fused kernel without dropout: "
        f"{medians['sdpa, no attn dropout'] - base:.0f} ms"
    )
    tokens = TrainConfig().batch_size * model_config.block_size
    print(
        f"the linear layers alone (forward + backward, {tokens} rows): {linears_alone(model_config, tokens):.0f} ms; "
        f"float32 peak through oneDNN: {onednn_peak():.0f} GFLOP/s"
    )


if __name__ == "__main__":
    main()
