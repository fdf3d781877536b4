"""Morphology and feathering on [N,1,H,W] soft masks: dilation, erosion, closing, opening, blurs.

Square structuring elements; windows are clipped at the image border (the same as replicating the edge
pixels), so a region cut by the border does not shrink away from it, and a closing joins a shape to the
border when it comes within px of it. Shared by masking (garment masks) and stitch (blend feathering).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ficekit.shapes import check_shape


def check_px(name: str, px: int) -> int:
    """`px` if it is a non-negative int, else ValueError naming the argument."""
    if isinstance(px, bool) or not isinstance(px, int) or px < 0:
        raise ValueError(f"{name}: expected a non-negative integer number of pixels, got {px!r}")
    return px


_DIRECT_MAX_PX = 8  # up to this radius one max_pool2d over the square; beyond it the separable O(log px) path


def _running_max(x: torch.Tensor, px: int, dim: int) -> torch.Tensor:
    """Max over the window [i - px, i + px] along `dim` (-1 or -2), clipped at the border, by doubling spans:
    after step j each entry holds the max of 2**j neighbours, and two overlapping spans cover the window.
    Exact (a max of the same values), in ceil(log2(2px+1)) + 1 elementwise passes instead of 2px+1."""
    window = 2 * px + 1
    n = x.shape[dim]
    pad = (px, px, 0, 0) if dim == -1 else (0, 0, px, px)
    m = F.pad(x, pad, value=float("-inf"))
    span = 1
    while 2 * span <= window:
        length = m.shape[dim] - span
        m = torch.maximum(m.narrow(dim, 0, length), m.narrow(dim, span, length))
        span *= 2
    return torch.maximum(m.narrow(dim, 0, n), m.narrow(dim, window - span, n))


def _square_max(mask: torch.Tensor, px: int) -> torch.Tensor:
    """Max over the (2px+1)^2 square around each pixel (clipped at the border); the same values by either path,
    but the cost of the separable one grows with log(px), not px^2 (a 4000x4000 photo's feather uses px = 62)."""
    if px <= _DIRECT_MAX_PX:
        return F.max_pool2d(mask, 2 * px + 1, stride=1, padding=px)
    return _running_max(_running_max(mask, px, -1), px, -2)


def dilate(mask: torch.Tensor, px: int) -> torch.Tensor:
    """Grey-scale dilation: max over the (2px+1)^2 square around each pixel."""
    check_shape("mask", mask, [None, 1, None, None])
    if check_px("px", px) == 0:
        return mask
    return _square_max(mask, px)


def erode(mask: torch.Tensor, px: int) -> torch.Tensor:
    """Grey-scale erosion: min over the (2px+1)^2 square around each pixel."""
    check_shape("mask", mask, [None, 1, None, None])
    if check_px("px", px) == 0:
        return mask
    return -_square_max(-mask, px)


def morph_close(mask: torch.Tensor, px: int) -> torch.Tensor:
    """Closing (dilate, then erode): fills holes and gaps up to 2*px pixels wide."""
    return erode(dilate(mask, px), px)


def morph_open(mask: torch.Tensor, px: int) -> torch.Tensor:
    """Opening (erode, then dilate): removes specks and strands up to 2*px pixels wide."""
    return dilate(erode(mask, px), px)


def box_blur(mask: torch.Tensor, px: int) -> torch.Tensor:
    """Mean over the (2px+1)^2 square (border pixels average over the part inside the image): exact 0 and 1
    stay exact where the whole window is 0 or 1."""
    check_shape("mask", mask, [None, 1, None, None])
    if check_px("px", px) == 0:
        return mask
    return F.avg_pool2d(mask, 2 * px + 1, stride=1, padding=px, count_include_pad=False)


def soften(mask: torch.Tensor, px: int) -> torch.Tensor:
    """Two box blurs with radii ceil(px/2) and floor(px/2): a step edge becomes a ramp from px pixels outside
    to px pixels inside it."""
    return box_blur(box_blur(mask, (check_px("px", px) + 1) // 2), px // 2)


def feather_outward(mask: torch.Tensor, protected: torch.Tensor, px: int) -> torch.Tensor:
    """`mask` plus a ramp from 1 at its edge down to 0 about `px` pixels outside it (2 * ceil(px/2)), never
    entering `protected` (both binary [N,1,H,W])."""
    r = (check_px("px", px) + 1) // 2
    return torch.maximum(mask, soften(dilate(mask, r), r) * (1 - protected))


def feather_inward(mask: torch.Tensor, protected: torch.Tensor, px: int) -> torch.Tensor:
    """A ramp from 0 at the edge of `mask` up to 1 about `px` pixels inside it (2 * ceil(px/2)); exactly 0
    outside `mask` and exactly 1 deeper inside (both binary [N,1,H,W]).

    Edge-aware: along edges where `mask` meets `protected` there is no ramp (the protected region counts as
    inside for the erosion), so a hand or the head keeps a crisp outline instead of a halo of the old garment.
    """
    r = (check_px("px", px) + 1) // 2
    core = erode(torch.maximum(mask, protected), r)
    return soften(core, r) * mask
