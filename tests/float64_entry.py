"""`chargpt-tui` with float64 as PyTorch's default dtype: the model's weights, activations and
gradients in float64. For tests that compare two ways of computing the same training (one
process or several) closely: see test_distributed.py's test_two_processes_train_as_one.

    python tests/float64_entry.py TEXT [flags]         (or as torchrun's script)
"""


import torch

torch.set_default_dtype(torch.float64)

from chargpt_tui.commands.cli import entry_point  # noqa: E402 - after the default dtype is set

entry_point()
