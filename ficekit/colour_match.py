"""Colour matching: the edited garment's colours mapped onto its exemplar collage's (ficekit.collage).

At the demo's 64 px the generator draws where a pattern's stripes, checks or dots go, but mixes their colours:
a grey-and-red stripe comes out red, white and off-grey. The collage, built from the gallery garments CLIP ranks
highest for the text, has the text's colours in their amounts. Inside the garment region, matching the
garment's values along the collage's main colour axis to the collage's, rank for rank, and its spread across that
axis to the collage's, keeps the generator's drawing (the map is monotone along the axis, so every edge stays and
light stays lighter than dark) and gives it the collage's colours. A step after the optimisation, like
stitching; FICE has none, so the `fice` bundle leaves it off.
"""

from __future__ import annotations

import torch

COLOUR_MATCHES = ("off", "collage")  # EditSettings.colour_match: none (FICE), or onto the text's exemplar collage


def match_colours(image: torch.Tensor, reference: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """`image` [N,3,H,W] with its pixels where region [N,1,H,W] > 0.5 recoloured toward the reference's colours
    there ([1 or N,3,H,W]). Along the reference's main colour axis (for a two-colour pattern, the line between its
    colours) the k-th lowest value becomes the reference's k-th lowest (ties keep their order); across it, the
    pixels take the reference's mean and spread, so the generator's stray hues shrink to the reference's instead
    of each channel moving alone and mixing new ones. Outside the region nothing changes."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image: expected [N, 3, H, W], got {list(image.shape)}")
    n, _, h, w = image.shape
    if reference.dim() != 4 or reference.shape[0] not in (1, n) or reference.shape[1:] != (3, h, w):
        raise ValueError(f"reference: expected [1 or {n}, 3, {h}, {w}], got {list(reference.shape)}")
    if region.shape != (n, 1, h, w):
        raise ValueError(f"region: expected {[n, 1, h, w]}, got {list(region.shape)}")
    reference = reference.to(image.device, image.dtype).expand(n, 3, h, w)
    out = image.clone()
    for i in range(n):
        inside = region[i, 0] > 0.5
        if not bool(inside.any()):
            continue
        pixels, wanted = image[i][:, inside], reference[i][:, inside]  # [3, K]
        axes = colour_axes(wanted)  # [3, 3], rows orthonormal
        along, wanted_along = axes @ pixels, axes @ wanted
        matched = torch.empty_like(along)
        order = along[0].argsort(stable=True)  # the main axis: histogram for histogram
        matched[0, order] = wanted_along[0].sort(stable=True).values
        scale = wanted_along[1:].std(dim=1, unbiased=False) / along[1:].std(dim=1, unbiased=False).clamp_min(1e-6)
        centred = along[1:] - along[1:].mean(dim=1, keepdim=True)  # the others: mean and spread only
        matched[1:] = centred * scale[:, None] + wanted_along[1:].mean(dim=1, keepdim=True)
        out[i][:, inside] = axes.T @ matched
    return out


def colour_axes(colours: torch.Tensor) -> torch.Tensor:
    """[3, 3]: the principal axes (rows, orthonormal, largest spread first) of colours [3, K], in float64 so that a
    plain garment's near-equal spreads still give an orthonormal basis."""
    centred = colours.double() - colours.double().mean(dim=1, keepdim=True)
    _, vectors = torch.linalg.eigh(centred @ centred.T)
    return vectors.flip(1).T.to(colours.dtype)
