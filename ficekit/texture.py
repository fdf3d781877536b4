"""Exemplar texture guidance: CLIP picks garments that match the text from a gallery, and the edit matches their
texture statistics inside its region.

A small CLIP's gradient is easily fooled: it scores red blotches as a "red polka dot t-shirt". Choosing
exemplars is an easier task for the same CLIP (ranking real garments, not drawing one), and statistics that
ignore where things are (the masked mean and covariance of the colours and of oriented-derivative responses at
two scales, in the spirit of texture-synthesis losses) say what stripes, dots or checks look like without asking
G(w) to copy an exemplar's shape. A bundle ships its gallery as precomputed CLIP image features and statistics
(`TextureGallery`, role 'gallery'); `python -m ficekit.synthetic.build_gallery` writes the demo's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

GALLERY_FORMAT = "ficekit-texture-gallery"
GALLERY_VERSION = 2  # 2 adds the garments' pictures (ficekit.collage); version 1 files (statistics only) still load
READABLE_VERSIONS = (1, 2)
DILATIONS = (1, 2)  # scales of the derivative filters, in pixels
DEFAULT_EXEMPLARS = 8  # gallery garments whose statistics are averaged per text
MEAN_SCALE = 0.01  # squared colour/response difference of the means that counts as 1 (about 0.1 per channel)


def _filter_bank() -> torch.Tensor:
    """[4, 1, 3, 3] Sobel-like derivatives at 0°, 90°, 45° and 135°."""
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
    diagonal = torch.tensor([[0.0, 1.0, 2.0], [-1.0, 0.0, 1.0], [-2.0, -1.0, 0.0]]) / 4
    return torch.stack([sobel, sobel.T, diagonal, diagonal.flip(1)])[:, None]


FILTERS = _filter_bank()
CHANNELS = 3 + 3 * len(FILTERS) * len(DILATIONS)  # the colours and every filter on every colour at every scale


def texture_responses(images: torch.Tensor) -> torch.Tensor:
    """[N, CHANNELS, H, W]: the images [N,3,H,W] and each colour channel's oriented derivatives at each scale."""
    n, c, h, w = images.shape
    flat = images.reshape(n * c, 1, h, w)
    bank = FILTERS.to(images.device, images.dtype)
    responses = [F.conv2d(flat, bank, padding=d, dilation=d).reshape(n, c * len(FILTERS), h, w) for d in DILATIONS]
    return torch.cat([images, *responses], dim=1)


def texture_statistics(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean [N, C] and covariance [N, C, C] of texture_responses over masks [N,1,H,W] (weights ≥ 0)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected [N, 3, H, W], got {list(images.shape)}")
    if masks.shape != (images.shape[0], 1, *images.shape[2:]):
        raise ValueError(f"masks: expected [{images.shape[0]}, 1, {images.shape[2]}, {images.shape[3]}], "
                         f"got {list(masks.shape)}")  # fmt: skip
    responses = texture_responses(images)
    weights = masks / masks.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    mean = (responses * weights).sum(dim=(2, 3))
    centred = responses - mean[..., None, None]
    covariance = torch.einsum("nchw,ndhw->ncd", centred * weights, centred)
    return mean, covariance


def texture_distance(
    mean: torch.Tensor, covariance: torch.Tensor, target_mean: torch.Tensor, target_covariance: torch.Tensor
) -> torch.Tensor:
    """[N]: squared mean difference / MEAN_SCALE + squared covariance difference relative to the target's size."""
    mean_term = (mean - target_mean).pow(2).sum(dim=1) / MEAN_SCALE
    scale = target_covariance.pow(2).sum(dim=(1, 2)).clamp_min(1e-12)
    return mean_term + (covariance - target_covariance).pow(2).sum(dim=(1, 2)) / scale


class TextureGallery(nn.Module):
    """Garments to draw textures from: unit CLIP image features [M, D] of the pictures they come from and the
    garments' texture statistics (means [M, C], covariances [M, C, C]), as buffers (a bundle's 'gallery').

    The pictures themselves (for ficekit.collage) are optional, either stored (`images` [M,3,H,W] uint8 and
    garment `masks` [M,1,H,W] bool) or, for a gallery of ficekit's synthetic world, as the `renders` that redraw
    them ({'world', 'size', 'people': [M] render seeds, 'slots': [M] garment slots}; 10 ms a picture).
    """

    def __init__(self, clip_features: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor,
                 source: str = "", images: torch.Tensor | None = None, masks: torch.Tensor | None = None,
                 renders: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__()
        m = clip_features.shape[0]
        if clip_features.dim() != 2 or m < 1:
            raise ValueError(f"clip_features: expected [M, D] with M >= 1, got {list(clip_features.shape)}")
        if means.shape != (m, CHANNELS) or covariances.shape != (m, CHANNELS, CHANNELS):
            raise ValueError(f"gallery statistics: expected means [{m}, {CHANNELS}] and covariances "
                             f"[{m}, {CHANNELS}, {CHANNELS}], got {list(means.shape)} and {list(covariances.shape)}")  # fmt: skip
        self.register_buffer("clip_features", F.normalize(clip_features.float(), dim=-1))
        self.register_buffer("means", means.float())
        self.register_buffer("covariances", covariances.float())
        self.source = source
        if (images is None) != (masks is None):
            raise ValueError("gallery pictures: give both images and masks, or neither")
        if images is not None and masks is not None:
            if images.dim() != 4 or images.shape[:2] != (m, 3) or masks.shape != (m, 1, *images.shape[2:]):
                raise ValueError(f"gallery pictures: expected images [{m}, 3, H, W] and masks [{m}, 1, H, W], "
                                 f"got {list(images.shape)} and {list(masks.shape)}")  # fmt: skip
            if images.dtype != torch.uint8:
                raise ValueError(f"gallery pictures: images must be uint8 (0-255), got {images.dtype}")
            self.register_buffer("images", images)
            self.register_buffer("masks", masks.bool())
        else:
            self.images = self.masks = None
        if renders is not None:
            renders = _checked_renders(renders, m)
        self.renders = renders

    def __len__(self) -> int:
        return self.clip_features.shape[0]

    @property
    def has_pictures(self) -> bool:
        """Whether the garments' pictures are here (stored or redrawable), as ficekit.collage needs."""
        return self.images is not None or self.renders is not None

    @torch.no_grad()
    def top_exemplars(self, text_features: torch.Tensor, k: int = DEFAULT_EXEMPLARS) -> torch.Tensor:
        """[T, k] indices of the gallery garments CLIP ranks highest for each text [T, D], best first."""
        if text_features.dim() != 2 or text_features.shape[1] != self.clip_features.shape[1]:
            raise ValueError(f"text_features: expected [T, {self.clip_features.shape[1]}] (the gallery's CLIP), "
                             f"got {list(text_features.shape)}")  # fmt: skip
        scores = F.normalize(text_features.float(), dim=-1).to(self.clip_features.device) @ self.clip_features.T
        return scores.topk(min(k, len(self)), dim=1).indices

    @torch.no_grad()
    def exemplar_pictures(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The pictures of garments `indices`: images [k,3,H,W] in [0,1] and garment masks [k,1,H,W] in {0,1}."""
        if self.images is not None and self.masks is not None:
            index = torch.as_tensor(list(indices), dtype=torch.long, device=self.images.device)
            return self.images[index].float() / 255, self.masks[index].float()
        if self.renders is None:
            raise ValueError("this gallery has statistics only, no pictures (rebuild it with build_gallery)")
        from ficekit.synthetic.render import render  # only galleries of the synthetic world redraw their pictures

        images, masks = [], []
        for i in indices:
            sample = render(self.renders["people"][i], size=self.renders["size"], world=self.renders["world"])
            images.append(sample.to_tensor())
            masks.append(torch.from_numpy(sample.mask(self.renders["slots"][i]))[None].float())
        device = self.clip_features.device
        return torch.stack(images).to(device), torch.stack(masks).to(device)

    @torch.no_grad()
    def exemplar_statistics(self, text_features: torch.Tensor, k: int = DEFAULT_EXEMPLARS) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean statistics ([T, C], [T, C, C]) of the k gallery garments CLIP ranks highest for each text [T, D]."""
        top = self.top_exemplars(text_features, k)  # [T, k]
        return self.means[top].mean(dim=1), self.covariances[top].mean(dim=1)

    def save(self, path: str | Path) -> None:
        """Write the gallery file (fp16 tensors; read back by `load_gallery`)."""
        record = {"format": GALLERY_FORMAT, "version": GALLERY_VERSION, "source": self.source,
                  "clip_features": self.clip_features.half(), "means": self.means.half(),
                  "covariances": self.covariances.half()}  # fmt: skip
        if self.images is not None:
            record |= {"images": self.images.cpu(), "masks": self.masks.cpu()}
        if self.renders is not None:
            record["renders"] = self.renders
        torch.save(record, path)


def _checked_renders(renders: Any, m: int) -> dict[str, Any]:
    """The `renders` record of a gallery of m garments, checked: world, size, people [m] ints, slots [m] strings."""
    fields = ("world", "size", "people", "slots")
    if not isinstance(renders, dict) or any(k not in renders for k in fields):
        raise ValueError(f"gallery renders: expected a dict with {list(fields)}, got {renders!r:.200}")
    people, slots = list(renders["people"]), list(renders["slots"])
    if len(people) != m or len(slots) != m:
        raise ValueError(f"gallery renders: expected {m} people and slots, got {len(people)} and {len(slots)}")
    if not all(isinstance(p, int) for p in people) or not all(isinstance(s, str) for s in slots):
        raise ValueError("gallery renders: people must be ints (render seeds) and slots strings")
    return {"world": str(renders["world"]), "size": int(renders["size"]), "people": people, "slots": slots}


def load_gallery(path: str | Path, device: Any = "cpu") -> TextureGallery:
    """The TextureGallery in `path`; ValueError naming the problem when the file is not one."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets one clear message
        raise ValueError(f"{path}: not a readable texture gallery ({type(error).__name__}: {error})") from None
    if not isinstance(record, dict) or record.get("format") != GALLERY_FORMAT:
        raise ValueError(f"{path}: not a texture gallery (expected format {GALLERY_FORMAT!r})")
    if record.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{path}: texture gallery version {record.get('version')!r}; this ficekit reads "
                         f"{list(READABLE_VERSIONS)}")  # fmt: skip
    gallery = TextureGallery(record["clip_features"], record["means"], record["covariances"],
                             str(record.get("source", "")), images=record.get("images"), masks=record.get("masks"),
                             renders=record.get("renders"))  # fmt: skip
    return gallery.to(device).eval().requires_grad_(False)


def garment_region(targets: Any) -> torch.Tensor:
    """[N, 1, H, W] where the new garment is drawn: the edit region (1 − keep) less the arms it leaves bare
    (targets.bare_mask, ficekit.skin), which are skin; the region the texture and collage terms guide."""
    region = 1 - targets.keep_mask
    if targets.bare_mask is not None:
        region = region * (1 - targets.bare_mask)
    return region


class TextureTerm(nn.Module):
    """Exemplar texture guidance: Σ_n texture_distance of G(w)'s edit region (1 − keep, less the arms the new
    garment leaves bare) from the mean statistics of the gallery garments CLIP ranks highest for the text
    (averaged over the texts)."""

    name = "texture"

    def __init__(self, clip: nn.Module, gallery: TextureGallery, exemplars: int = DEFAULT_EXEMPLARS) -> None:
        super().__init__()
        if isinstance(exemplars, bool) or not isinstance(exemplars, int) or exemplars < 1:
            raise ValueError(f"texture exemplars must be an int >= 1, got {exemplars!r}")
        self.clip = clip
        self.gallery = gallery
        self.exemplars = exemplars

    def prepare(self, photo: torch.Tensor, texts: str | Sequence[str] | None) -> dict[str, torch.Tensor]:
        """The exemplars' statistics for `texts`, averaged over the texts: mean [1, C], covariance [1, C, C]."""
        if texts is None:
            raise ValueError("texts: the texture term needs the edit's text (a string or a list of strings)")
        mean, covariance = self.gallery.exemplar_statistics(self.clip.encode_text(texts), self.exemplars)
        device = photo.device
        return {"texture_mean": mean.mean(0, keepdim=True).to(device),
                "texture_covariance": covariance.mean(0, keepdim=True).to(device)}  # fmt: skip

    def forward(self, generated: torch.Tensor, ws: torch.Tensor, targets: Any) -> torch.Tensor:
        """Scalar Σ_n texture distance between G(w) in the edit region and the exemplars."""
        if targets.texture_mean is None or targets.texture_covariance is None:
            raise ValueError("targets: the texture term needs texture_mean and texture_covariance (Objective.prepare)")
        mean, covariance = texture_statistics(generated, garment_region(targets))
        return texture_distance(mean, covariance, targets.texture_mean, targets.texture_covariance).sum()
