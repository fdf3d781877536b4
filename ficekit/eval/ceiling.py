"""The generator's ceiling on the synthetic benchmark: each case's ideal edit projected into W+.

The `ideal` row scores the renderer's own drawing of each target, which no generator may be able to draw. The
`ideal-projected` row scores the best the generator draws of it in W+ (the space an edit optimises in): the
ideal render inverted with ficekit.inversion's `optimize` method and pasted over the case's edit region. When
this row passes a case that the edits fail, the generator can draw the target and the guidance (CLIP term,
optimisation) did not find it; when it fails too, the generator is the limit.
"""

from __future__ import annotations

from typing import Any

import torch

from ficekit.generator.synthesis import synthesize_01
from ficekit.mask_ops import dilate

CEILING_ROW = "ideal-projected"
DEFAULT_CEILING_STEPS = 300  # W+ projection steps from e4e: enough for the v2 demo (pattern 72 / 72 cases judged)


def paste_over_edit_region(photo: torch.Tensor, drawing: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The photo [3, H, W] with `drawing` [3, H, W] inside `region` [H, W] grown by one pixel (the garment's
    anti-aliased rim, as the benchmark's PSNR outside the edit excludes it) and the photo bit for bit elsewhere."""
    if photo.shape != drawing.shape or photo.shape[-2:] != region.shape:
        raise ValueError(f"paste_over_edit_region: photo {tuple(photo.shape)}, drawing {tuple(drawing.shape)} and "
                         f"region {tuple(region.shape)} must share their size")  # fmt: skip
    inside = dilate(region[None, None].float(), 1)[0] > 0  # [1, H, W]
    return torch.where(inside, drawing, photo)


def projected_ideal(
    ideal: torch.Tensor,  # [3, R, R] in [0, 1]: the renderer's drawing of the target
    photo: torch.Tensor,  # [3, R, R] in [0, 1]: the photo the edit starts from
    region: torch.Tensor,  # [R, R] bool: the case's edit region
    generator: Any,
    encoder: Any,
    steps: int = DEFAULT_CEILING_STEPS,
    seed: int = 0,
) -> torch.Tensor:
    """[3, R, R]: G(w*) of the ideal's W+ projection (`optimize` from its e4e code, `steps` Adam steps on MSE),
    clamped to [0, 1] and pasted over the photo's edit region, so only the drawing of the garment is scored."""
    from ficekit.inversion.invert import invert

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"ceiling steps must be an int >= 1, got {steps!r}")
    device = next(generator.parameters()).device
    inversion = invert(ideal[None].to(device), generator, encoder, method="optimize", steps=steps, seed=seed,
                       progress=False)  # fmt: skip
    with torch.no_grad():
        drawing = synthesize_01(inversion.generator, inversion.ws)[0].clamp(0, 1).cpu()
    return paste_over_edit_region(photo, drawing, region)
