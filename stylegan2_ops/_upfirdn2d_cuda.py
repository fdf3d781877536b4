"""upfirdn2d on the CUDA kernel: an autograd Function per set of static arguments.

The kernel takes a 2-D filter. Its gradient is upfirdn2d itself, applied to dy with up and down
swapped, the filter flip inverted and the padding recomputed so that the output has x's size;
being the same Function, it is differentiable again (any order). A 1-D (separable) filter runs as
two passes, along x and then along y, each its own Function.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import torch

from ._dispatch import KERNEL_DTYPES  # one definition, shared with the dispatch


def _ext() -> ModuleType:
    """The built extension (raises BuildError with the reason if it cannot be built)."""
    from ._build import get_extension

    return get_extension(strict=True)


def _out_size(in_size: int, up: int, pad0: int, pad1: int, taps: int, down: int) -> int:
    """Output length along one axis; raises ValueError if the padded input is shorter than the filter."""
    padded = in_size * up + pad0 + pad1
    if padded < taps:
        raise ValueError(
            f"upfirdn2d: the padded, upsampled input ({padded} pixels = {in_size} * {up} + {pad0} + {pad1}) "
            f"is shorter than the filter ({taps} taps)"
        )
    return (padded - taps + down) // down


@functools.cache
def _function(
    upx: int, upy: int, downx: int, downy: int, padx0: int, padx1: int, pady0: int, pady1: int, flip: bool, gain: float
) -> type[torch.autograd.Function]:
    """The Function for one set of static arguments (2-D filter)."""

    class Upfirdn2dCuda(torch.autograd.Function):
        """upfirdn2d(x, f) with fixed up/down/padding/flip/gain; f gets no gradient."""

        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
            y = _ext().upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain)
            ctx.save_for_backward(f)
            ctx.x_shape = x.shape
            return y

        @staticmethod
        def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, None]:
            (f,) = ctx.saved_tensors
            _, _, ih, iw = ctx.x_shape
            _, _, oh, ow = dy.shape
            fh, fw = f.shape
            # Adjoint: tap j joins input i and output o when i*up = o*down + j - pad0; in the
            # transposed op (roles swapped, filter reversed) the same pairs meet with these pads.
            padding = (
                fw - padx0 - 1,
                iw * upx - ow * downx + padx0 - upx + 1,
                fh - pady0 - 1,
                ih * upy - oh * downy + pady0 - upy + 1,
            )
            dx = None
            if ctx.needs_input_grad[0]:
                dx = _function(downx, downy, upx, upy, *padding, not flip, gain).apply(dy, f)
            return dx, None

    return Upfirdn2dCuda


def upfirdn2d_cuda(
    x: torch.Tensor,
    f: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """upfirdn2d on the CUDA kernel; arguments already parsed (see upfirdn2d.upfirdn2d)."""
    if x.dtype not in KERNEL_DTYPES:
        raise ValueError(f"upfirdn2d: the CUDA kernel takes float16/32/64, got {x.dtype}; use impl='ref'")
    if f.requires_grad:
        raise ValueError("upfirdn2d: the CUDA kernel gives no gradient for the filter f; use impl='ref' to learn it")
    if f.device != x.device:
        raise ValueError(f"upfirdn2d: f is on {f.device} but x is on {x.device}")
    (upx, upy), (downx, downy) = up, down
    padx0, padx1, pady0, pady1 = padding
    flip, gain = bool(flip_filter), float(gain)
    fw = f.shape[-1]
    fh = f.shape[0]
    _out_size(x.shape[3], upx, padx0, padx1, fw, downx)
    _out_size(x.shape[2], upy, pady0, pady1, fh, downy)
    if f.ndim == 2:
        return _function(upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain).apply(x, f)
    # Separable: the gain splits evenly between the passes, as in the reference path.
    gain_x, gain_y = (gain**0.5, gain**0.5) if gain >= 0 else (gain, 1.0)
    x = _function(upx, 1, downx, 1, padx0, padx1, 0, 0, flip, gain_x).apply(x, f.reshape(1, -1))
    return _function(1, upy, 1, downy, 0, 0, pady0, pady1, flip, gain_y).apply(x, f.reshape(-1, 1))
