"""Upsample, FIR-filter and downsample a batch of 2-D images in one op (StyleGAN2's resampling).

upfirdn2d: zero-insert upsampling by `up`, padding (negative = cropping), FIR filtering with `f`
(2-D, or 1-D separable applied along both axes), then keeping every `down`-th pixel.
`impl='ref'` is the pure-torch specification; `impl='cuda'` runs the custom kernel; `impl='auto'`
picks CUDA for CUDA tensors when the kernel builds, else the reference path (one warning).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

Scaling = int | Sequence[int]
Padding = int | Sequence[int]


def _parse_scaling(scaling: Scaling) -> tuple[int, int]:
    """(sx, sy) from an int or a pair [sx, sy]."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    sx, sy = (int(s) for s in scaling)
    if len(scaling) != 2 or sx < 1 or sy < 1:
        raise ValueError(f"upfirdn2d: up/down factors must be positive ints or pairs, got {scaling!r}")
    return sx, sy


def parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from an int, a pair [px, py], or a quadruple [x0, x1, y0, y1]."""
    if isinstance(padding, int):
        padding = [padding, padding]
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    if len(padding) != 4:
        raise ValueError(f"upfirdn2d: padding must be an int, [px, py] or [x0, x1, y0, y1], got {padding!r}")
    x0, x1, y0, y1 = padding
    return x0, x1, y0, y1


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a 1-D or 2-D filter; (1, 1) for None."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2):
        raise ValueError(f"upfirdn2d: filter must be a 1-D or 2-D tensor, got {getattr(f, 'shape', type(f))}")
    fw = int(f.shape[-1])
    fh = int(f.shape[0])
    return fw, fh


def setup_filter(
    f: Sequence[float] | torch.Tensor | None,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """Turn a filter spec into the float32 tensor upfirdn2d takes.

    A 1-D filter of fewer than 8 taps becomes the 2-D outer product (as NVlabs does); longer ones
    stay separable. `normalize` scales the taps to sum to 1; `gain` multiplies the overall gain.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"setup_filter: expected a non-empty 1-D or 2-D filter, got shape {list(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError(f"setup_filter: a separable filter must be 1-D, got shape {list(f.shape)}")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def _check_args(x: torch.Tensor, f: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"upfirdn2d: x must be a float tensor [N, C, H, W], got {getattr(x, 'shape', type(x))}")
    if f.dtype != torch.float32 or f.ndim not in (1, 2):
        raise ValueError(f"upfirdn2d: f must be a 1-D or 2-D float32 tensor (see setup_filter), got {f.dtype} {list(f.shape)}")


def upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scaling = 1,
    down: Scaling = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Reference implementation: zero-insertion, pad/crop, depthwise conv2d, strided slice."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    _check_args(x, f)
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = parse_padding(padding)
    n, c, h, w = x.shape

    # Upsample by inserting zeros after every input pixel.
    x = x.reshape([n, c, h, 1, w, 1])
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape([n, c, h * upy, w * upx])

    # Pad (positive) or crop (negative).
    x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0) : x.shape[2] - max(-pady1, 0), max(-padx0, 0) : x.shape[3] - max(-padx1, 0)]

    # Convolve (conv2d correlates, so flip the filter unless asked not to).
    f = f * (gain ** (f.ndim / 2))
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f[None, None].repeat([c, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = F.conv2d(x, f, groups=c)
    else:
        x = F.conv2d(x, f.unsqueeze(2), groups=c)
        x = F.conv2d(x, f.unsqueeze(3), groups=c)

    # Downsample by keeping every down-th pixel.
    return x[:, :, ::downy, ::downx]


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scaling = 1,
    down: Scaling = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Pad, upsample, filter and downsample a batch of images.

    Args:
        x: float tensor [N, C, H, W].
        f: float32 filter from `setup_filter`: [fh, fw] (2-D) or [fw] (separable); None = identity.
        up: integer upsampling factor, or [x, y].
        down: integer downsampling factor, or [x, y].
        padding: int, [px, py] or [x0, x1, y0, y1], in upsampled pixels; negative crops.
        flip_filter: False = convolution, True = correlation.
        gain: overall scaling of the signal magnitude.
        impl: 'auto', 'cuda' or 'ref'.
    Returns:
        Tensor [N, C, H_out, W_out] of x's dtype.
    """
    from . import _dispatch

    if _dispatch.use_cuda(x, impl, "upfirdn2d"):
        from ._upfirdn2d_cuda import upfirdn2d_cuda

        if f is None:
            f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
        _check_args(x, f)
        return upfirdn2d_cuda(x, f, _parse_scaling(up), _parse_scaling(down), parse_padding(padding), flip_filter, gain)
    return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def filter2d(
    x: torch.Tensor, f: torch.Tensor, padding: Padding = 0, flip_filter: bool = False, gain: float = 1, impl: str = "auto"
) -> torch.Tensor:
    """Filter a batch of images, keeping their size (padding is extra, relative to that)."""
    padx0, padx1, pady0, pady1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: Scaling = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample a batch of images by `up` with FIR filter `f`, keeping the signal gain."""
    upx, upy = _parse_scaling(up)
    padx0, padx1, pady0, pady1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [
        padx0 + (fw + upx - 1) // 2,
        padx1 + (fw - upx) // 2,
        pady0 + (fh + upy - 1) // 2,
        pady1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor,
    down: Scaling = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Downsample a batch of images by `down` after low-pass filtering with `f`."""
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [
        padx0 + (fw - downx + 1) // 2,
        padx1 + (fw - downx) // 2,
        pady0 + (fh - downy + 1) // 2,
        pady1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
