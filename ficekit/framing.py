"""Fitting photos of any size and aspect to the generator's square resolution, and mapping results back.

The rule: pad the shorter side symmetrically to a square by repeating the border pixels (person
photos have plain, continuous backgrounds at their edges), then resize the square to the generator's
resolution (area averaging when shrinking, bilinear when enlarging). Mapping back resizes to the
padded square (bilinear) and crops the padding off, so results line up pixel for pixel with the photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .shapes import check_shape


@dataclass(frozen=True)
class Framing:
    """How one photo was fitted: its size, the padded square's side and offsets, the target resolution."""

    height: int  # photo height in pixels
    width: int  # photo width in pixels
    side: int  # side of the padded square
    top: int  # rows of padding above the photo
    left: int  # columns of padding left of the photo
    resolution: int  # the generator's resolution

    def unfit(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, resolution, resolution] -> [N, C, height, width], aligned with the original photo."""
        check_shape("x", x, [None, None, self.resolution, self.resolution])
        if self.side != self.resolution:
            x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False)
        return x[:, :, self.top : self.top + self.height, self.left : self.left + self.width]


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    mode = "area" if x.shape[-1] > size else "bilinear"
    return F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))


def fit_to_square(image: torch.Tensor, resolution: int) -> tuple[torch.Tensor, Framing]:
    """Pad [1|N, 3, H, W] to a square (edge replicate) and resize to resolution x resolution."""
    check_shape("image", image, [None, 3, None, None])
    height, width = image.shape[-2:]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    padded = image
    if side != height or side != width:
        padded = F.pad(image, [left, side - width - left, top, side - height - top], mode="replicate")
    framing = Framing(height=height, width=width, side=side, top=top, left=left, resolution=resolution)
    return _resize(padded, resolution), framing
