"""model/linear.py: Linear is nn.Linear, whichever way it multiplies."""

from __future__ import annotations

import platform

import pytest
import torch
import torch.nn as nn

import model.linear as linear_module
from model.linear import Linear, _onednn_linear_works

# Inputs of at least 4096 rows go through oneDNN (where it works); smaller ones do not.
BIG = (8, 512, 64)


def _takes_onednn(shape: tuple[int, ...]) -> bool:
    """Which path an input of this shape must take: oneDNN for 4096 rows or more, where it works."""
    rows = 1
    for n in shape[:-1]:
        rows *= n
    return _onednn_linear_works() and rows >= 4096


def _path(y: torch.Tensor) -> str:
    return "onednn" if y.grad_fn is not None and y.grad_fn.name() == "_OneDNNLinearBackward" else "f.linear"


def _inputs(shape: tuple[int, ...], layout: str) -> torch.Tensor:
    torch.manual_seed(1)
    if layout == "transposed":  # the same shape, its first two dimensions swapped in memory
        return torch.randn(shape[1], shape[0], *shape[2:]).transpose(0, 1)
    if layout == "strided":  # every other feature of a wider tensor
        return torch.randn(*shape[:-1], 2 * shape[-1])[..., ::2]
    return torch.randn(shape)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "shape, layout",
    [(BIG, "contiguous"), (BIG, "transposed"), (BIG, "strided"), ((4096, 64), "contiguous"), ((5, 64), "contiguous")],
)
def test_linear_equals_nn_linear_values_and_gradients(bias: bool, shape: tuple[int, ...], layout: str) -> None:
    torch.manual_seed(0)
    ours = Linear(64, 9, bias=bias)
    reference = nn.Linear(64, 9, bias=bias)
    reference.load_state_dict(ours.state_dict())
    x = _inputs(shape, layout).requires_grad_()
    assert x.is_contiguous() == (layout == "contiguous")
    grad = torch.randn(*shape[:-1], 9)
    outputs = []
    for module in (ours, reference):
        y = module(x)
        grads = torch.autograd.grad(y, [x, *module.parameters()], grad)
        outputs.append((y, grads))
    (y, grads), (ref_y, ref_grads) = outputs
    assert _path(y) == ("onednn" if _takes_onednn(shape) else "f.linear")
    torch.testing.assert_close(y, ref_y)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_an_input_without_grad_gives_the_weight_gradients_alone() -> None:
    torch.manual_seed(2)
    ours, reference = Linear(64, 9), nn.Linear(64, 9)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(BIG)  # no requires_grad: the first layer's input, say
    grad = torch.randn(*BIG[:-1], 9)
    y = ours(x)
    assert _path(y) == ("onednn" if _takes_onednn(BIG) else "f.linear")
    y.backward(grad)
    reference(x).backward(grad)
    assert x.grad is None
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad)
    torch.testing.assert_close(ours.bias.grad, reference.bias.grad)
    with torch.no_grad():  # evaluation: no graph at all, the same values
        torch.testing.assert_close(ours(x), reference(x))


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available(),
    reason="the oneDNN path is taken on x86-64 with PyTorch's oneDNN only",
)
def test_on_x86_64_the_onednn_path_is_available() -> None:
    # the speed README.md quotes depends on it: a PyTorch that lost or changed the operator
    # must show here, not as a quietly slower training
    assert _onednn_linear_works()


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
