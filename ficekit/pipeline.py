"""FicePipeline: a bundle's models, ready to edit photos from text — `pipe.edit(images, text) -> EditResult`.

One edit: fit the photo to the generator's resolution; parse the instruction; run perception on the
photo and build the edit/keep/blend masks; invert the photo with e4e; optimise W+ under the objective;
map G(w) and the masks back to the photo's size and stitch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .bundle import Bundle, load_bundle
from .framing import fit_to_square
from .generator import synthesize_01
from .instruction import Instruction, classify_category, parse_instruction
from .masking import EditMasks, build_masks, densepose_part_maps
from .objective import build_objective
from .optimize import OptimizeConfig, optimize_latents
from .regularizers import REGULARIZERS
from .shapes import check_shape
from .stitch import STITCH_METHODS, stitch

log = logging.getLogger(__name__)

MASK_MODES = ("auto", "fice")


@dataclass(frozen=True)
class EditSettings:
    """Everything that steers one edit; defaults come from the bundle, overrides from the caller."""

    iterations: int = 500  # optimisation steps (FICE runs iterations + 1)
    lr: float = 0.05  # Adam learning rate
    weights: Mapping[str, float] = field(default_factory=dict)  # term name -> weight
    regularizer: str = "w_delta"  # latent regulariser name
    mask: str = "fice"  # 'fice' (FICE's masks) or 'auto' (garment auto-masking)
    stitch: str = "fice"  # stitching method
    schedule: str = "constant"  # learning-rate schedule
    seed: int | None = 0  # makes a run repeatable; None = not seeded
    category: str | None = None  # garment category; None = from the text (or CLIP zero-shot)
    batch_size: int = 4  # photos optimised together
    clip_augment: int = 0  # random views CLIP scores per image (ficekit); 0 = G(w) itself, as FICE

    def validate(self) -> EditSettings:
        """Raise ValueError naming the first impossible value."""
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if isinstance(self.clip_augment, bool) or not isinstance(self.clip_augment, int) or self.clip_augment < 0:
            raise ValueError(f"clip_augment must be an int >= 0 (views per image), got {self.clip_augment!r}")
        if self.mask not in MASK_MODES:
            raise ValueError(f"mask must be one of {MASK_MODES}, got {self.mask!r}")
        if self.stitch not in STITCH_METHODS:
            raise ValueError(f"stitch must be one of {STITCH_METHODS}, got {self.stitch!r}")
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {sorted(REGULARIZERS)}, got {self.regularizer!r}")
        for name, weight in self.weights.items():
            if not weight >= 0:
                raise ValueError(f"weight of {name!r} must be >= 0, got {weight}")
        return self


@dataclass
class EditResult:
    """The outcome of editing N photos with one text.

    images: list of N results [3, H_i, W_i] in [0, 1] at each photo's own size (clamped).
    generated: [N, 3, R, R] G(w) at the generator's resolution R, in [0, 1] (unclamped).
    masks: EditMasks at resolution R (edit / keep / blend, [N, 1, R, R]).
    ws: [N, num_ws, w_dim] the optimised W+.
    history: per weighted term and 'total', one value per step, summed over all photos (as FICE's losses
        sum over the batch).
    timings: seconds per stage ('perception', 'encoder', 'optimize', 'stitch', 'total', and per model).
    """

    images: list[torch.Tensor]
    generated: torch.Tensor
    masks: EditMasks
    ws: torch.Tensor
    history: dict[str, list[float]]
    timings: dict[str, float]
    instruction: Instruction
    settings: EditSettings
    blend_full: list[torch.Tensor] = field(default_factory=list)  # blend masks at each photo's size


def edit_settings(defaults: Any, **overrides: Any) -> EditSettings:
    """EditSettings from a bundle's EditDefaults plus `overrides` (None = keep the default; weights merge
    term by term), validated — cheap, so callers can check options before loading any model."""
    base = EditSettings(
        iterations=defaults.iterations, lr=defaults.lr, weights=dict(defaults.weights),
        regularizer=defaults.regularizer, mask=defaults.mask, stitch=defaults.stitch, schedule=defaults.schedule,
        clip_augment=defaults.clip_augment,
    )
    unknown = set(overrides) - {f.name for f in dataclasses.fields(EditSettings)}
    if unknown:
        raise ValueError(f"unknown edit setting(s) {sorted(unknown)}")
    if overrides.get("weights") is not None:
        overrides["weights"] = {**base.weights, **overrides["weights"]}
    overrides = {k: v for k, v in overrides.items() if v is not None or k in ("seed", "category")}
    return dataclasses.replace(base, **overrides).validate()


def objective_weights(weights: Mapping[str, float], regularizer: str) -> dict[str, float]:
    """Weights keyed for the objective: a weight given under another regulariser's name (the bundle's
    default, e.g. FICE's 'w_delta') moves to the chosen regulariser unless that has its own weight."""
    others = {name: w for name, w in weights.items() if name in REGULARIZERS and name != regularizer}
    out = {name: w for name, w in weights.items() if name not in others}
    if regularizer not in out and others:
        out[regularizer] = next(iter(others.values()))
    out.pop("none", None)
    return out


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto'/None -> cuda when available, else cpu; anything else as torch understands it."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available")
    return device


class FicePipeline:
    """A bundle's frozen models on one device, and the edit procedure that uses them."""

    def __init__(self, bundle: Bundle, device: str | torch.device | None = "auto", timing: bool = False) -> None:
        self.bundle = bundle
        self.timing = timing  # time each objective term (adds CUDA syncs; for benchmarks)
        self.device = resolve_device(device)
        load = bundle.load
        self.generator = load("generator", self.device)
        self.encoder = load("encoder", self.device)
        self.clip = load("clip", self.device)
        self.densepose = load("densepose", self.device) if bundle.has("densepose") else None
        self.segmenter = load("segmenter", self.device) if bundle.has("segmenter") else None
        self.parser = load("parser", self.device) if bundle.has("parser") else None
        self.resolution = int(self.generator.img_resolution)
        self._objectives: dict[tuple, Any] = {}

    @classmethod
    def from_bundle(
        cls, bundle: str | Bundle = "demo", device: str | torch.device | None = "auto", timing: bool = False
    ) -> FicePipeline:
        """Load every model of a bundle ('demo', 'fice', a folder, or a Bundle)."""
        return cls(bundle if isinstance(bundle, Bundle) else load_bundle(bundle), device, timing=timing)

    # ------------------------------------------------------------------ settings

    def settings(self, **overrides: Any) -> EditSettings:
        """The bundle's default settings with `overrides` applied (weights are merged term by term)."""
        return edit_settings(self.bundle.defaults, **overrides)

    def _objective(self, settings: EditSettings) -> Any:
        weights = objective_weights(settings.weights, settings.regularizer)
        key = (settings.regularizer, tuple(sorted(weights.items())), settings.clip_augment)
        if key not in self._objectives:
            self._objectives[key] = build_objective(
                self.generator, self.clip, self.densepose, self.segmenter, weights=weights,
                regularizer=settings.regularizer, timing=self.timing, clip_augment=settings.clip_augment,
            )
        return self._objectives[key]

    # ------------------------------------------------------------------ editing

    def edit(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        text: str,
        progress: bool = True,
        **overrides: Any,
    ) -> EditResult:
        """Edit the garment in each photo according to `text`.

        Args:
            images: a tensor [N, 3, H, W] or a list of [3, H_i, W_i] tensors, RGB in [0, 1], any size.
            text: the instruction or description ("striped cotton shirt").
            progress: show a progress bar.
            **overrides: EditSettings fields (iterations, lr, weights, regularizer, mask, stitch, seed, ...).
        """
        settings = self.settings(**overrides)
        photos = self._as_list(images)
        instruction = parse_instruction(text, category=settings.category)
        results: list[EditResult] = []
        for start in range(0, len(photos), settings.batch_size):
            batch = photos[start : start + settings.batch_size]
            results.append(self._edit_batch(batch, instruction, settings, progress))
        return _concat(results)

    @torch.no_grad()
    def photo_masks(self, images: torch.Tensor | Sequence[torch.Tensor], text: str, **overrides: Any) -> list[EditMasks]:
        """The edit/keep/blend masks an edit of `images` by `text` would use, each [1, 1, H_i, W_i] in [0, 1] at
        the photo's own size; lets another method (e.g. a diffusion inpainter) repaint exactly the same region."""
        settings = self.settings(**overrides)
        instruction = parse_instruction(text, category=settings.category)
        out = []
        for photo in self._as_list(images):
            x, framing = fit_to_square(photo[None].to(self.device), self.resolution)
            masks = self._perceive(x, self._with_category(x, instruction, settings), settings)
            unfit = {name: framing.unfit(getattr(masks, name)).clamp(0, 1).cpu() for name in ("edit", "keep", "blend")}
            out.append(dataclasses.replace(masks, **unfit))
        return out

    def edit_masks(self, images: torch.Tensor | Sequence[torch.Tensor], text: str, **overrides: Any) -> list[torch.Tensor]:
        """The blend masks (1 = repainted) of `photo_masks`, each [1, H_i, W_i]."""
        return [m.blend[0] for m in self.photo_masks(images, text, **overrides)]

    def _with_category(self, x: torch.Tensor, instruction: Instruction, settings: EditSettings) -> Instruction:
        """`instruction`, its garment category chosen by CLIP zero-shot when the text names none (auto masks)."""
        if instruction.category is not None or settings.mask != "auto":
            return instruction
        categories = classify_category(self.clip, x, instruction.text)
        category = categories[0] if isinstance(categories, (list, tuple)) else categories
        log.info("no garment named in %r; CLIP zero-shot chose %r", instruction.text, category)
        return dataclasses.replace(instruction, category=category)

    def edit_rounds(self, images: torch.Tensor | Sequence[torch.Tensor], texts: Sequence[str], **kw: Any) -> list[EditResult]:
        """Multi-round editing: each instruction edits the previous round's result."""
        rounds = []
        current: Any = images
        for text in texts:
            result = self.edit(current, text, **kw)
            rounds.append(result)
            current = result.images
        return rounds

    @staticmethod
    def _as_list(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if isinstance(images, torch.Tensor):
            if images.ndim == 3:
                images = images.unsqueeze(0)
            check_shape("images", images, [None, 3, None, None])
            photos = list(images)
        else:
            photos = list(images)
            for i, p in enumerate(photos):
                check_shape(f"images[{i}]", p, [3, None, None])
        if not photos:
            raise ValueError("no images to edit")
        for i, p in enumerate(photos):
            if not p.is_floating_point():
                raise ValueError(f"images[{i}]: expected a float tensor in [0, 1], got {p.dtype}")
            if p.min() < -1e-3 or p.max() > 1 + 1e-3:
                raise ValueError(f"images[{i}]: values must lie in [0, 1] (got {p.min():.3f}..{p.max():.3f})")
        return [p.float() for p in photos]

    def _perceive(self, x: torch.Tensor, instruction: Instruction, settings: EditSettings) -> EditMasks:
        size = tuple(x.shape[-2:])
        fice = self.segmenter(x) if self.segmenter is not None else None
        if settings.mask == "fice":
            if fice is None:
                raise ValueError(f"mask mode 'fice' needs a segmenter; bundle {self.bundle.name!r} has none")
            return build_masks(instruction, fice=fice, mode="fice")
        parts = densepose_part_maps(self.densepose(x), size) if self.densepose is not None else None
        parser = self.parser(x) if self.parser is not None else None
        return build_masks(instruction, parts=parts, parser=parser, fice=fice, mode="auto")

    def _edit_batch(
        self, photos: list[torch.Tensor], instruction: Instruction, settings: EditSettings, progress: bool
    ) -> EditResult:
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        fitted, framings = zip(*(fit_to_square(p[None].to(self.device), self.resolution) for p in photos), strict=True)
        x = torch.cat(fitted)

        instruction = self._with_category(x, instruction, settings)

        with torch.no_grad():
            t = time.perf_counter()
            masks = self._perceive(x, instruction, settings)
            timings["perception"] = time.perf_counter() - t
            _warn_if_empty(masks, instruction)
            t = time.perf_counter()
            ws_init = self.encoder(x)
            timings["encoder"] = time.perf_counter() - t

        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        objective = self._objective(settings)
        targets = objective.prepare(x, masks.keep, [instruction.text], ws_init)
        config = OptimizeConfig(
            iterations=settings.iterations, lr=settings.lr, schedule=settings.schedule, seed=settings.seed
        )
        t = time.perf_counter()
        outcome = optimize_latents(self.generator, objective, targets, config, progress=progress)
        timings["optimize"] = time.perf_counter() - t
        timings["seconds_per_iteration"] = outcome.seconds_per_iteration
        for name, seconds in getattr(outcome, "term_seconds", {}).items():
            timings[f"optimize.{name}"] = seconds

        t = time.perf_counter()
        results, blends = [], []
        for i, (photo, framing) in enumerate(zip(photos, framings, strict=True)):
            generated = framing.unfit(outcome.generated[i : i + 1]).cpu()
            blend = framing.unfit(masks.blend[i : i + 1]).clamp(0, 1).cpu()
            # Clamped to the [0, 1] image contract (G(w) is unclamped, as in FICE); photo pixels are unchanged.
            results.append(stitch(photo[None].cpu(), generated, blend, method=settings.stitch)[0].clamp(0, 1))
            blends.append(blend[0])
        timings["stitch"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_start
        return EditResult(
            images=results, generated=outcome.generated.detach().cpu(), masks=_masks_cpu(masks),
            ws=outcome.ws.detach().cpu(), history=outcome.history, timings=timings, instruction=instruction,
            settings=settings, blend_full=blends,
        )

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """G(e4e(x)) for photos already at the generator's resolution: the inversion before any edit."""
        return synthesize_01(self.generator, self.encoder(images.to(self.device)))


def _warn_if_empty(masks: EditMasks, instruction: Instruction) -> None:
    """An empty blend mask means the result will be the photo itself: say so instead of failing silently."""
    empty = [i for i in range(masks.blend.shape[0]) if not bool((masks.blend[i] > 0).any())]
    if empty:
        warnings.warn(
            f"the edit region of photo(s) {empty} is empty: no {masks.category or 'garment'} region was found for "
            f"{instruction.text!r}, so the result equals the photo; try --category or --mask fice",
            stacklevel=3,
        )


def _masks_cpu(masks: EditMasks) -> EditMasks:
    return dataclasses.replace(masks, edit=masks.edit.cpu(), keep=masks.keep.cpu(), blend=masks.blend.cpu())


def _concat(results: list[EditResult]) -> EditResult:
    """Join per-batch results into one (histories and timings of the first batch; timings summed)."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    timings: dict[str, float] = {}
    for r in results:
        for k, v in r.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    masks = dataclasses.replace(
        first.masks,
        edit=torch.cat([r.masks.edit for r in results]),
        keep=torch.cat([r.masks.keep for r in results]),
        blend=torch.cat([r.masks.blend for r in results]),
    )
    history = {k: [sum(r.history[k][i] for r in results) for i in range(len(v))] for k, v in first.history.items()}
    return EditResult(
        images=[im for r in results for im in r.images], generated=torch.cat([r.generated for r in results]),
        masks=masks, ws=torch.cat([r.ws for r in results]), history=history, timings=timings,
        instruction=first.instruction, settings=first.settings, blend_full=[b for r in results for b in r.blend_full],
    )
