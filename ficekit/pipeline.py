"""FicePipeline: a bundle's models, ready to edit photos from text — `pipe.edit(images, text) -> EditResult`.

One edit: check the inputs and settings; fit each photo to the generator's resolution; check the photos are of
the bundle's world; parse the instruction; run perception on the photo and build the edit/keep/blend masks;
invert the photo (e4e, optimisation or PTI); optimise W+ under the objective; map G(w) and the masks back to
the photo's size and stitch. `pipe.session(photo)` keeps one photo's state across rounds (ficekit.session).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .bundle import Bundle, load_bundle
from .collage import collage_composite, text_collage
from .colour_match import match_colours
from .framing import Framing, fit_to_square
from .generator import synthesize_01
from .inputs import as_photos, check_output_type, convert_output
from .instruction import Instruction, classify_category, parse_instruction
from .inversion import Inversion, invert
from .masking import EditMasks, build_masks
from .objective import EditTargets, build_objective
from .optimize import OptimizeConfig, OptimizeResult, SnapshotCallback, optimize_latents
from .perception.densepose_parts import densepose_part_and_v_maps
from .perception.segmenter import ParserSegmenterView
from .settings import EditSettings, edit_settings, objective_weights, settings_dict
from .skin import bare_arm_mask, skin_colour
from .stitch import stitch
from .texture import garment_region

if TYPE_CHECKING:
    from .session import EditSession

log = logging.getLogger(__name__)

StepCallback = Callable[[int, torch.Tensor, torch.Tensor, dict[str, float]], None]
VALID_DEVICES = "auto, cpu, cuda or cuda:N"


@dataclass
class EditResult:
    """The outcome of editing N photos with one text.

    images: N results at each photo's own size: [3, H_i, W_i] tensors in [0, 1] (output_type 'pt'), PIL images
        ('pil') or float32 H_i x W_i x 3 arrays ('np').
    generated: [N, 3, R, R] G(w) at the generator's resolution R, in [0, 1] (unclamped).
    masks: EditMasks at resolution R (edit / keep / blend, [N, 1, R, R]).
    ws: [N, num_ws, w_dim] the optimised W+.
    history: per weighted term and 'total', one value per step, summed over all photos (as FICE's losses
        sum over the batch).
    timings: seconds per stage ('perception', 'inversion', 'optimize', 'stitch', 'total', ...), summed over batches;
        'seconds_per_iteration' is the mean over all optimisation steps.
    instruction: the parsed text; instructions: each photo's, with its garment category resolved (a text that
        names no garment gets a CLIP zero-shot category per photo).
    blend_full: blend masks [1, H_i, W_i] at each photo's size, aligned with it.
    names: each photo's name (its path, or images[i]).
    domain_scores: each photo's out-of-domain check (ficekit.domain.DomainScore), empty when not checked.
    inversion: how the photos were inverted (Inversion.record(): method, steps, seconds, ...; the first batch's).
    """

    images: list[Any]
    generated: torch.Tensor
    masks: EditMasks
    ws: torch.Tensor
    history: dict[str, list[float]]
    timings: dict[str, float]
    instruction: Instruction
    settings: EditSettings
    blend_full: list[torch.Tensor] = field(default_factory=list)
    instructions: list[Instruction] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    domain_scores: list[Any] = field(default_factory=list)
    inversion: dict[str, Any] = field(default_factory=dict)  # how W+ was found (method, steps, seconds, ...)
    ws_init: torch.Tensor | None = None  # [N, num_ws, w_dim] where the optimisation started (see `start`)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto'/None -> cuda when available, else cpu; 'cpu', 'cuda', 'cuda:N' as given; anything else a ValueError."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device; expected {VALID_DEVICES}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported; expected {VALID_DEVICES}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return resolved


def edit_seed(settings: EditSettings, generator: torch.Generator | None) -> int | None:
    """The seed of one edit: drawn from `generator` when given (advancing it), else settings.seed."""
    if generator is None:
        return settings.seed
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run the block with torch's RNG seeded to `seed`, restoring the caller's RNG afterwards (None = untouched)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        yield


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
        self.parser = load("parser", self.device) if bundle.has("parser") else None
        self.segmenter = self._load_segmenter()
        self.gallery = load("gallery", self.device) if bundle.has("gallery") else None
        self.resolution = int(self.generator.img_resolution)
        self._objectives: dict[tuple, Any] = {}

    def _load_segmenter(self) -> nn.Module | None:
        """The segmenter; a view of the bundle's parser reuses the loaded parser instead of loading it twice."""
        if not self.bundle.has("segmenter"):
            return None
        spec = self.bundle.spec("segmenter")
        if (
            spec.format == "parser_view" and self.parser is not None
            and self.bundle.path("segmenter") == self.bundle.path("parser")
            and spec.kwargs.get("parser") == self.bundle.spec("parser").kwargs
        ):
            self.bundle.verify("segmenter")
            return ParserSegmenterView(self.parser, spec.kwargs["groups"]).to(self.device)
        return self.bundle.load("segmenter", self.device)

    @classmethod
    def from_bundle(
        cls, bundle: str | Bundle = "demo", device: str | torch.device | None = "auto", timing: bool = False
    ) -> FicePipeline:
        """Load every model of a bundle ('demo', 'fice', a folder, or a Bundle)."""
        return cls(bundle if isinstance(bundle, Bundle) else load_bundle(bundle), device, timing=timing)

    def to(self, device: str | torch.device) -> FicePipeline:
        """Move every model to `device` (as diffusers' pipe.to); returns the pipeline."""
        self.device = resolve_device(device)
        for name in ("generator", "encoder", "clip", "densepose", "parser", "segmenter"):
            model = getattr(self, name)
            if model is not None:
                setattr(self, name, model.to(self.device))
        self._objectives.clear()
        return self

    # ------------------------------------------------------------------ settings

    def settings(self, force: bool = False, **overrides: Any) -> EditSettings:
        """The bundle's default settings with `overrides` applied (weights are merged term by term)."""
        settings = edit_settings(self.bundle.defaults, force=force, **overrides)
        if settings.start == "collage":
            self._collage_gallery()  # refuse before any model runs
        return settings

    def objective(self, settings: EditSettings) -> Any:
        """The objective of `settings` (cached: the same settings reuse one built objective)."""
        weights = objective_weights(settings.weights, settings.regularizer)
        key = (settings.regularizer, tuple(sorted(weights.items())), settings.clip_augment, settings.clip_region)
        if key not in self._objectives:
            self._objectives[key] = build_objective(
                self.generator, self.clip, self.densepose, self.segmenter, weights=weights,
                regularizer=settings.regularizer, timing=self.timing, clip_augment=settings.clip_augment,
                clip_region=settings.clip_region, gallery=self.gallery,
            )
        return self._objectives[key]

    # ------------------------------------------------------------------ editing

    def edit(
        self,
        images: Any,
        text: str,
        *,
        output_type: str = "pt",
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        callback_every: int = 1,
        progress: bool = True,
        check_domain: bool = True,
        force: bool = False,
        names: Sequence[str] | None = None,
        **overrides: Any,
    ) -> EditResult:
        """Edit the garment in each photo according to `text`.

        Args:
            images: a PIL image, a path, a [3,H,W] or [N,3,H,W] float tensor in [0,1], an HWC uint8 array, or a
                list of these; any size.
            text: the instruction or description ("striped cotton shirt").
            output_type: 'pt' (tensors [3,H,W]), 'pil' or 'np' (float32 HWC in [0,1]) for EditResult.images.
            generator: a torch.Generator the edit's seed is drawn from (the global RNG is never touched).
            callback: fn(step, ws, generated, losses) every `callback_every` optimisation steps (per batch), e.g.
                for live previews; `generated` is [B,3,R,R] in [0,1].
            progress: show a progress bar.
            check_domain: refuse photos outside the bundle's domain (ficekit.domain.OutOfDomainError).
            force: lift the iteration cap (settings.MAX_ITERATIONS).
            names: a name per photo for messages (default: its path, or images[i]).
            **overrides: EditSettings fields (iterations, lr, weights, regularizer, mask, stitch, seed, ...).
        """
        # 1. Check every input before any model runs.
        settings = self.settings(force=force, **overrides)
        check_output_type(output_type)
        callbacks = self._callbacks(callback, callback_every)
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text is empty; describe the garment, e.g. 'striped cotton shirt'")
        photos, photo_names = as_photos(images, names)
        instruction = self.parse(text, settings)
        seed = edit_seed(settings, generator)
        # 2. Edit batch by batch.
        results = []
        for start in range(0, len(photos), settings.batch_size):
            stop = start + settings.batch_size
            results.append(
                self._edit_batch(
                    photos[start:stop], photo_names[start:stop], instruction, settings, seed, callbacks, progress,
                    check_domain,
                )
            )
        result = _concat(results)
        result.images = convert_output(result.images, output_type)
        return result

    def session(self, photo: Any, *, check_domain: bool = True, force: bool = False, **overrides: Any) -> EditSession:
        """An EditSession for one photo: rounds of instructions that remember the garment and warm-start."""
        from .session import EditSession

        return EditSession(self, photo, check_domain=check_domain, force=force, **overrides)

    def parse(self, text: str, settings: EditSettings) -> Instruction:
        """The parsed instruction; words the parser did not use are named in one warning (never dropped silently)."""
        instruction = parse_instruction(text, category=settings.category)
        ignored = getattr(instruction, "ignored_words", None)
        if ignored:
            log.warning("ignored word(s) in %r: %s (not in ficekit's vocabulary)", text, ", ".join(ignored))
        return instruction

    @torch.no_grad()
    def photo_masks(self, images: Any, text: str, **overrides: Any) -> list[EditMasks]:
        """The edit/keep/blend masks an edit of `images` by `text` would use, each [1, 1, H_i, W_i] in [0, 1] at
        the photo's own size; lets another method (e.g. a diffusion inpainter) repaint exactly the same region."""
        settings = self.settings(**overrides)
        instruction = parse_instruction(text, category=settings.category)
        photos, _ = as_photos(images)
        out = []
        for photo in photos:
            x, framing = self.frame([photo])
            masks = self.perceive(x, self.instructions_for(x, instruction, settings), settings)
            unfit = {name: framing[0].unfit(getattr(masks, name)).clamp(0, 1).cpu() for name in ("edit", "keep", "blend")}
            out.append(dataclasses.replace(masks, **unfit))
        return out

    def edit_masks(self, images: Any, text: str, **overrides: Any) -> list[torch.Tensor]:
        """The blend masks (1 = repainted) of `photo_masks`, each [1, H_i, W_i]."""
        return [m.blend[0] for m in self.photo_masks(images, text, **overrides)]

    def edit_rounds(self, images: Any, texts: Sequence[str], **kw: Any) -> list[EditResult]:
        """Multi-round editing of each photo through an EditSession (warm start, the garment state remembered);
        returns one EditResult per round covering every photo. Kept for scripts written before EditSession."""
        photos, names = as_photos(images)
        progress = kw.pop("progress", False)
        per_photo = []
        for photo, name in zip(photos, names, strict=True):
            session = self.session(photo, name=name, **kw)
            per_photo.append([session.apply(text, progress=progress).result for text in texts])
        return [_concat([rounds[r] for rounds in per_photo]) for r in range(len(texts))]

    # ------------------------------------------------------------------ the steps of an edit (used by EditSession)

    def frame(self, photos: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[Framing]]:
        """Photos [3,H,W] -> [N,3,R,R] at the generator's resolution on the pipeline's device, and their framings."""
        fitted, framings = zip(*(fit_to_square(p[None].to(self.device), self.resolution) for p in photos), strict=True)
        return torch.cat(fitted), list(framings)

    def check_photos(self, x: torch.Tensor, names: Sequence[str]) -> list[Any]:
        """The bundle's out-of-domain check of framed photos x [N,3,R,R]; raises OutOfDomainError outside it."""
        record = getattr(self.bundle, "domain", None)
        if record is None:
            log.info("bundle %r has no domain record; photos are not checked against its world", self.bundle.name)
            return []
        from .domain import check_photos

        return check_photos(self, x, record, list(names))

    def domain_scores(self, images: Any) -> list[Any]:
        """Each photo's out-of-domain score (ficekit.domain.DomainScore), without refusing any."""
        from .domain import score_photos

        photos, _ = as_photos(images)
        x, _ = self.frame(photos)
        return score_photos(self, x, getattr(self.bundle, "domain", None))

    def instructions_for(self, x: torch.Tensor, instruction: Instruction, settings: EditSettings) -> list[Instruction]:
        """One instruction per photo: its garment category chosen by CLIP zero-shot when the text names none."""
        if instruction.category is not None or settings.mask != "auto":
            return [instruction] * x.shape[0]
        categories = classify_category(self.clip, x, instruction.text)
        log.info("no garment named in %r; CLIP zero-shot chose %s", instruction.text, categories)
        return [dataclasses.replace(instruction, category=category) for category in categories]

    @torch.no_grad()
    def perceive(self, x: torch.Tensor, instructions: Sequence[Instruction], settings: EditSettings) -> EditMasks:
        """Edit/keep/blend masks of framed photos x [N,3,R,R], each photo by its own instruction."""
        size = tuple(x.shape[-2:])
        parser = self.parser(x) if self.parser is not None and settings.mask == "auto" else None
        if isinstance(self.segmenter, ParserSegmenterView) and parser is not None and self.segmenter.parser is self.parser:
            fice = self.segmenter.from_masks(parser)
        else:
            fice = self.segmenter(x) if self.segmenter is not None else None
        if settings.mask == "fice":
            if fice is None:
                raise ValueError(f"mask mode 'fice' needs a segmenter; bundle {self.bundle.name!r} has none")
            return build_masks(instructions[0], fice=fice, mode="fice")
        parts, v = densepose_part_and_v_maps(self.densepose(x), size) if self.densepose is not None else (None, None)
        groups: dict[str | None, list[int]] = {}
        for i, instruction in enumerate(instructions):
            groups.setdefault(instruction.category, []).append(i)
        if len(groups) == 1:
            masks = build_masks(instructions[0], parts=parts, parser=parser, fice=fice, mode="auto")
            return _with_bare_arms(masks, x, instructions, parts, v, parser, settings)
        pieces = {}
        for indices in groups.values():
            index = torch.tensor(indices, device=x.device)
            pieces[tuple(indices)] = build_masks(
                instructions[indices[0]], mode="auto",
                parts=parts.index_select(0, index) if parts is not None else None,
                parser=_select(parser, index), fice=_select(fice, index),
            )
        return _with_bare_arms(_gather_masks(pieces, len(instructions)), x, instructions, parts, v, parser, settings)

    def invert(self, x: torch.Tensor, settings: EditSettings, seed: int | None, progress: bool) -> Inversion:
        """W+ of framed photos x [N,3,R,R] and the generator to edit in (a tuned copy for 'pti'; the bundle's own
        generator is never modified), with a record of how (ficekit.inversion.Inversion)."""
        with torch.no_grad() if settings.inversion == "e4e" else contextlib.nullcontext():
            return invert(
                x, self.generator, self.encoder, method=settings.inversion, steps=settings.inversion_steps,
                seed=seed, progress=progress,
            )

    def optimize(
        self,
        x: torch.Tensor,
        masks: EditMasks,
        text: str,
        ws_init: torch.Tensor,
        settings: EditSettings,
        *,
        generator: nn.Module | None = None,
        iterations: int | None = None,
        seed: int | None = None,
        callbacks: Sequence[Any] = (),
        progress: bool = True,
        targets: EditTargets | None = None,
    ) -> tuple[OptimizeResult, EditTargets]:
        """Optimise W+ from `ws_init` under the objective for `text`; `targets` from an earlier round keep the
        original photo's preservation targets (Objective.retarget: the text, the start and the keep mask change).
        Without them (a first round) and with start='collage', the optimisation starts at `start_latent` instead."""
        objective = self.objective(settings)
        with seeded(seed, self.device):
            if targets is None:
                targets = objective.prepare(x, masks.keep, [text], ws_init, bare_mask=masks.bare,
                                            skin_rgb=masks.skin_rgb)  # fmt: skip
                if settings.start == "collage":
                    targets = dataclasses.replace(targets, ws_init=self.start_latent(x, targets, text))
            else:
                previous = targets
                targets = objective.retarget(targets, [text], ws_init, masks.keep, bare_mask=masks.bare,
                                             skin_rgb=masks.skin_rgb)  # fmt: skip
                if settings.start == "collage" and previous.collage is not None and targets.collage is not None:
                    targets = dataclasses.replace(targets, ws_init=self.followup_start(x, previous, targets))
            config = OptimizeConfig(
                iterations=iterations or settings.iterations, lr=settings.lr, schedule=settings.schedule, seed=seed,
                compile=settings.compile, perception_every=settings.perception_every,
                early_stop=settings.early_stop, early_stop_tol=settings.early_stop_tol,
            )
            outcome = optimize_latents(
                generator or self.generator, objective, targets, config, callbacks=callbacks, progress=progress
            )
        return outcome, targets

    @torch.no_grad()
    def start_latent(self, x: torch.Tensor, targets: EditTargets, text: str) -> torch.Tensor:
        """W+ for start='collage': the inversion (targets.ws_init) moved by the encoder's step from the photo to
        the photo with the text's exemplar collage pasted into its edit region (skin where arms go bare), so the
        optimisation starts near a garment of the right colour and pattern instead of the old one (for e4e, the
        encoder's latent of that composite)."""
        return targets.ws_init + self.encoder(self._composite(x, targets, text)) - self.encoder(x)

    @torch.no_grad()
    def followup_start(self, x: torch.Tensor, previous: EditTargets, targets: EditTargets) -> torch.Tensor:
        """W+ for a follow-up round with start='collage': the previous round's W+ (targets.ws_init) moved by the
        encoder's step from the previous round's composite to this round's, so a follow-up that changes the
        pattern starts near the new one, as a first round does (needs the collage term's collages)."""
        before, after = self._composite(x, previous), self._composite(x, targets)
        return targets.ws_init + self.encoder(after) - self.encoder(before)

    def _composite(self, x: torch.Tensor, targets: EditTargets, text: str | None = None) -> torch.Tensor:
        """x with the targets' collage (or, when the collage term is off, the text's) pasted into its edit region."""
        collage = targets.collage
        if collage is None:
            collage = text_collage(self.clip, self._collage_gallery(), text, tuple(x.shape[-2:]))
        return collage_composite(x, targets.keep_mask, collage.to(x.device, x.dtype), targets.bare_mask,
                                 targets.skin_rgb)  # fmt: skip

    def _collage_gallery(self, option: str = "start='collage'", way_out: str = "start='inversion'") -> Any:
        """The bundle's gallery, when it has the pictures a collage is made of; else a one-line ValueError."""
        if self.gallery is None or not self.gallery.has_pictures:
            raise ValueError(f"{option}: the bundle {self.bundle.name!r} has no gallery with pictures "
                             f"(python -m ficekit.synthetic.build_gallery); use {way_out}")  # fmt: skip
        return self.gallery

    @torch.no_grad()
    def match_colours(self, generated: torch.Tensor, targets: EditTargets, text: str, settings: EditSettings
                      ) -> torch.Tensor:  # fmt: skip
        """G(w) with its garment region's colours matched to the text's exemplar collage (colour_match='collage',
        ficekit.colour_match); G(w) itself when colour_match is 'off'."""
        if settings.colour_match == "off":
            return generated
        collage = targets.collage
        if collage is None:
            gallery = self._collage_gallery("colour_match='collage'", "colour_match='off'")
            collage = text_collage(self.clip, gallery, text, tuple(generated.shape[-2:]))
        region = garment_region(targets).to(generated.device)
        return match_colours(generated, collage.to(generated.device), region)

    def finish(
        self, photos: Sequence[torch.Tensor], framings: Sequence[Framing], generated: torch.Tensor, masks: EditMasks,
        settings: EditSettings,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Stitch G(w) into each photo at its own size: (results [3,H,W] in [0,1], blend masks [1,H,W])."""
        results, blends = [], []
        for i, (photo, framing) in enumerate(zip(photos, framings, strict=True)):
            generated_full = framing.unfit(generated[i : i + 1].to(self.device)).cpu()
            blend = framing.unfit(masks.blend[i : i + 1].to(self.device)).clamp(0, 1).cpu()
            # Clamped to the [0, 1] image contract (G(w) is unclamped, as in FICE); photo pixels are unchanged.
            results.append(stitch(photo[None].cpu(), generated_full, blend, method=settings.stitch)[0].clamp(0, 1))
            blends.append(blend[0])
        return results, blends

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _callbacks(callback: StepCallback | None, every: int) -> list[Any]:
        if callback is None:
            return []
        if not callable(callback):
            raise ValueError(f"callback must be callable, got {type(callback).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"callback_every must be an int >= 1, got {every!r}")
        return [SnapshotCallback(every, callback)]

    def _edit_batch(
        self, photos: list[torch.Tensor], names: list[str], instruction: Instruction, settings: EditSettings,
        seed: int | None, callbacks: Sequence[Any], progress: bool, check_domain: bool,
    ) -> EditResult:
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        x, framings = self.frame(photos)
        domain_scores = self.check_photos(x, names) if check_domain else []

        t = time.perf_counter()
        instructions = self.instructions_for(x, instruction, settings)
        masks = self.perceive(x, instructions, settings)
        timings["perception"] = time.perf_counter() - t
        _warn_if_empty(masks, instructions, names)

        t = time.perf_counter()
        inversion = self.invert(x, settings, seed, progress)
        timings["inversion"] = time.perf_counter() - t

        t = time.perf_counter()
        outcome, targets = self.optimize(
            x, masks, instruction.text, inversion.ws, settings, generator=inversion.generator, seed=seed,
            callbacks=callbacks, progress=progress,
        )
        timings["optimize"] = time.perf_counter() - t
        timings["seconds_per_iteration"] = outcome.seconds_per_iteration
        for name, seconds in getattr(outcome, "term_seconds", {}).items():
            timings[f"optimize.{name}"] = seconds

        t = time.perf_counter()
        painted = self.match_colours(outcome.generated, targets, instruction.text, settings)
        results, blends = self.finish(photos, framings, painted, masks, settings)
        timings["stitch"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_start
        return EditResult(
            images=results, generated=outcome.generated.detach().cpu(), masks=masks.cpu(),
            ws=outcome.ws.detach().cpu(), history=outcome.history, timings=timings, instruction=instruction,
            settings=settings, blend_full=blends, instructions=instructions, names=list(names),
            domain_scores=domain_scores, inversion=inversion.record(), ws_init=targets.ws_init.detach().cpu(),
        )

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """G(e4e(x)) for photos already at the generator's resolution: the inversion before any edit."""
        return synthesize_01(self.generator, self.encoder(images.to(self.device)))


def _select(output: Any, index: torch.Tensor) -> Any:
    """A SegmentationMasks / FiceSegmentation restricted to the photos in `index` (None stays None)."""
    if output is None:
        return None
    return dataclasses.replace(output, probs=output.probs.index_select(0, index))


def _with_bare_arms(masks: EditMasks, x: torch.Tensor, instructions: Sequence[Instruction], parts: torch.Tensor | None,
                    v: torch.Tensor | None, parser: Any, settings: EditSettings) -> EditMasks:  # fmt: skip
    """`masks` with the bare-arm region and skin colour of the skin term (ficekit.skin); unchanged when that term
    weighs 0, when no photo's instruction names a sleeve, without DensePose, or when a photo shows too little skin
    to know its colour."""
    if not settings.weights.get("skin", 0) or parts is None or v is None:
        return masks
    if all(i.attributes.sleeve is None for i in instructions):
        return masks
    bare = torch.cat([bare_arm_mask(instruction.category, instruction.attributes.sleeve, parts[i : i + 1],
                                    v[i : i + 1], masks.edit[i : i + 1])
                      for i, instruction in enumerate(instructions)])  # fmt: skip
    if not bool(bare.any()):
        return masks
    skin = skin_colour(x, parser, parts, masks.edit)
    if skin is None:
        return masks
    return dataclasses.replace(masks, bare=bare, skin_rgb=skin)


def _gather_masks(pieces: dict[tuple[int, ...], EditMasks], n: int) -> EditMasks:
    """EditMasks built for groups of photos, put back in photo order (category: None when they differ)."""
    first = next(iter(pieces.values()))
    out = {}
    for name in ("edit", "keep", "blend"):
        like = getattr(first, name)
        tensor = like.new_zeros((n, *like.shape[1:]))
        for indices, masks in pieces.items():
            tensor[list(indices)] = getattr(masks, name)
        out[name] = tensor
    categories = {masks.category for masks in pieces.values()}
    return dataclasses.replace(first, category=categories.pop() if len(categories) == 1 else None, **out)


def _warn_if_empty(masks: EditMasks, instructions: Sequence[Instruction], names: Sequence[str]) -> None:
    """An empty blend mask means the result will be the photo itself: say so, naming the photo."""
    for i in range(masks.blend.shape[0]):
        if not bool((masks.blend[i] > 0).any()):
            log.warning(
                "%s: no %s region was found for %r, so the result equals the photo; try --category or --mask fice",
                names[i], instructions[i].category or "garment", instructions[i].text,
            )


def _concat(results: list[EditResult]) -> EditResult:
    """Join per-batch results into one: per-photo fields in order, histories summed step by step (as FICE sums
    over a batch), stage timings summed, seconds_per_iteration averaged over all steps."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    timings: dict[str, float] = {}
    for r in results:
        for k, v in r.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    if "seconds_per_iteration" in timings:
        timings["seconds_per_iteration"] /= len(results)
    masks = dataclasses.replace(
        first.masks,
        edit=torch.cat([r.masks.edit for r in results]),
        keep=torch.cat([r.masks.keep for r in results]),
        blend=torch.cat([r.masks.blend for r in results]),
        category=first.masks.category if all(r.masks.category == first.masks.category for r in results) else None,
    )
    history = join_histories([r.history for r in results])
    return EditResult(
        images=[im for r in results for im in r.images], generated=torch.cat([r.generated for r in results]),
        masks=masks, ws=torch.cat([r.ws for r in results]), history=history, timings=timings,
        instruction=first.instruction, settings=first.settings, blend_full=[b for r in results for b in r.blend_full],
        instructions=[i for r in results for i in r.instructions], names=[n for r in results for n in r.names],
        domain_scores=[s for r in results for s in r.domain_scores], inversion=first.inversion,
        ws_init=torch.cat([r.ws_init for r in results]) if all(r.ws_init is not None for r in results) else None,
    )


def join_histories(histories: Sequence[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Loss histories of several batches summed step by step (FICE sums over a batch); a batch that stopped
    early (OptimizeConfig.early_stop) counts with its last value for the steps it did not run."""
    if not histories or not histories[0]:
        return {}
    length = max(len(values) for history in histories for values in history.values())
    return {
        name: [sum(h[name][min(step, len(h[name]) - 1)] for h in histories) for step in range(length)]
        for name in histories[0]
    }


__all__ = ["EditResult", "EditSettings", "FicePipeline", "edit_settings", "resolve_device", "settings_dict"]
