"""nn.Linear whose float32 CPU products go through oneDNN, which is faster on these CPUs.

PyTorch computes a float32 nn.Linear on the CPU with MKL's sgemm. Its own oneDNN library has
the same product as an operator, ``torch.ops.mkldnn._linear_pointwise`` (what torch.compile
emits for CPU linear layers), and at this model's shapes (16384 rows of 128 or 512 features) it
runs at the machine's peak where sgemm reaches 75-90% of it. Measured on a 2-core AMD EPYC,
forward + backward of the four Linear layers of one block: 121 ms instead of 137 ms.

`Linear` is nn.Linear (same parameters, same state_dict, same results up to float rounding)
whose forward uses that operator for the output and, in the backward pass, for the gradient
of the input; the weight gradient stays with sgemm, which is the faster of the two for it.
Anywhere else (another device or dtype, autocast, small inputs, a CPU other than x86-64, a
PyTorch without the operator or with a different signature for it) it is plain F.linear.
"""

from __future__ import annotations

import functools
import platform

import torch
import torch.nn as nn
from torch.nn import functional as F

# Inputs of fewer rows (generation's) stay with F.linear: its calls cost less (~20 us against
# ~300 us for a few hundred rows), and the products are too small for the speed to matter.
_ONEDNN_MIN_ROWS = 4096


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype == self.weight.dtype == torch.float32
            and x.numel() >= _ONEDNN_MIN_ROWS * x.shape[-1]
            and not torch.is_autocast_enabled("cpu")
            and _onednn_linear_works()
        ):
            return _OneDNNLinear.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (N, in) @ weight (out, in)^T + bias: a new (N, out) tensor."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@functools.cache
def _onednn_linear_works() -> bool:
    """Whether this PyTorch has the operator and it computes F.linear (checked once). Only on
    x86-64, where it was measured; elsewhere (Apple silicon, ARM servers) sgemm's backend is
    another library, and no faster oneDNN was measured."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        # both products the layer uses it for: the output, and the input's gradient (through
        # the transposed weight, without bias)
        generator = torch.Generator().manual_seed(0)
        x, weight, bias, grad = (
            torch.randn(shape, generator=generator) for shape in ((70, 48), (40, 48), (40,), (70, 40))
        )
        w_t = weight.t().contiguous()
        return torch.allclose(_onednn_linear(x, weight, bias), F.linear(x, weight, bias), atol=1e-4) and torch.allclose(
            _onednn_linear(grad, w_t, None), F.linear(grad, w_t), atol=1e-4
        )
    except (AttributeError, RuntimeError, TypeError):
        return False


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:  # type: ignore[override]
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        ctx.save_for_backward(rows, weight)
        ctx.input_shape, ctx.has_bias = x.shape, bias is not None
        return _onednn_linear(rows, weight, bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        rows, weight = ctx.saved_tensors
        grad = grad_out.reshape(-1, grad_out.shape[-1]).contiguous()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_linear(grad, weight.t().contiguous(), None).view(ctx.input_shape)
        if ctx.needs_input_grad[1]:
            grad_weight = grad.t() @ rows
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_x, grad_weight, grad_bias
