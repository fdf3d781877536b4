"""Fused bias + activation + gain + clamp, as StyleGAN2 uses it: y = clamp(act(x + b) * gain).

`impl='ref'` is the pure-torch specification (any device and dtype, gradients of any order);
`impl='cuda'` runs the custom kernel; `impl='auto'` picks CUDA for CUDA tensors when the kernel
builds, else the reference path (one warning per process).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ActivationSpec:
    """One activation function with its NVlabs defaults and the facts the CUDA kernel needs."""

    func: Callable[[torch.Tensor, float], torch.Tensor]  # act(x, alpha)
    def_alpha: float  # default alpha (negative slope of lrelu)
    def_gain: float  # default gain applied after the activation
    cuda_idx: int  # the activation's index in the CUDA kernel
    ref: str  # which tensor the gradient needs: '' (none), 'x' (input) or 'y' (output)
    has_2nd_grad: bool  # whether the second derivative is non-zero


activation_funcs: dict[str, ActivationSpec] = {
    "linear": ActivationSpec(lambda x, a: x, 0.0, 1.0, 1, "", False),
    "relu": ActivationSpec(lambda x, a: F.relu(x), 0.0, math.sqrt(2), 2, "y", False),
    "lrelu": ActivationSpec(lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2), 3, "y", False),
    "tanh": ActivationSpec(lambda x, a: torch.tanh(x), 0.0, 1.0, 4, "y", True),
    "sigmoid": ActivationSpec(lambda x, a: torch.sigmoid(x), 0.0, 1.0, 5, "y", True),
    "elu": ActivationSpec(lambda x, a: F.elu(x), 0.0, 1.0, 6, "y", True),
    "selu": ActivationSpec(lambda x, a: F.selu(x), 0.0, 1.0, 7, "y", True),
    "softplus": ActivationSpec(lambda x, a: F.softplus(x), 0.0, 1.0, 8, "y", True),
    "swish": ActivationSpec(lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2), 9, "x", True),
}


def _resolve(act: str, alpha: float | None, gain: float | None, clamp: float | None) -> tuple[float, float, float]:
    if act not in activation_funcs:
        raise ValueError(f"bias_act: unknown activation {act!r}; choose one of {sorted(activation_funcs)}")
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return alpha, gain, clamp


def _check_args(x: torch.Tensor, b: torch.Tensor | None, dim: int) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"bias_act: x must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    if b is not None:
        if b.ndim != 1 or not 0 <= dim < x.ndim or b.shape[0] != x.shape[dim]:
            raise ValueError(
                f"bias_act: b must be 1-D with x.shape[dim] = {x.shape[dim] if 0 <= dim < x.ndim else '?'} "
                f"entries (dim={dim}, x shape {list(x.shape)}), got b shape {list(b.shape)}"
            )
        if b.dtype != x.dtype or b.device != x.device:
            raise ValueError(f"bias_act: b ({b.dtype}, {b.device}) must match x ({x.dtype}, {x.device})")


def bias_act_ref(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Reference implementation: plain torch ops, differentiable to any order."""
    _check_args(x, b, dim)
    alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = activation_funcs[act].func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """y = clamp(act(x + b) * gain, -clamp, clamp), bias broadcast along `dim`.

    Args:
        x: input tensor of any shape (float16/32/64).
        b: optional 1-D bias with x.shape[dim] entries, same dtype and device as x.
        dim: the dimension of x that `b` runs along.
        act: one of linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish.
        alpha: activation parameter (lrelu slope); None = the activation's default.
        gain: output scale; None = the activation's default (sqrt(2) for relu/lrelu/swish, else 1).
        clamp: clamp the output to [-clamp, clamp]; None = no clamping.
        impl: 'auto', 'cuda' or 'ref'.
    Returns:
        Tensor of x's shape and dtype.
    """
    from . import _dispatch

    if _dispatch.use_cuda(x, impl, "bias_act"):
        from ._bias_act_cuda import bias_act_cuda

        _check_args(x, b, dim)
        alpha_, gain_, clamp_ = _resolve(act, alpha, gain, clamp)
        return bias_act_cuda(x, b, dim, act, alpha_, gain_, clamp_)
    return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
