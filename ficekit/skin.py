"""Bare-skin guidance for sleeve changes: where the instruction's sleeve leaves an arm bare, G(w) should show skin.

CLIP guidance lengthens sleeves but does not shorten them: from a long-sleeved photo it repaints the old sleeve
in the new texture. The instruction says which arm segments the new garment covers (masking.covered_regions)
and the photo's DensePose says where those segments are, so the rest of the arm inside the edit region is
known to be bare. `SkinTerm` pulls G(w) there to the photo's own skin colour (the median of its face, arm and
hand pixels the edit keeps); the texture term then measures only the covered part of the edit region.

A short sleeve covers the near half of the upper arm: DensePose's V runs along each limb chart, and the far half
(V > SHORT_SLEEVE_END, V oriented from the shoulder, the end nearer the head) is bare.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .masking import BODY_REGIONS, LIMBS, covered_regions, parser_role, region_mask
from .perception.segmenter import SegmentationMasks

SHORT_SLEEVE_END = 0.5  # V along the upper arm (shoulder 0, elbow 1) where a short sleeve ends
SKIN_NAMES: tuple[str, ...] = ("face", "head")  # parser labels whose pixels are facial skin (the first present)
MIN_SKIN_PIXELS = 4  # fewer skin pixels than this: the photo's skin colour is unknown and the term stays off
BARE_CATEGORIES: tuple[str, ...] = ("upper", "full", "outerwear")  # categories whose sleeve the instruction sets


def oriented_v(v: torch.Tensor, chart: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """V [H, W] of one upper-arm chart, flipped when needed so that it grows from the shoulder to the elbow.

    chart: [H, W] the chart's probability; head: [H, W] the head's. The orientation is read off the photo (DensePose
    models differ in it): the shoulder is the end nearer the head, so over the chart's pixels V must not fall with
    the distance to the head's centre. (Not the torso's: an arm hanging beside it has both ends equally far.)
    """
    weights = chart * (chart >= 0.5)
    if float(weights.sum()) < 2 or float(head.sum()) < 1:
        return v
    h, w = v.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=v.dtype, device=v.device),
                            torch.arange(w, dtype=v.dtype, device=v.device), indexing="ij")  # fmt: skip
    centre_y, centre_x = (ys * head).sum() / head.sum(), (xs * head).sum() / head.sum()
    distance = ((ys - centre_y) ** 2 + (xs - centre_x) ** 2).sqrt()
    p = weights / weights.sum()
    covariance = (p * (v - (p * v).sum()) * (distance - (p * distance).sum())).sum()
    return v if float(covariance) >= 0 else 1 - v


@torch.no_grad()
def bare_arm_mask(category: str, sleeve: str | None, parts: torch.Tensor, v: torch.Tensor,
                  edit: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """[N,1,H,W]: where, inside `edit`, the new garment leaves the arms bare (zeros without a sleeve).

    parts: [N,25,H,W] DensePose part probabilities; v: [N,25,H,W] each chart's V in the image frame
    (densepose_part_and_v_maps); sleeve: 'sleeveless' | 'short' | 'long' | None (None: unknown, no bare arm).
    """
    if sleeve is None or category not in BARE_CATEGORIES:
        return torch.zeros_like(edit)
    covered = covered_regions(category, sleeve)
    bare = region_mask(parts, *[s for s in LIMBS["arms"] if s not in covered])
    if sleeve == "short":
        head = region_mask(parts, "head")[:, 0]
        far_half = []
        for c in BODY_REGIONS["upper_arms"]:
            v_c = torch.stack([oriented_v(v[i, c], parts[i, c], head[i]) for i in range(parts.shape[0])])
            far_half.append(parts[:, c] * (v_c > SHORT_SLEEVE_END))
        bare = bare + torch.stack(far_half, dim=1).sum(dim=1, keepdim=True)
    return bare.clamp(0, 1) * edit


@torch.no_grad()
def skin_colour(photo: torch.Tensor, parser: SegmentationMasks | None, parts: torch.Tensor | None,
                edit: torch.Tensor) -> torch.Tensor | None:  # fmt: skip
    """[N,3]: the median colour of each photo's visible skin outside `edit` (face, arms, hands by the parser,
    DensePose hands), or None when some photo shows fewer than MIN_SKIN_PIXELS of it."""
    sources = []
    if parser is not None:
        face = next((name for name in SKIN_NAMES if name in parser.labels), None)
        if face is not None:
            sources.append(parser.merge(face))
        sources += [m for m in (parser_role(parser, "arms"), parser_role(parser, "hands")) if m is not None]
    if parts is not None:
        sources.append(region_mask(parts, "hands"))
    if not sources:
        return None
    skin = (torch.stack(sources).amax(dim=0) >= 0.5) & (edit < 0.5)  # [N,1,H,W]
    colours = []
    for i in range(photo.shape[0]):
        pixels = photo[i][:, skin[i, 0]]
        if pixels.shape[1] < MIN_SKIN_PIXELS:
            return None
        colours.append(pixels.median(dim=1).values)
    return torch.stack(colours)


class SkinTerm(nn.Module):
    """Bare arms: Σ_n mean over the bare-arm mask of ‖G(w) − the photo's skin colour‖² (0 where nothing is bare)."""

    name = "skin"

    def forward(self, generated: torch.Tensor, ws: torch.Tensor, targets: Any) -> torch.Tensor:
        """Scalar: the squared RGB distance from the skin colour, averaged over each photo's bare pixels."""
        if targets.bare_mask is None or targets.skin_rgb is None:
            return generated.new_zeros(())
        bare = targets.bare_mask
        error = (generated - targets.skin_rgb[:, :, None, None]).pow(2).sum(dim=1, keepdim=True)
        return ((bare * error).sum(dim=(1, 2, 3)) / bare.sum(dim=(1, 2, 3)).clamp_min(1.0)).sum()
