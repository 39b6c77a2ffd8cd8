"""model/linear.py: Linear is nn.Linear, whichever way it multiplies."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import model.linear as linear_module
from model.linear import Linear, _onednn_linear_works

# Inputs of at least 4096 rows go through oneDNN (where it works); smaller ones do not.
BIG = (8, 512, 64)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [BIG, (4096, 64), (5, 64)])
def test_linear_equals_nn_linear_values_and_gradients(bias: bool, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    ours = Linear(64, 9, bias=bias)
    reference = nn.Linear(64, 9, bias=bias)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(shape, requires_grad=True)
    grad = torch.randn(*shape[:-1], 9)
    outputs = []
    for module in (ours, reference):
        y = module(x)
        grads = torch.autograd.grad(y, [x, *module.parameters()], grad)
        outputs.append((y, grads))
    (y, grads), (ref_y, ref_grads) = outputs
    torch.testing.assert_close(y, ref_y)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_on_the_cpu_in_float32_it_uses_onednn_where_it_works() -> None:
    if not _onednn_linear_works():
        pytest.skip("this PyTorch has no working oneDNN linear operator")
    y = Linear(64, 3)(torch.randn(BIG, requires_grad=True))
    assert y.grad_fn.name() == "_OneDNNLinearBackward"
    y = Linear(64, 3)(torch.randn(5, 64, requires_grad=True))  # small: F.linear
    assert y.grad_fn.name() != "_OneDNNLinearBackward"
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: plain F.linear, in bfloat16
        y = Linear(64, 3)(torch.randn(BIG))
    assert y.dtype == torch.bfloat16
    y = Linear(64, 3).double()(torch.randn(BIG, dtype=torch.float64, requires_grad=True))
    assert y.grad_fn.name() != "_OneDNNLinearBackward"


def test_without_the_operator_it_is_plain_f_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linear_module, "_onednn_linear_works", lambda: False)
    module = Linear(64, 3)
    y = module(torch.randn(BIG, requires_grad=True))
    assert y.grad_fn.name() != "_OneDNNLinearBackward"
    y.sum().backward()
    assert module.weight.grad is not None


def test_a_state_dict_is_nn_linears() -> None:
    assert Linear(4, 2).state_dict().keys() == nn.Linear(4, 2).state_dict().keys()
