"""Compositing the generated image back into the photo.

All images are float [N,3,H,W] and the blend mask is float [N,1,H,W] in [0,1], 1 = use the generated
image. Every method returns the photo unchanged, bit for bit, wherever blend == 0. Pure torch functions
of their inputs (no state); they run on any device and keep the input dtype. No method clamps: the
result stays in [0,1] when the inputs are, except that multi-band blending may overshoot slightly near
strong edges (clamp when saving).

Methods (STITCH_METHODS):
    fice       blend * generated + (1 - blend) * photo (FICE: blend = 1 - head probability)
    hard       generated where blend >= threshold (default 0.5), photo elsewhere
    feather    the mask eroded by `radius` px, Gaussian-blurred over `radius` px and cut to blend > 0,
               then used as in 'fice': a soft seam that never reaches outside the blend region. The
               erosion is exact in O(log radius) passes and long Gaussians (radius >= 16) run by FFT
               (equal to direct convolution within ~1e-6), so a 4000x4000 photo's feather (radius 62)
               costs seconds, not minutes
    laplacian  multi-band blending: Laplacian pyramids of both images mixed with the Gaussian pyramid
               of the mask (`levels` bands, default by size), then forced to the photo where blend == 0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ficekit.mask_ops import erode
from ficekit.shapes import check_shape

# 5-tap binomial low-pass of the Burt-Adelson pyramid; its weights are dyadic, so a constant stays exact.
_BINOMIAL5 = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
_MIN_PYRAMID_SIDE = 8  # the default pyramid stops before the coarsest level's shorter side drops below this


# ---------------------------------------------------------------------------------------------------
# Filters.


_FFT_MIN_TAPS = 33  # kernels this long (feather radius >= 16, photos from about 1000 px) filter by FFT


def _fft_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: a transform length FFT libraries handle fast (a prime length is slow)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p235 = p35
            while p235 < n:
                p235 *= 2
            best = min(best, p235)
            p35 *= 3
        p5 *= 5
    return best


def _fft_filter_along(x: torch.Tensor, taps: torch.Tensor, dim: int) -> torch.Tensor:
    """Filter along `dim` (-1 or -2) with replicated borders, as one FFT product per line: the cost grows with
    log(kernel length), not with the length. Matches the direct convolution to float rounding (~1e-7)."""
    dtype = x.dtype
    if dtype not in (torch.float32, torch.float64):  # half precision FFTs need power-of-two lengths
        x, taps = x.float(), taps.float()
    pad = taps.numel() // 2
    n = x.shape[dim]
    lines = x.movedim(dim, -1)
    shape = lines.shape
    padded = F.pad(lines.reshape(-1, 1, n), (pad, pad), mode="replicate").reshape(*shape[:-1], n + 2 * pad)
    length = _fft_length(n + 2 * pad + taps.numel() - 1)
    kernel = torch.fft.rfft(taps.flip(0), length)  # flipped: conv2d correlates; the Gaussian is symmetric anyway
    full = torch.fft.irfft(torch.fft.rfft(padded, length) * kernel, length)
    return full[..., 2 * pad : 2 * pad + n].movedim(-1, dim).to(dtype)


def _separable_filter(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Filter [N,C,H,W] with the 1-D kernel `taps` along H and W (replicated borders), per channel; long
    kernels (_FFT_MIN_TAPS) by FFT, short ones by direct convolution."""
    if taps.numel() >= _FFT_MIN_TAPS:
        return _fft_filter_along(_fft_filter_along(x, taps, -1), taps, -2).contiguous()
    c = x.shape[1]
    pad = taps.numel() // 2
    horizontal = taps.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    vertical = taps.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="replicate"), horizontal, groups=c)
    return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="replicate"), vertical, groups=c)


def _gaussian_taps(radius: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian over [-radius, radius] with sigma = radius / 2 (the kernel spans +-2 sigma)."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / (radius / 2)) ** 2)
    return (taps / taps.sum()).to(dtype=dtype, device=device)


def feather_mask(blend: torch.Tensor, radius: int) -> torch.Tensor:
    """Blend [N,1,H,W] blurred inward: eroded by `radius`, Gaussian-blurred over `radius`, times (blend > 0).

    The blur reaches exactly as far as the erosion took the mask in, so the result is 0 wherever blend is
    0 and is monotone in blend (a pointwise larger mask gives a pointwise larger weight). radius 0 = blend.
    """
    if radius <= 0:
        return blend
    taps = _gaussian_taps(radius, blend.dtype, blend.device)
    soft = _separable_filter(erode(blend, radius), taps)
    return soft.clamp(0, 1) * (blend > 0).to(blend.dtype)


# ---------------------------------------------------------------------------------------------------
# Pyramids.


def _downsample(x: torch.Tensor) -> torch.Tensor:
    """Binomial low-pass, then every second pixel: [N,C,H,W] -> [N,C,ceil(H/2),ceil(W/2)]."""
    taps = x.new_tensor(_BINOMIAL5)
    return _separable_filter(x, taps)[..., ::2, ::2]


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def default_levels(height: int, width: int) -> int:
    """Pyramid levels for an image: halve until the shorter side would drop below 8 px (256 px -> 6)."""
    return 1 + max(0, int(math.floor(math.log2(max(min(height, width), 1) / _MIN_PYRAMID_SIDE))))


def gaussian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[x, down(x), down(down(x)), ...] with `levels` entries; each level halves H and W (rounding up)."""
    if levels < 1:
        raise ValueError(f"levels: expected an int >= 1, got {levels}")
    pyramid = [x]
    for _ in range(levels - 1):
        pyramid.append(_downsample(pyramid[-1]))
    return pyramid


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels G_i - up(G_{i+1}) for i < levels-1, then the coarsest Gaussian level G_{levels-1}."""
    gaussian = gaussian_pyramid(x, levels)
    bands = [g - _upsample(coarser, g.shape[-2:]) for g, coarser in zip(gaussian[:-1], gaussian[1:], strict=True)]
    return bands + [gaussian[-1]]


def reconstruct_pyramid(pyramid: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of laplacian_pyramid: start from the coarsest level, upsample, add each band."""
    x = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        x = band + _upsample(x, band.shape[-2:])
    return x


# ---------------------------------------------------------------------------------------------------
# Methods.


def _keep_photo_outside(result: torch.Tensor, photo: torch.Tensor, blend: torch.Tensor) -> torch.Tensor:
    """`result` where blend > 0, the photo itself (bit for bit) where blend == 0."""
    return torch.where(blend > 0, result, photo)


def _fice(photo: torch.Tensor, generated: torch.Tensor, blend: torch.Tensor) -> torch.Tensor:
    # FICE trainer.py: blend_mask*imgs_gen + (1-blend_mask)*imgs_batch; exact at blend 0 for finite images.
    return blend * generated + (1 - blend) * photo


def _hard(photo: torch.Tensor, generated: torch.Tensor, blend: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    if not 0 < threshold <= 1:
        raise ValueError(f"hard stitch: threshold must be in (0, 1] (blend == 0 keeps the photo), got {threshold}")
    return torch.where(blend >= threshold, generated, photo)


def _feather(
    photo: torch.Tensor, generated: torch.Tensor, blend: torch.Tensor, radius: int | None = None
) -> torch.Tensor:
    if radius is None:
        radius = max(1, round(min(blend.shape[-2:]) / 64))  # 4 px at 256 px
    if not isinstance(radius, int) or isinstance(radius, bool) or radius < 0:
        raise ValueError(f"feather stitch: radius must be an int >= 0 (pixels), got {radius!r}")
    weight = feather_mask(blend, radius)
    return _keep_photo_outside(_fice(photo, generated, weight), photo, blend)


def _laplacian(
    photo: torch.Tensor, generated: torch.Tensor, blend: torch.Tensor, levels: int | None = None
) -> torch.Tensor:
    if levels is None:
        levels = default_levels(*blend.shape[-2:])
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 1:
        raise ValueError(f"laplacian stitch: levels must be an int >= 1, got {levels!r}")
    masks = gaussian_pyramid(blend, levels)
    bands_gen = laplacian_pyramid(generated, levels)
    bands_photo = laplacian_pyramid(photo, levels)
    mixed = [_fice(p, g, m) for p, g, m in zip(bands_photo, bands_gen, masks, strict=True)]
    return _keep_photo_outside(reconstruct_pyramid(mixed), photo, blend)


# method -> (function, names of its options)
_METHODS: dict[str, tuple[Callable[..., torch.Tensor], tuple[str, ...]]] = {
    "fice": (_fice, ()),
    "hard": (_hard, ("threshold",)),
    "feather": (_feather, ("radius",)),
    "laplacian": (_laplacian, ("levels",)),
}
STITCH_METHODS: tuple[str, ...] = tuple(_METHODS)


def stitch(
    photo: torch.Tensor,
    generated: torch.Tensor,
    blend: torch.Tensor,
    method: str = "feather",
    **opts: Any,
) -> torch.Tensor:
    """Composite `generated` into `photo` where `blend` says so; the photo is kept exactly where blend == 0.

    Args:
        photo: [N,3,H,W] float image in [0,1].
        generated: [N,3,H,W] float image in [0,1], same dtype and device.
        blend: [N,1,H,W] float mask in [0,1]; 1 = generated, 0 = photo.
        method: one of STITCH_METHODS (see the module docstring).
        **opts: method options: hard -> threshold (0.5); feather -> radius (px, default H/64, at least 1);
            laplacian -> levels (default: down to about 8 px). 'fice' takes none.
    Returns:
        [N,3,H,W] composite in the input dtype.
    Raises:
        ValueError: wrong shapes, non-float or mixed dtypes/devices, a mask outside [0,1], an unknown
            method or option.
    """
    if method not in _METHODS:
        raise ValueError(f"stitch: unknown method {method!r}; expected one of {list(STITCH_METHODS)}")
    check_shape("photo", photo, [None, 3, None, None])
    n, _, h, w = photo.shape
    check_shape("generated", generated, [n, 3, h, w])
    check_shape("blend", blend, [n, 1, h, w])
    for name, t in (("photo", photo), ("generated", generated), ("blend", blend)):
        if not t.is_floating_point():
            raise ValueError(f"stitch: {name} must be a float tensor, got dtype {t.dtype}")
    if not photo.dtype == generated.dtype == blend.dtype:
        raise ValueError(
            f"stitch: photo, generated and blend must share a dtype, got {photo.dtype}, {generated.dtype}, {blend.dtype}"
        )
    if not photo.device == generated.device == blend.device:
        raise ValueError(
            f"stitch: photo, generated and blend must be on one device, got {photo.device}, {generated.device}, "
            f"{blend.device}"
        )
    if blend.numel() and not bool(((blend >= 0) & (blend <= 1)).all()):
        raise ValueError(
            f"stitch: blend must lie in [0, 1], got values in [{blend.min().item()}, {blend.max().item()}]"
        )
    function, allowed = _METHODS[method]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ValueError(f"stitch: method {method!r} takes no option(s) {unknown}; its options: {list(allowed)}")
    return function(photo, generated, blend, **opts)
