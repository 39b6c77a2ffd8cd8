"""A Trainer's samples: text generated from a neutral start at sample_interval, from a generator
of its own (an extra sample never changes training's batches), and one early sample in a slow run."""

from __future__ import annotations

from typing import Any

import torch

from . import events as ev
from .config import TrainConfig
from .gpt import GPT
from .reporting import Reporter
from .tokenizer import CharTokenizer

# A slow run shows one sample after this much training, when its first scheduled one is further off.
EARLY_SAMPLE_AFTER_S = 60.0


class Sampler:
    def __init__(self, model: GPT, tokenizer: CharTokenizer, config: TrainConfig, device: torch.device,
                 reports: Reporter) -> None:
        self.model, self.tokenizer, self.config, self.device, self.reports = model, tokenizer, config, device, reports
        self.generator = torch.Generator(device=device).manual_seed(config.seed + 2)
        # The early sample draws from a generator of its own: whether it was taken depends on the
        # machine's speed, the scheduled ones must not.
        self.early_generator = torch.Generator(device=device).manual_seed(config.seed + 3)
        self.early_after_s = EARLY_SAMPLE_AFTER_S
        self.early_taken = False

    def due(self, it: int) -> bool:
        """A scheduled sample: every sample_interval and at the end (none at step 0)."""
        return (it % self.config.sample_interval == 0 or it == self.config.max_iters) and it > 0

    def early_due(self, it: int, one_process: bool) -> bool:
        """One sample early in a slow run: once it has trained for early_after_s, if the first
        scheduled sample is still more than that away (at the seed's settings on a slow CPU, step
        500 is ten minutes in). The schedule goes on as before after it. Decided by one process's
        clock: never where several must agree."""
        first = min(self.config.sample_interval, self.config.max_iters)  # the first scheduled sample
        steps, steps_s = self.reports.steps_timed, self.reports.steps_timed_s
        if not one_process or self.early_taken or it == 0 or it >= first or steps == 0:
            return False
        if steps_s < self.early_after_s:
            return False
        return (first - it) * (steps_s / steps) > self.early_after_s

    def context(self) -> torch.Tensor:
        """One newline (when the vocabulary has it, else the first character): a neutral start."""
        return torch.tensor([[self.tokenizer.start_id()]], dtype=torch.long, device=self.device)

    def sample(self, it: int, early: bool = False) -> None:
        """Generate sample_tokens characters in eval mode and report them."""
        context = self.context()
        self.model.eval()
        try:
            generator = self.early_generator if early else self.generator
            ids = self.model.generate(context, self.config.sample_tokens, generator=generator)
        finally:
            self.model.train()
        text = self.tokenizer.decode(ids[0, context.shape[1]:].tolist())
        self.reports.emit(ev.SampleGenerated(it, self.reports.clock.time_s(), text))

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}
