"""Exemplar collage guidance: the gallery garments CLIP ranks highest for the text, laid into the photo's frame,
as a pixel target for G(w) inside the edit region.

The texture term (ficekit.texture) says what a pattern's statistics are, not where its stripes or dots go, and
the small CLIP's gradient draws multicoloured bands that fool it. Yet the generator draws a garment cleanly when
it is pulled toward a picture of one (the benchmark's W+ ceiling). The collage is such a picture, built without
knowing the answer: each pixel comes from the first of the text's top-ranked exemplars (in rank order) whose
garment covers it, at the same place in the frame (framed people stand alike, so a stripe falls where a stripe
would), and the pixels no exemplar covers take their filled neighbours' colours. The term pulls G(w) toward it
only inside the edit region, less the arms the new garment leaves bare (ficekit.skin).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ficekit.texture import DEFAULT_EXEMPLARS, TextureGallery, garment_region

NO_PICTURES = ("needs a gallery with its pictures (a gallery file of version 2, python -m "
               "ficekit.synthetic.build_gallery); this gallery has statistics only")  # fmt: skip


def exemplar_collage(images: torch.Tensor, masks: torch.Tensor, max_growth: int | None = None) -> torch.Tensor:
    """[1, 3, H, W]: each pixel from the first of images [K,3,H,W] whose garment mask [K,1,H,W] (> 0.5) covers it;
    a pixel none covers takes the mean of its already filled 3×3 neighbours, ring by ring outwards (at most
    `max_growth` rings; None = until the frame is full). All zeros when no mask covers any pixel."""
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] < 1:
        raise ValueError(f"images: expected [K, 3, H, W] with K >= 1, got {list(images.shape)}")
    if masks.shape != (images.shape[0], 1, *images.shape[2:]):
        raise ValueError(f"masks: expected {[images.shape[0], 1, *images.shape[2:]]}, got {list(masks.shape)}")
    h, w = images.shape[2:]
    collage = torch.zeros(1, 3, h, w, dtype=images.dtype, device=images.device)
    filled = torch.zeros(1, 1, h, w, dtype=images.dtype, device=images.device)
    for image, mask in zip(images, masks, strict=True):
        new = (mask[None] > 0.5).to(images.dtype) * (1 - filled)
        collage = collage + new * image[None]
        filled = filled + new
    if not bool(filled.any()):
        return collage
    ring = torch.ones(1, 1, 3, 3, dtype=images.dtype, device=images.device)
    for _ in range(max_growth if max_growth is not None else h + w):
        if bool(filled.all()):
            break
        total = F.conv2d((collage * filled).reshape(3, 1, h, w), ring, padding=1).reshape(1, 3, h, w)
        count = F.conv2d(filled, ring, padding=1)
        grow = (count > 0) & (filled == 0)
        collage = torch.where(grow, total / count.clamp_min(1), collage)
        filled = torch.where(grow, torch.ones_like(filled), filled)
    return collage


@torch.no_grad()
def text_collage(clip: nn.Module, gallery: TextureGallery, texts: str | Sequence[str], size: tuple[int, int],
                 exemplars: int = DEFAULT_EXEMPLARS) -> torch.Tensor:  # fmt: skip
    """[1, 3, *size]: the exemplar collage of the gallery garments CLIP ranks highest for each text, averaged over
    the texts (on the gallery's device)."""
    if not gallery.has_pictures:
        raise ValueError(f"the collage {NO_PICTURES}")
    top = gallery.top_exemplars(clip.encode_text([texts] if isinstance(texts, str) else list(texts)), exemplars)
    collages = []
    for indices in top.tolist():  # [T, k]
        images, masks = gallery.exemplar_pictures(indices)
        collages.append(exemplar_collage(images, masks))
    collage = torch.cat(collages).mean(0, keepdim=True)
    if collage.shape[-2:] != tuple(size):
        collage = F.interpolate(collage, size=tuple(size), mode="bilinear", align_corners=False)
    return collage


def collage_composite(photo: torch.Tensor, keep: torch.Tensor, collage: torch.Tensor, bare: torch.Tensor | None = None,
                      skin_rgb: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """The photo [N,3,H,W] with the collage [1 or N,3,H,W] pasted where it is not kept (keep [N,1,H,W] in [0, 1]),
    and the skin colour skin_rgb [N,3] where the new garment leaves the arms bare (bare [N,1,H,W]): a rough
    picture of the edit, for the encoder to start the optimisation from (ficekit.pipeline, start='collage')."""
    if photo.dim() != 4 or photo.shape[1] != 3:
        raise ValueError(f"photo: expected [N, 3, H, W], got {list(photo.shape)}")
    n, _, h, w = photo.shape
    if keep.shape != (n, 1, h, w):
        raise ValueError(f"keep: expected {[n, 1, h, w]}, got {list(keep.shape)}")
    if collage.dim() != 4 or collage.shape[0] not in (1, n) or collage.shape[1:] != (3, h, w):
        raise ValueError(f"collage: expected [1 or {n}, 3, {h}, {w}], got {list(collage.shape)}")
    fill = collage.to(photo.dtype)
    if bare is not None and skin_rgb is not None:
        if bare.shape != (n, 1, h, w) or skin_rgb.shape != (n, 3):
            raise ValueError(f"bare / skin_rgb: expected {[n, 1, h, w]} and {[n, 3]}, "
                             f"got {list(bare.shape)} and {list(skin_rgb.shape)}")  # fmt: skip
        fill = bare * skin_rgb[:, :, None, None].to(photo.dtype) + (1 - bare) * fill
    return photo * keep + (1 - keep) * fill


class CollageTerm(nn.Module):
    """Exemplar collage guidance: Σ_n mean_chw (R·(G(w) − collage))² with R = (1 − keep)(1 − bare), the collage
    built from the gallery garments CLIP ranks highest for the text (averaged over the texts)."""

    name = "collage"

    def __init__(self, clip: nn.Module, gallery: TextureGallery, exemplars: int = DEFAULT_EXEMPLARS) -> None:
        super().__init__()
        if isinstance(exemplars, bool) or not isinstance(exemplars, int) or exemplars < 1:
            raise ValueError(f"collage exemplars must be an int >= 1, got {exemplars!r}")
        if not gallery.has_pictures:
            raise ValueError(f"the collage term {NO_PICTURES}")
        self.clip = clip
        self.gallery = gallery
        self.exemplars = exemplars

    @torch.no_grad()
    def prepare(self, photo: torch.Tensor, texts: str | Sequence[str] | None) -> dict[str, torch.Tensor]:
        """The texts' collage at the photo's size, averaged over the texts: [1, 3, H, W]."""
        if texts is None:
            raise ValueError("texts: the collage term needs the edit's text (a string or a list of strings)")
        collage = text_collage(self.clip, self.gallery, texts, tuple(photo.shape[-2:]), self.exemplars)
        return {"collage": collage.to(photo.device, photo.dtype)}

    def forward(self, generated: torch.Tensor, ws: torch.Tensor, targets: Any) -> torch.Tensor:
        """Scalar Σ_n masked MSE between G(w) and the collage inside the edit region."""
        if targets.collage is None:
            raise ValueError("targets: the collage term needs a collage (Objective.prepare)")
        return (garment_region(targets) * (generated - targets.collage)).pow(2).mean(dim=(1, 2, 3)).sum()
