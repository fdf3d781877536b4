"""bias_act on the CUDA kernel: autograd Functions with first and second derivatives.

The kernel has three modes (see csrc/ops.h): 0 = forward, 1 = dx from dy (the activation's
derivative read from the saved output y, or from x for swish), 2 = the derivative of mode 1 with
respect to x (the activation's second derivative). Functions are built once per set of static
arguments and cached.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import torch

from ._dispatch import KERNEL_DTYPES  # one definition, shared with the dispatch
from .bias_act import activation_funcs


def _ext() -> ModuleType:
    """The built extension (raises BuildError with the reason if it cannot be built)."""
    from ._build import get_extension

    return get_extension(strict=True)


def _reduce_to_bias(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over every dimension but `dim` (the bias gradient)."""
    return t.sum([i for i in range(t.ndim) if i != dim])


@functools.cache
def _functions(dim: int, act: str, alpha: float, gain: float, clamp: float) -> type[torch.autograd.Function]:
    """The forward Function for one set of static arguments (its gradient Functions come with it)."""
    spec = activation_funcs[act]
    act_idx = spec.cuda_idx
    identity_grad = act == "linear" and gain == 1 and clamp < 0  # dx = dy
    # What the derivative needs: x (with b) for swish, for second derivatives, and for lrelu with a
    # negative slope (its output's sign no longer tells the input's); y for the others and for the
    # clamp mask (clamped outputs pass no gradient).
    need_x = spec.ref == "x" or spec.has_2nd_grad or (act == "lrelu" and alpha < 0)
    need_y = spec.ref == "y" or clamp >= 0
    uses_z = spec.ref == "x" or (act == "lrelu" and alpha < 0)  # the kernel reads x + b, not only y

    def call(
        x: torch.Tensor,
        b: torch.Tensor | None,
        xref: torch.Tensor | None,
        yref: torch.Tensor | None,
        dy: torch.Tensor | None,
        grad: int,
    ) -> torch.Tensor:
        """The kernel in mode `grad`; absent tensors travel as empty ones."""
        empty = x.new_empty([0])
        return _ext().bias_act(
            x,
            b if b is not None else empty,
            xref if xref is not None else empty,
            yref if yref is not None else empty,
            dy if dy is not None else empty,
            grad,
            dim,
            act_idx,
            alpha,
            gain,
            clamp,
        )

    class BiasActCuda(torch.autograd.Function):
        """y = clamp(act(x + b) * gain)."""

        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
            y = call(x, b, None, None, None, 0)
            ctx.save_for_backward(x if need_x else None, b if need_x else None, y if need_y else None)
            return y

        @staticmethod
        def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            x, b, y = ctx.saved_tensors
            dx = db = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                dx = dy if identity_grad else BiasActCudaGrad.apply(dy, x, b, y)
            if ctx.needs_input_grad[1]:
                db = _reduce_to_bias(dx, dim)
            return dx, db

    class BiasActCudaGrad(torch.autograd.Function):
        """dx = dy * act'(x + b) * gain (masked where clamped): linear in dy, so its dy-derivative is itself."""

        @staticmethod
        def forward(
            ctx: Any, dy: torch.Tensor, x: torch.Tensor | None, b: torch.Tensor | None, y: torch.Tensor | None
        ) -> torch.Tensor:
            dx = call(dy, b if uses_z else None, x if uses_z else None, y, None, 1)
            ctx.save_for_backward(dy if spec.has_2nd_grad else None, x, b, y)
            return dx

        @staticmethod
        def backward(
            ctx: Any, d_dx: torch.Tensor
        ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None]:
            dy, x, b, y = ctx.saved_tensors
            d_dy = d_x = d_b = None
            if ctx.needs_input_grad[0]:
                d_dy = BiasActCudaGrad.apply(d_dx, x, b, y)
            if spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
                d_z = BiasActCudaGrad2.apply(d_dx, dy, x, b, y)
                d_x = d_z if ctx.needs_input_grad[1] else None
                d_b = _reduce_to_bias(d_z, dim) if ctx.needs_input_grad[2] else None
            # y is a function of x and b: its influence is already inside d_x.
            return d_dy, d_x, d_b, None

    class BiasActCudaGrad2(torch.autograd.Function):
        """d_x = d_dx * dy * act''(x + b) * gain (masked where clamped); not differentiable further."""

        @staticmethod
        def forward(
            ctx: Any,
            d_dx: torch.Tensor,
            dy: torch.Tensor | None,
            x: torch.Tensor | None,
            b: torch.Tensor | None,
            y: torch.Tensor | None,
        ) -> torch.Tensor:
            return call(d_dx, b if uses_z else None, x if uses_z else None, y, dy, 2)

        @staticmethod
        def backward(ctx: Any, *grads: torch.Tensor) -> None:
            raise RuntimeError(
                f"bias_act (CUDA, act={act!r}): derivatives beyond the second order are not implemented; use impl='ref'"
            )

    return BiasActCuda


def bias_act_cuda(
    x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float, clamp: float
) -> torch.Tensor:
    """bias_act on the CUDA kernel; arguments already checked and resolved (clamp < 0 = none)."""
    if x.dtype not in KERNEL_DTYPES:
        raise ValueError(f"bias_act: the CUDA kernel takes float16/32/64, got {x.dtype}; use impl='ref'")
    if b is None and act == "linear" and gain == 1 and clamp < 0:
        return x  # nothing to do, as in the reference path
    return _functions(dim, act, float(alpha), float(gain), float(clamp)).apply(x, b)
