"""Scoring one edit of a dataset evaluation: its result against its photo, with ficekit.eval.metrics.

Every method is judged by the same models, loaded once per run: the judge CLIP (the bundle's, or another
bundle's), the bundle's DensePose (pose part IoU, photo vs result) and, with --lpips-backbone, LPIPS. The pixel
metrics cover only what a method must keep (blend mask == 0, so soft edges count as edited); a metric with
nothing to measure there is None, an empty cell in metrics.csv.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ficekit.eval.methods import MethodContext

__all__ = ["Scorer", "build_scorer"]


def _lpips_net(path: Path) -> str:
    """The LPIPS backbone a weight file (or the first one found in a folder) belongs to; 'alex' if unknown."""
    from ficekit.eval.metrics import LPIPS_BACKBONE_FILES

    for net, name in LPIPS_BACKBONE_FILES.items():
        if path.name == name or (path.is_dir() and (path / name).is_file()):
            return net
    return "alex"


def _ssim_window_region(keep: torch.Tensor, window: int = 11) -> bool:
    """Whether SSIM has pixels to average: the image holds its window and the kept region survives the crop
    (ficekit.eval.metrics.ssim's valid region, which raises rather than return a score without one)."""
    h, w = keep.shape[-2:]
    r = window // 2
    return h >= window and w >= window and bool(keep[..., r : h - (window - 1 - r), r : w - (window - 1 - r)].any())


class Scorer:
    """Scores a result against its photo with ficekit.eval.metrics; one judge CLIP and DensePose for all."""

    def __init__(self, clip: Any, densepose: Any, lpips: Any) -> None:
        self.clip = clip
        self.densepose = densepose
        self.lpips = lpips
        self._photo_parts: tuple[str, torch.Tensor] | None = None

    def _parts(self, image: torch.Tensor) -> torch.Tensor:
        from ficekit.eval.metrics import densepose_maps

        labels, _ = densepose_maps(self.densepose, image[None])
        return labels  # [1,H,W]

    def score(self, key: str, photo: torch.Tensor, result: torch.Tensor, mask: torch.Tensor, text: str) -> dict[str, float | None]:
        """Metric values of one edit (None where a metric has nothing to measure). `key` names the photo, whose
        DensePose reading is kept for the next edit of the same photo."""
        from ficekit.eval.metrics import clip_score, part_iou, psnr, ssim

        x, y = photo[None], result[None]
        keep = (mask <= 0).to(photo.dtype)[None]  # [1,1,H,W]: pixels the method must keep; soft edges count as edited
        kept = bool(keep.any())
        scores: dict[str, float | None] = {
            "psnr_outside_mask": float(psnr(x, y, keep)[0]) if kept else None,
            "ssim_outside_mask": float(ssim(x, y, keep)[0]) if _ssim_window_region(keep) else None,
        }
        if self.lpips is not None:
            scores["lpips_outside_mask"] = float(self.lpips(x, y, keep)[0]) if kept else None
        if self.clip is not None:
            scores["clip_score"] = float(clip_score(self.clip, y, text)[0])
        scores["pose_part_iou"] = None
        if self.densepose is not None:
            if self._photo_parts is None or self._photo_parts[0] != key:
                self._photo_parts = (key, self._parts(photo))
            parts = self._photo_parts[1]
            scores["pose_part_iou"] = float(part_iou(parts, self._parts(result))[0])
        return scores


def build_scorer(ctx: MethodContext, judge_clip: str | None, lpips_backbone: str | os.PathLike | None) -> Scorer:
    """The run's scorer: judge_clip 'bundle' (the run's pipeline's CLIP), another bundle, or None (no CLIP
    score); the pipeline's DensePose; LPIPS from torchvision backbone weights, or None (no LPIPS)."""
    pipe = ctx.pipeline()
    clip = None
    if judge_clip == "bundle":
        clip = pipe.clip
    elif judge_clip is not None:
        from ficekit.bundle import load_bundle

        clip = load_bundle(judge_clip).load("clip", ctx.device)
    lpips = None
    if lpips_backbone is not None:
        from ficekit.eval.metrics import LpipsDistance

        path = Path(lpips_backbone)
        lpips = LpipsDistance(path, net=_lpips_net(path), device=ctx.device)
    return Scorer(clip, pipe.densepose, lpips)
