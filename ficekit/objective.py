"""FICE's editing objective: named loss terms, each a small module, and their weighted sum.

One edit optimises W+ so that G(W+) matches a text under CLIP while keeping the rest of the photo, the
pose and the head. Each term is an nn.Module with a class-level `name` and the call
`forward(generated [N,3,H,W] in [0,1], ws [N,num_ws,w_dim], targets: EditTargets) -> scalar`; terms that
look at the photo also have `prepare(photo, texts) -> {EditTargets field: tensor}`, run once per edit.

Every image term reduces as FICE's trainer.py does: a mean per sample, summed over the batch, so a batch of
N edits is N independent edits optimised together. FICE's terms and weights (trainer.py, commit 7354216):

    clip       1   Σ_n Σ_t (1 − cos(CLIP(G(w)_n), CLIP(text_t)))
    img       30   Σ_n mean_chw (keep·G(w) − keep·photo)²           keep = 1 − segmenter body prob of the photo
    shape     10   Σ_n mean_psq (body(photo) − body(G(w)))²         body = DensePose part probs, whole-image box
    head_shape 1   Σ_n mean_hw (head(photo) − head(G(w)))²          head = segmenter head prob
    w_delta    1   Σ_n mean_id (w_n0 − w_ni)²,  i ≥ 1               (ficekit.regularizers)

total = Σ weight·term. Latent regularisers live in ficekit.regularizers and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ficekit.collage import CollageTerm
from ficekit.perception.densepose import FICE_BODY_PARTS
from ficekit.regularizers import (
    REGULARIZERS,
    LatentRegularizer,
    NoRegularizer,
    PNRegularizer,
    WDelta,
    WMean,
    build_regularizer,
    register_regularizer,
    sample_w,
)
from ficekit.shapes import check_shape
from ficekit.skin import SkinTerm
from ficekit.texture import DEFAULT_EXEMPLARS, TextureTerm

logger = logging.getLogger(__name__)

__all__ = [
    "FICE_WEIGHTS",
    "REGULARIZERS",
    "CLIP_REGIONS",
    "ClipTerm",
    "EditTargets",
    "HeadShapeTerm",
    "ImageTerm",
    "LatentRegularizer",
    "NoRegularizer",
    "Objective",
    "ObjectiveValue",
    "PNRegularizer",
    "ShapeTerm",
    "WDelta",
    "WMean",
    "build_objective",
    "build_regularizer",
    "draw_view_noise",
    "random_views",
    "register_regularizer",
    "sample_w",
]

# FICE's weights (trainer.Trainer.set_defaults); read-only so no caller changes everyone's defaults.
FICE_WEIGHTS: Mapping[str, float] = MappingProxyType({"clip": 1, "img": 30, "shape": 10, "head_shape": 1, "w_delta": 1})


def _mse_per_sample_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """FICE's reduction: squared error, mean over every dim but the batch, summed over the batch."""
    return F.mse_loss(a, b, reduction="none").flatten(1).mean(1).sum()


# ---------------------------------------------------------------------------------------------------
# What an edit aims at.


@dataclass(eq=False)
class EditTargets:
    """Everything the objective compares G(w) with, computed once per edit from the photo (no gradient).

    photo:         [N, 3, H, W] in [0, 1].
    keep_mask:     [N, 1, H, W] in [0, 1], 1 = reconstruct the photo there (FICE: 1 − body).
    body_parts:    [N, P, S, S] the photo's DensePose body-part probabilities, None without a shape term.
    head:          [N, 1, H, W] the photo's head probability, None without a head-shape term.
    text_features: [T, D] unit-length CLIP text features, None without a CLIP term.
    ws_init:       [N, num_ws, w_dim] starting W+ (FICE: e4e's inversion of the photo).
    texture_mean, texture_covariance: [1, C], [1, C, C] the text's exemplar texture statistics
                   (ficekit.texture), None without a texture term.
    bare_mask:     [N, 1, H, W] where the new garment leaves the arms bare (ficekit.skin), None when unknown.
    skin_rgb:      [N, 3] the photo's skin colour (ficekit.skin), None when unknown.
    collage:       [1, 3, H, W] the text's exemplar collage (ficekit.collage), None without a collage term.
    """

    photo: torch.Tensor
    keep_mask: torch.Tensor
    body_parts: torch.Tensor | None
    head: torch.Tensor | None
    text_features: torch.Tensor | None
    ws_init: torch.Tensor
    texture_mean: torch.Tensor | None = None
    texture_covariance: torch.Tensor | None = None
    bare_mask: torch.Tensor | None = None
    skin_rgb: torch.Tensor | None = None
    collage: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_shape("photo", self.photo, [None, 3, None, None])
        n, _, h, w = self.photo.shape
        check_shape("keep_mask", self.keep_mask, [n, 1, h, w])
        check_shape("ws_init", self.ws_init, [n, None, None])
        if self.body_parts is not None:
            check_shape("body_parts", self.body_parts, [n, None, None, None])
        if self.head is not None:
            check_shape("head", self.head, [n, 1, h, w])
        if self.bare_mask is not None:
            check_shape("bare_mask", self.bare_mask, [n, 1, h, w])
        if self.skin_rgb is not None:
            check_shape("skin_rgb", self.skin_rgb, [n, 3])
        if self.collage is not None:
            check_shape("collage", self.collage, [1, 3, h, w])
        if self.text_features is not None:
            check_shape("text_features", self.text_features, [None, None])

    @property
    def batch_size(self) -> int:
        """N, the number of images edited together."""
        return self.photo.shape[0]


@dataclass(eq=False)
class ObjectiveValue:
    """One evaluation of the objective.

    total:   scalar tensor Σ weight·term (differentiable).
    terms:   term name -> weighted scalar tensor (what FICE logs).
    raw:     term name -> unweighted scalar tensor.
    seconds: term name -> forward seconds (CUDA-synchronised), or None when the objective's timing is off.
    """

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    raw: dict[str, torch.Tensor]
    seconds: dict[str, float] | None = None


# ---------------------------------------------------------------------------------------------------
# Terms.


def _need(targets: EditTargets, field: str, term: str) -> torch.Tensor:
    value = getattr(targets, field)
    if value is None:
        raise ValueError(f"{term} term: targets.{field} is None; build the targets with Objective.prepare")
    return value


# Random views for the CLIP term (clip_augment > 0): shift, scale and pixel noise, as CLIP-guided generators use
# against adversarial pixel patterns. A pattern CLIP sees in every view is a pattern, not a CLIP blind spot.
VIEW_SHIFT = 0.08  # largest translation in grid_sample units (the image spans [-1, 1]): 4 % of the side
VIEW_SCALE = 0.1  # largest zoom in or out
VIEW_NOISE = 0.02  # std of the Gaussian pixel noise ([0, 1] images)


def draw_view_noise(
    n: int, views: int, image_size: Sequence[int], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random numbers of random_views for n images of [3, H, W] (image_size [.., H, W]), in the order
    random_views draws them: zoom U(0,1) [V*N], shift U(0,1) [V*N, 2], pixel noise N(0,1) [V*N, 3, H, W].
    Drawn before a compiled step, they are inputs of its graph, so compiled and eager steps see the same views."""
    h, w = image_size[-2:]
    zoom = torch.rand(views * n, device=device, dtype=dtype)
    shift = torch.rand(views * n, 2, device=device, dtype=dtype)
    pixels = torch.randn(views * n, 3, h, w, device=device, dtype=dtype)
    return zoom, shift, pixels


def random_views(
    images: torch.Tensor,  # [N, 3, H, W]
    views: int,  # copies per image
    noise: Sequence[torch.Tensor] | None = None,  # draw_view_noise's output; None = drawn here (global RNG)
) -> torch.Tensor:
    """`views` randomly shifted, scaled and noised copies of each image, differentiably: [views * N, 3, H, W]
    (view-major: rows v*N .. v*N + N - 1 are view v of the N images). Uses the global torch RNG."""
    n = images.shape[0]
    zoom, shift, pixels = (
        noise if noise is not None else draw_view_noise(n, views, images.shape, images.device, images.dtype)
    )
    theta = torch.zeros(views * n, 2, 3, device=images.device, dtype=images.dtype)
    scale = 1 + VIEW_SCALE * (2 * zoom.to(images.dtype) - 1)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = VIEW_SHIFT * (2 * shift.to(images.dtype) - 1)
    batch = images.repeat(views, 1, 1, 1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    warped = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return warped + VIEW_NOISE * pixels.to(warped.dtype)


CLIP_REGIONS = ("image", "edit")  # what the CLIP term scores: G(w) (FICE), or G(w) over the photo's kept pixels


class ClipTerm(nn.Module):
    """CLIP text guidance: Σ_n Σ_t (1 − cos(CLIP(generated_n), text_t)), a sum over batch and texts
    (FICE `clip_loss_fn`; FICE uses one text). With `augment` = V > 0 the cosine is the mean over V random
    views of each image (random_views), a ficekit option that keeps small CLIPs from being fooled. With
    `region` 'edit' CLIP scores keep·photo + (1 − keep)·G(w), the picture the edit delivers, so G(w) cannot
    satisfy the text with pixels the stitch throws away (ficekit; 'image' = G(w) itself, FICE)."""

    name = "clip"

    def __init__(
        self,
        clip: nn.Module,  # ClipGuide: encode_image([N,3,H,W] in [0,1]) -> [N,D], encode_text, similarity
        augment: int = 0,  # random views per image; 0 = the image itself (FICE)
        region: str = "image",  # CLIP_REGIONS: 'image' = G(w) (FICE), 'edit' = G(w) over the kept photo
    ) -> None:
        super().__init__()
        if isinstance(augment, bool) or not isinstance(augment, int) or augment < 0:
            raise ValueError(f"clip augment must be an int >= 0 (views per image), got {augment!r}")
        if region not in CLIP_REGIONS:
            raise ValueError(f"clip region must be one of {list(CLIP_REGIONS)}, got {region!r}")
        self.clip = clip
        self.augment = augment
        self.region = region

    def prepare(self, photo: torch.Tensor, texts: str | Sequence[str] | None) -> dict[str, torch.Tensor]:
        """Unit-length text features [T, D] of `texts`."""
        if texts is None:
            raise ValueError("texts: the clip term needs the edit's text (a string or a list of strings)")
        return {"text_features": self.clip.encode_text(texts)}

    def draw_noise(
        self, image_shape: Sequence[int], device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, ...] | None:
        """The random numbers one forward on images of `image_shape` [N,3,H,W] would draw (None: it draws none)."""
        if not self.augment:
            return None
        return draw_view_noise(image_shape[0], self.augment, image_shape, device, dtype)

    def forward(
        self,
        generated: torch.Tensor,
        ws: torch.Tensor,
        targets: EditTargets,
        noise: Sequence[torch.Tensor] | None = None,  # draw_noise's output; None = drawn here
    ) -> torch.Tensor:
        """Scalar Σ(1 − cosine similarity) between the generated images (over the kept photo under region
        'edit') and the target texts."""
        text = _need(targets, "text_features", self.name)
        if self.region == "edit":
            check_shape("generated", generated, list(targets.photo.shape))
            generated = targets.keep_mask * targets.photo + (1 - targets.keep_mask) * generated
        if not self.augment:
            similarity = self.clip.similarity(self.clip.encode_image(generated), text)  # [N, T]
        else:
            views = self.clip.encode_image(random_views(generated, self.augment, noise))  # [V * N, D]
            similarity = self.clip.similarity(views, text).view(self.augment, generated.shape[0], -1).mean(0)
        return (1 - similarity).sum()


class ImageTerm(nn.Module):
    """Masked reconstruction: Σ_n mean_chw (keep·generated − keep·photo)² (FICE `img_loss_fn` on masked images)."""

    name = "img"

    def forward(self, generated: torch.Tensor, ws: torch.Tensor, targets: EditTargets) -> torch.Tensor:
        """Scalar masked MSE between generated and the photo, per-sample mean summed over the batch."""
        check_shape("generated", generated, list(targets.photo.shape))
        keep = targets.keep_mask
        return _mse_per_sample_sum(keep * generated, keep * targets.photo)


class ShapeTerm(nn.Module):
    """Pose preservation: Σ_n mean_psq (body(photo) − body(generated))² with body = DensePose body-part
    probabilities (softmax(fine)[indices] · P(person)) on one whole-image box (FICE `shape_loss_fn`)."""

    name = "shape"

    def __init__(
        self,
        densepose: nn.Module,  # DensePoseChartModel: images [N,3,H,W] in [0,1] -> DensePoseOutput
        indices: Sequence[int] = FICE_BODY_PARTS,  # fine-segmentation charts compared (FICE: torso, hands, arms, head)
    ) -> None:
        super().__init__()
        self.densepose = densepose
        self.indices = tuple(indices)

    def body(self, images: torch.Tensor) -> torch.Tensor:
        """Body-part probabilities [N, len(indices), S, S] of images [N,3,H,W] (box = the whole image)."""
        parts = self.densepose(images).body_parts(self.indices)
        check_shape("DensePose body parts", parts, [images.shape[0], len(self.indices), None, None])
        return parts

    def prepare(self, photo: torch.Tensor, texts: Any = None) -> dict[str, torch.Tensor]:
        """The photo's body-part probabilities."""
        return {"body_parts": self.body(photo)}

    def forward(self, generated: torch.Tensor, ws: torch.Tensor, targets: EditTargets) -> torch.Tensor:
        """Scalar MSE between the photo's and the generated images' body parts."""
        return _mse_per_sample_sum(_need(targets, "body_parts", self.name), self.body(generated))


class HeadShapeTerm(nn.Module):
    """Head preservation: Σ_n mean_hw (head(photo) − head(generated))² with head = the segmenter's 'head'
    probability [N,1,H,W] (FICE: DeepLabV3 head channel; a parser's merged 'head' works too)."""

    name = "head_shape"

    def __init__(
        self,
        segmenter: nn.Module,  # FiceSegmenter or SegmentationParser whose masks include 'head'
    ) -> None:
        super().__init__()
        names = getattr(segmenter, "names", None)
        if names is not None and "head" not in names:
            raise ValueError(f"segmenter: the head-shape term needs a 'head' mask; this segmenter has {list(names)}")
        self.segmenter = segmenter

    def head(self, images: torch.Tensor) -> torch.Tensor:
        """Head probability [N, 1, H, W] of images [N,3,H,W] in [0,1]."""
        return self.segmenter(images)["head"]

    def prepare(self, photo: torch.Tensor, texts: Any = None) -> dict[str, torch.Tensor]:
        """The photo's head probability."""
        return {"head": self.head(photo)}

    def forward(self, generated: torch.Tensor, ws: torch.Tensor, targets: EditTargets) -> torch.Tensor:
        """Scalar MSE between the photo's and the generated images' head probabilities."""
        return _mse_per_sample_sum(_need(targets, "head", self.name), self.head(generated))


# ---------------------------------------------------------------------------------------------------
# The weighted sum.


class Objective(nn.Module):
    """Σ weight·term over named terms; terms with weight 0 are neither prepared nor computed.

    forward(generated [N,3,H,W] in [0,1], ws [N,num_ws,w_dim], targets) -> ObjectiveValue.
    """

    def __init__(
        self,
        terms: Mapping[str, nn.Module] | Sequence[nn.Module],  # named terms, or terms named by their `name`
        weights: Mapping[str, float] | None = None,  # term name -> weight; a term not listed weighs 1
        timing: bool = False,  # also time each term's forward (synchronising CUDA), in ObjectiveValue.seconds
    ) -> None:
        super().__init__()
        if not isinstance(terms, Mapping):
            unnamed = [type(t).__name__ for t in terms if not isinstance(getattr(t, "name", None), str)]
            if unnamed:
                raise ValueError(f"terms: {unnamed} have no `name`; pass a mapping name -> term instead")
            names = [t.name for t in terms]
            if len(set(names)) != len(names):
                raise ValueError(f"terms: names must be unique, got {names}")
            terms = dict(zip(names, terms, strict=True))
        self.terms = nn.ModuleDict(terms)
        weights = dict(weights or {})
        unknown = [k for k in weights if k not in self.terms]
        if unknown:
            raise ValueError(f"weights: unknown term(s) {unknown}; known terms: {list(self.terms)}")
        self.weights: dict[str, float] = {}
        for name in self.terms:
            value = float(weights.get(name, 1.0))
            if not math.isfinite(value):
                raise ValueError(f"weights[{name!r}]: expected a finite number, got {weights[name]!r}")
            self.weights[name] = value
        if not self.active:
            raise ValueError(f"every term has weight 0 (weights {self.weights}); nothing to optimise")
        self.timing = timing

    @property
    def active(self) -> list[str]:
        """Names of the terms with a nonzero weight, in evaluation order."""
        return [name for name in self.terms if self.weights[name] != 0]

    @torch.no_grad()
    def prepare(
        self,
        photo: torch.Tensor,  # [N,3,H,W] in [0,1]
        keep_mask: torch.Tensor,  # [N,1,H,W] in [0,1], 1 = reconstruct (FICE: 1 − segmenter body prob)
        texts: str | Sequence[str] | None,  # edit text(s); needed when a CLIP term is active
        ws_init: torch.Tensor,  # [N,num_ws,w_dim] starting W+ (e.g. from e4e)
        bare_mask: torch.Tensor | None = None,  # [N,1,H,W] where the arms are left bare (ficekit.skin)
        skin_rgb: torch.Tensor | None = None,  # [N,3] the photo's skin colour (ficekit.skin)
    ) -> EditTargets:
        """The edit's targets: the photo's body parts, head and text features through the active terms."""
        check_shape("photo", photo, [None, 3, None, None])
        if not photo.is_floating_point():
            raise ValueError(f"photo: expected a float tensor in [0,1], got dtype {photo.dtype}")
        fields: dict[str, torch.Tensor] = {}
        for name in self.active:
            prepare = getattr(self.terms[name], "prepare", None)
            if prepare is not None:
                fields.update(prepare(photo, texts))
        return EditTargets(
            photo=photo.detach(),
            keep_mask=keep_mask.detach(),
            body_parts=fields.get("body_parts"),
            head=fields.get("head"),
            text_features=fields.get("text_features"),
            ws_init=ws_init.detach(),
            texture_mean=fields.get("texture_mean"),
            texture_covariance=fields.get("texture_covariance"),
            bare_mask=None if bare_mask is None else bare_mask.detach(),
            skin_rgb=None if skin_rgb is None else skin_rgb.detach(),
            collage=fields.get("collage"),
        )

    @torch.no_grad()
    def retarget(
        self,
        targets: EditTargets,  # an earlier round's targets: its photo-side fields are kept
        texts: str | Sequence[str] | None,  # the new edit text(s)
        ws_init: torch.Tensor,  # [N,num_ws,w_dim] the new starting W+
        keep_mask: torch.Tensor | None = None,  # a new keep mask (the garment region changed); None = keep it
        bare_mask: torch.Tensor | None = None,  # the new instruction's bare arms (ficekit.skin); None = none
        skin_rgb: torch.Tensor | None = None,  # the photo's skin colour; None = keep the earlier round's
    ) -> EditTargets:
        """Targets for a follow-up edit of the same photo: only the text features (and start, keep mask) change, so
        the preservation terms stay held to the original photo and its perception is not run again."""
        text_fields: dict[str, torch.Tensor] = {}
        for name in self.active:
            if isinstance(self.terms[name], ClipTerm | TextureTerm | CollageTerm):
                text_fields.update(self.terms[name].prepare(targets.photo, texts))
        return dataclasses.replace(
            targets, **text_fields, ws_init=ws_init.detach(),
            keep_mask=targets.keep_mask if keep_mask is None else keep_mask.detach(),
            bare_mask=None if bare_mask is None else bare_mask.detach(),
            skin_rgb=targets.skin_rgb if skin_rgb is None else skin_rgb.detach(),
        )

    def forward(
        self, generated: torch.Tensor, ws: torch.Tensor, targets: EditTargets, skip: Collection[str] = ()
    ) -> ObjectiveValue:
        """Weighted and raw value of every active term not in `skip` and their sum (total is differentiable).
        `skip` leaves terms out of this evaluation (OptimizeConfig.perception_every); () = every term (FICE)."""
        n = targets.batch_size
        check_shape("generated", generated, [n, 3, None, None])
        check_shape("ws", ws, [n, None, None])
        names = self.evaluated(skip)
        if not self.timing:
            return self._weigh(self.raw_terms(generated, ws, targets, names=names))
        sync = generated.is_cuda
        raw: dict[str, torch.Tensor] = {}
        seconds: dict[str, float] = {}
        for name in names:
            if sync:
                torch.cuda.synchronize(generated.device)
            start = time.perf_counter()
            raw[name] = self._term(name, generated, ws, targets)
            if sync:
                torch.cuda.synchronize(generated.device)
            seconds[name] = time.perf_counter() - start
        return self._weigh(raw, seconds)

    def raw_terms(
        self,
        generated: torch.Tensor,  # [N,3,H,W] in [0,1]
        ws: torch.Tensor,  # [N,num_ws,w_dim]
        targets: EditTargets,
        noise: Mapping[str, Any] | None = None,  # draw_noise's output; None = terms draw their own
        names: Sequence[str] | None = None,  # the terms to evaluate, in evaluation order; None = every active one
    ) -> dict[str, torch.Tensor]:
        """Unweighted value of every active term (or of `names`), with no timing and no host synchronisation, so
        that torch.compile can trace it as one graph (ficekit.fast_step)."""
        noise = noise or {}
        names = self.active if names is None else names
        return {name: self._term(name, generated, ws, targets, noise.get(name)) for name in names}

    def evaluated(self, skip: Collection[str] = ()) -> list[str]:
        """The active terms an evaluation that leaves out `skip` computes, in evaluation order."""
        unknown = [name for name in skip if name not in self.terms]
        if unknown:
            raise ValueError(f"skip: unknown term(s) {unknown}; known terms: {list(self.terms)}")
        names = [name for name in self.active if name not in skip]
        if not names:
            raise ValueError(f"skip: leaves none of the active terms {self.active} to evaluate")
        return names

    def draw_noise(self, image_shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        """The random numbers one evaluation on images of `image_shape` draws, per term that can draw them ahead
        (a `draw_noise` method), in evaluation order; raw_terms(..., noise=) then uses them instead of drawing."""
        noise = {}
        for name in self.active:
            draw = getattr(self.terms[name], "draw_noise", None)
            value = draw(image_shape, device, dtype) if draw is not None else None
            if value is not None:
                noise[name] = value
        return noise

    def _term(
        self, name: str, generated: torch.Tensor, ws: torch.Tensor, targets: EditTargets, noise: Any = None
    ) -> torch.Tensor:
        term = self.terms[name]
        value = term(generated, ws, targets) if noise is None else term(generated, ws, targets, noise=noise)
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"term {name!r} returned {got}, expected a scalar tensor")
        return value

    def _weigh(self, raw: dict[str, torch.Tensor], seconds: dict[str, float] | None = None) -> ObjectiveValue:
        terms = {name: value * self.weights[name] for name, value in raw.items()}
        total = sum(terms.values())
        return ObjectiveValue(total=total, terms=terms, raw=raw, seconds=seconds)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, timing={self.timing}"


MODEL_TERMS = ("clip", "img", "shape", "head_shape", "texture", "skin", "collage")


def build_objective(
    G: nn.Module | None,  # generator; regularisers that need w statistics sample its mapping network
    clip: nn.Module | None,  # ClipGuide; None only when the clip weight is 0 or absent
    densepose: nn.Module | None,  # DensePoseChartModel; None only when the shape weight is 0 or absent
    segmenter: nn.Module | None,  # FiceSegmenter / parser with 'head'; None only when head_shape is 0 or absent
    weights: Mapping[str, float] | None = None,  # None = FICE_WEIGHTS (its weight 1 goes to the regulariser)
    regularizer: str | nn.Module = "w_delta",  # a REGULARIZERS name or a built term with a `name`
    regularizer_kwargs: Mapping[str, Any] | None = None,  # options of the regulariser's factory (num_samples, seed)
    timing: bool = False,  # time each term (see Objective)
    clip_augment: int = 0,  # random views the clip term averages over; 0 = FICE (see ClipTerm)
    clip_region: str = "image",  # what the clip term scores: 'image' = G(w) (FICE), 'edit' (see ClipTerm)
    gallery: nn.Module | None = None,  # TextureGallery; None only when the texture weight is 0 or absent
    texture_exemplars: int = DEFAULT_EXEMPLARS,  # gallery garments averaged per text (see TextureTerm)
) -> Objective:
    """FICE's objective: img, shape, head_shape, regulariser and clip terms (FICE's summation order), and
    ficekit's exemplar texture, bare-skin and exemplar collage terms after them when they have a weight.

    `weights` keys are 'clip', 'img', 'shape', 'head_shape', 'texture', 'skin', 'collage' and the regulariser's name; a
    model term that is absent or weighs 0 is left out (its model may be None); the regulariser weighs 1 unless
    given, and is left out (not even sampled) at weight 0 or when it is 'none'.
    """
    reg_name = regularizer if isinstance(regularizer, str) else getattr(regularizer, "name", None)
    if not isinstance(reg_name, str):
        raise ValueError(f"regularizer: expected a name from {sorted(REGULARIZERS)} or a term with a `name`")
    if isinstance(regularizer, str) and regularizer not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {regularizer!r}; known: {sorted(REGULARIZERS)}")
    if weights is None:
        weights = {k: v for k, v in FICE_WEIGHTS.items() if k != "w_delta"} | {reg_name: FICE_WEIGHTS["w_delta"]}
    known = [*MODEL_TERMS, reg_name]
    unknown = [k for k in weights if k not in known]
    if unknown:
        raise ValueError(f"weights: unknown term(s) {unknown}; known terms: {known} (regularizer is {reg_name!r})")

    def wanted(name: str, model: nn.Module | None = None, what: str = "") -> bool:
        on = float(weights.get(name, 0)) != 0
        if on and what and model is None:
            raise ValueError(f"the {name!r} term has weight {weights[name]} but {what} is None; pass it or weight 0")
        return on

    terms: dict[str, nn.Module] = {}
    if wanted("img"):
        terms["img"] = ImageTerm()
    if wanted("shape", densepose, "densepose"):
        terms["shape"] = ShapeTerm(densepose)
    if wanted("head_shape", segmenter, "segmenter"):
        terms["head_shape"] = HeadShapeTerm(segmenter)
    if float(weights.get(reg_name, 1)) != 0 and reg_name != NoRegularizer.name:
        if isinstance(regularizer, str):
            terms[reg_name] = build_regularizer(regularizer, G, **dict(regularizer_kwargs or {}))
        else:
            terms[reg_name] = regularizer
    if wanted("clip", clip, "clip"):
        terms["clip"] = ClipTerm(clip, augment=clip_augment, region=clip_region)
    if wanted("texture", gallery, "gallery") and wanted("texture", clip, "clip"):
        terms["texture"] = TextureTerm(clip, gallery, texture_exemplars)
    if wanted("skin"):
        terms["skin"] = SkinTerm()
    if wanted("collage", gallery, "gallery") and wanted("collage", clip, "clip"):
        terms["collage"] = CollageTerm(clip, gallery, texture_exemplars)
    return Objective(terms, {k: v for k, v in weights.items() if k in terms}, timing=timing)
