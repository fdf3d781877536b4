"""python -m ficekit.eval.synthetic — end-to-end edit quality on held-out renders of the synthetic world.

Each case is a held-out render (a seed never used in training) and a target for its top or dress: a new
colour, a new pattern, or both, phrased as an instruction that names the whole target ("red
horizontal-striped t-shirt": never the bare "striped", which the world's captions use for both
orientations); after these n cases come --sleeve-cases cases that change only the sleeve ("red plain
long-sleeved t-shirt"), then --type-cases cases that change only the kind of top ("red plain
short-sleeved shirt" for a red t-shirt; the sleeve is kept where the new kind has it). ficekit edits the
photo under several configurations (including the inversion it starts from: e4e, optimize, pti) and
independent judges score the result:

  colour_success        the garment's dominant palette colour is the target (judges.colour_matches)
  pattern_success       a CNN trained only on renderer crops (judges.PatternJudge) sees the target pattern
  sleeve_success        sleeve-change cases only: judges.judge_sleeve reads the target sleeve off the arms
  type_success          type-change cases only: a CNN trained only on renderer images (judges.TypeJudge)
                        reads the target kind (a t-shirt and a sweater, drawn alike, count as one) and
                        no jacket off the upper body, and judge_sleeve the target's sleeve; world v2 only
                        (v1's small figures draw a shirt's collar under a pixel: no type cases there)
  psnr_outside_mask_db  PSNR outside the edit mask: the true garment region before or after the edit
                        (renderer labels) grown by one pixel; an exact copy (infinite PSNR) counts as
                        PSNR_CAP_DB in the mean
  head_psnr_db          PSNR over the head and hair (same cap)
  pose_part_iou         DensePose part IoU between photo and result (the bundle's DensePose on both)
  seconds_per_edit      wall-clock seconds of one edit (perception, inversion, optimisation, stitching)
  optimisation_steps    steps the W+ loop ran (per case in the JSON only; fewer under early_stop)

Colour and pattern are judged on every case (a colour-only edit must keep the pattern and vice versa).
Every success rate carries a 95 % bootstrap interval over cases (seeded): with 24 cases one case is 4
points, so overlapping intervals are not a finding. The 'ideal' row judges the renderer's own drawing of
the target: the judges' ceiling. --ceiling adds 'ideal-projected', the generator's ceiling: each ideal
projected into W+, the space edits optimise in (ficekit.eval.ceiling). The pattern and type judges are
trained on first use (minutes; a warning says where each is cached). --rounds 2 runs the two-round
benchmark instead (ficekit.eval.rounds).

Examples:
  python -m ficekit.eval.synthetic --n 24 --json benchmarks/results/synthetic.json
  python -m ficekit.eval.synthetic --n 2 --iterations 5 --configs fice,auto+feather
  python -m ficekit.eval.synthetic --n 24 --configs auto+feather --ceiling   # + the generator's ceiling
  python -m ficekit.eval.synthetic --rounds 2 --n 24 --json benchmarks/results/rounds.json
  python -m ficekit.eval.synthetic --pool seed0.json seed1.json --json pooled.json   # two seeds as one report
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ficekit.eval.ceiling import CEILING_ROW, DEFAULT_CEILING_STEPS, projected_ideal
from ficekit.eval.judges import (
    JUDGED_SLOTS,
    TYPE_JUDGED_WORLDS,
    JudgeT,
    PatternJudge,
    TypeJudge,
    colour_matches,
    judge_sleeve,
    palette_votes,
    same_drawn_kind,
    upper_body_region,
)
from ficekit.eval.metrics import part_iou, psnr
from ficekit.mask_ops import dilate
from ficekit.synthetic.captions import CONTRAST_PATTERN_WORDS, GARMENT_WORDS, colour_words
from ficekit.synthetic.dataset import held_out_seeds
from ficekit.synthetic.render import Sample, render
from ficekit.synthetic.world import (
    DEFAULT_WORLD,
    PALETTE,
    PATTERNS,
    SLEEVES_BY_KIND,
    UPPER_KINDS,
    WORLD_VERSIONS,
    Garment,
    bundle_world,
    contrasting_colours,
)

logger = logging.getLogger(__name__)

CI_LEVEL = 0.95  # success rates carry a bootstrap interval at this level
BOOTSTRAP_RESAMPLES = 2000
JUDGE_TRAINING_TIME = "7-15 minutes"  # PatternJudge.train's defaults on one free CPU core (issue 12)
TYPE_JUDGE_TRAINING_TIME = "5 minutes"  # TypeJudge.train's defaults on one (shared) CPU core
PSNR_CAP_DB = 100.0  # an exactly preserved region counts as this in the means (PSNR would be infinite)
EDIT_KINDS = ("colour", "pattern", "both")  # the n main cases cycle these; 'sleeve', then 'type' cases follow
# Kind changes of the type cases: each upper kind to every other but those the renderer draws alike (a t-shirt and
# a sweater: judges.KINDS_DRAWN_ALIKE); a dress is never a source or target (another slot, and from the chest up
# v2 draws it like a top: judges.TYPE_KINDS).
TYPE_CHANGES_UNJUDGED: frozenset[tuple[str, str]] = frozenset(
    (a, b) for a in UPPER_KINDS for b in UPPER_KINDS if a != b and same_drawn_kind(a, b)
)
SLEEVE_WORDS: dict[str, str] = {"sleeveless": "sleeveless", "short": "short-sleeved", "long": "long-sleeved"}
# Configurations compared: FICE's recipe (its masks, stitch, plain CLIP term and start), auto-masking with each
# stitcher, the latent regularisers, and the CLIP term without random views; unnamed settings are the bundle's.
CONFIGS: dict[str, dict[str, Any]] = {
    "fice": {"mask": "fice", "stitch": "fice", "regularizer": "w_delta", "clip_augment": 0, "start": "inversion",
             "colour_match": "off"},
    "auto+fice-stitch": {"mask": "auto", "stitch": "fice", "regularizer": "w_delta"},
    "auto+hard": {"mask": "auto", "stitch": "hard", "regularizer": "w_delta"},
    "auto+feather": {"mask": "auto", "stitch": "feather", "regularizer": "w_delta"},
    "auto+laplacian": {"mask": "auto", "stitch": "laplacian", "regularizer": "w_delta"},
    "auto+feather+w_mean": {"mask": "auto", "stitch": "feather", "regularizer": "w_mean"},
    "auto+feather+pn": {"mask": "auto", "stitch": "feather", "regularizer": "pn"},
    "auto+feather+none": {"mask": "auto", "stitch": "feather", "regularizer": "none"},
    "auto+feather+noaug": {"mask": "auto", "stitch": "feather", "regularizer": "w_delta", "clip_augment": 0},
    # The inversion the edit starts from (ficekit.inversion; skipped with a note when that is not importable).
    "auto+feather+optimize": {"mask": "auto", "stitch": "feather", "regularizer": "w_delta", "inversion": "optimize"},
    "auto+feather+pti": {"mask": "auto", "stitch": "feather", "regularizer": "w_delta", "inversion": "pti"},
    # Where the optimisation starts: FICE's inversion of the photo instead of the bundle's start (ficekit.collage).
    "auto+feather+inversion-start": {"mask": "auto", "stitch": "feather", "regularizer": "w_delta",
                                     "start": "inversion"},
}
METRICS = (
    "colour_success", "pattern_success", "sleeve_success", "type_success", "psnr_outside_mask_db", "head_psnr_db",
    "pose_part_iou", "seconds_per_edit",
)
RATES = ("colour_success", "pattern_success", "sleeve_success", "type_success")  # 0/1 per case: with a 95 % CI
SLEEVE_CASES = 6  # sleeve-change cases added after the n colour/pattern cases (CLI default)
TYPE_CASES = 6  # type-change cases added after the sleeve cases (CLI default)


@dataclass(frozen=True)
class EditCase:
    """One benchmark case: a held-out photo, the garment slot to edit, the target garment and its instruction."""

    seed: int
    slot: str  # 'upper' or 'dress'
    kind: str  # 'colour', 'pattern', 'both', 'sleeve' or 'type'
    photo: Sample
    target: Garment
    ideal: Sample  # the renderer's drawing of the target (everything else pixel-identical)
    text: str

    def garment_mask(self) -> torch.Tensor:
        """[H, W] bool: the edited garment's pixels in the photo."""
        return torch.from_numpy(self.photo.mask(self.slot))

    def judged_mask(self) -> torch.Tensor:
        """[H, W] bool: where the garment is both before and after the edit (its colour and pattern are judged
        there; a sleeve that an edit removes or adds is not)."""
        return torch.from_numpy(self.photo.mask(self.slot) & self.ideal.mask(self.slot))

    def edit_region(self) -> torch.Tensor:
        """[H, W] bool: the garment before or after the edit (the pixels an edit may change, less the rim)."""
        return torch.from_numpy(self.photo.mask(self.slot) | self.ideal.mask(self.slot))


def instruction_for(garment: Garment, sleeve: bool = False) -> str:
    """The instruction naming a whole target garment: '<colour> <pattern> <garment>' ('red checked t-shirt');
    with `sleeve`, its sleeve too ('red plain long-sleeved t-shirt'). The pattern word names only the target's
    pattern (CONTRAST_PATTERN_WORDS: 'horizontal-striped', never 'striped', which the world uses for both)."""
    pattern = CONTRAST_PATTERN_WORDS[garment.pattern][0]
    sleeve_words = f"{SLEEVE_WORDS[garment.sleeve]} " if sleeve and garment.sleeve is not None else ""
    return f"{colour_words(garment.colour)[0]} {pattern} {sleeve_words}{GARMENT_WORDS[garment.kind][0]}"


def target_for(garment: Garment, kind: str, rng: np.random.Generator) -> Garment:
    """`garment` with a new palette colour and/or pattern (kind 'colour', 'pattern' or 'both'); a pattern's second
    colour is kept when it still contrasts with the (new) colour, else drawn from the contrasting ones."""
    colour, pattern, secondary = garment.colour, garment.pattern, garment.secondary
    if kind in ("colour", "both"):
        colour = str(rng.choice([c for c in PALETTE if c != garment.colour]))
    if kind in ("pattern", "both"):
        pattern = str(rng.choice([p for p in PATTERNS if p != garment.pattern]))
    if pattern == "plain":
        secondary = None
    elif secondary is None or secondary not in contrasting_colours(colour):
        secondary = str(rng.choice(contrasting_colours(colour)))
    return dataclasses.replace(garment, colour=colour, pattern=pattern, secondary=secondary)


def sleeve_target(garment: Garment, rng: np.random.Generator) -> Garment | None:
    """`garment` with another sleeve its kind comes with, drawn at random; None when its kind has no other."""
    other = [s for s in SLEEVES_BY_KIND.get(garment.kind, ()) if s != garment.sleeve]
    return dataclasses.replace(garment, sleeve=str(rng.choice(other))) if other else None


def type_target(garment: Garment, rng: np.random.Generator) -> Garment | None:
    """`garment` as another kind of top, its colour and pattern kept, its sleeve kept where the new kind has it
    (else drawn from the new kind's sleeves); None when `garment` is no top or no judged change starts from it."""
    if garment.kind not in UPPER_KINDS:
        return None
    kinds = [k for k in UPPER_KINDS if k != garment.kind and (garment.kind, k) not in TYPE_CHANGES_UNJUDGED]
    if not kinds:
        return None
    kind = str(rng.choice(kinds))
    sleeves = SLEEVES_BY_KIND[kind]
    sleeve = garment.sleeve if garment.sleeve in sleeves else str(rng.choice(sleeves))
    return dataclasses.replace(garment, kind=kind, sleeve=sleeve)


def names_sleeve(case_kind: str, target: Garment) -> bool:
    """Whether a case's instruction names the target's sleeve: a sleeve change's always, a type change's when the
    new kind comes with more than one sleeve (a sweater is long-sleeved, a tank top sleeveless, by the word)."""
    return case_kind == "sleeve" or (case_kind == "type" and len(SLEEVES_BY_KIND.get(target.kind, ())) > 1)


def edited_slot(photo: Sample) -> str | None:
    """The garment slot an edit case changes in `photo`: its first JUDGED_SLOTS garment, when it wears no jacket
    (the jacket would hide it) and the garment covers at least 16 pixels; else None."""
    garments = photo.attributes.garments()
    slots = [s for s in JUDGED_SLOTS if s in garments]
    if "outerwear" in garments or not slots or int(photo.mask(slots[0]).sum()) < 16:
        return None
    return slots[0]


def make_cases(
    n: int, size: int, seed: int = 0, sleeve_cases: int = 0, world: str = DEFAULT_WORLD, type_cases: int = 0
) -> list[EditCase]:
    """`n` cases from held-out renders at `size` px without a jacket, edit kinds cycling colour, pattern, both;
    then `sleeve_cases` cases that change only the sleeve, on further renders whose garment has another sleeve;
    then `type_cases` cases that change only the kind of top (type_target), on further renders of a top.

    The first n cases do not depend on `sleeve_cases` or `type_cases`, nor the sleeve cases on `type_cases`
    (each kind of case draws from its own random stream, and the type cases come last).
    """
    if n < 1 or sleeve_cases < 0 or type_cases < 0:
        raise ValueError(f"need n >= 1, sleeve_cases >= 0 and type_cases >= 0, got n={n}, "
                         f"sleeve_cases={sleeve_cases}, type_cases={type_cases}")  # fmt: skip
    rng, sleeve_rng, type_rng = (np.random.default_rng(seed), np.random.default_rng([seed, 1]),
                                 np.random.default_rng([seed, 2]))  # fmt: skip
    total = n + sleeve_cases + type_cases
    cases: list[EditCase] = []
    for photo_seed in held_out_seeds(20 * total + 20, seed=seed):
        photo = render(photo_seed, size=size, world=world)
        if (slot := edited_slot(photo)) is None:
            continue
        garments = photo.attributes.garments()
        if len(cases) < n:
            kind = EDIT_KINDS[len(cases) % len(EDIT_KINDS)]
            target = target_for(garments[slot], kind, rng)
        elif len(cases) < n + sleeve_cases:
            if (changed := sleeve_target(garments[slot], sleeve_rng)) is None:
                continue
            kind, target = "sleeve", changed
        else:
            if (changed := type_target(garments[slot], type_rng)) is None:
                continue
            kind, target = "type", changed
        ideal = render(photo_seed, size=size, attributes=photo.attributes.with_garment(slot, **garment_fields(target)))
        text = instruction_for(target, names_sleeve(kind, target))
        cases.append(EditCase(photo_seed, slot, kind, photo, target, ideal, text))
        if len(cases) == total:
            return cases
    raise RuntimeError(f"found only {len(cases)} held-out renders without a jacket for "
                       f"{n} + {sleeve_cases} + {type_cases} cases")  # fmt: skip


def garment_fields(g: Garment) -> dict[str, Any]:
    """The fields an edit may change, as `Attributes.with_garment` keywords."""
    return {"kind": g.kind, "colour": g.colour, "pattern": g.pattern, "secondary": g.secondary, "sleeve": g.sleeve}


def _grown(mask: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    """[H, W] bool mask grown by `pixels` (the anti-aliased rim around a garment's label pixels)."""
    return dilate(mask[None, None].float(), pixels)[0, 0] > 0


def _capped_psnr(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor) -> float:
    value = float(psnr(a[None], b[None], region[None, None].float())[0])
    return min(value, PSNR_CAP_DB)


class Scorer:
    """Scores results of the cases with the judges and, when the bundle has one, its DensePose (`type_judge`:
    needed only by type-change cases)."""

    def __init__(
        self, judge: PatternJudge, densepose: Any, device: torch.device, type_judge: TypeJudge | None = None
    ) -> None:
        self.judge = judge
        self.type_judge = type_judge
        self.densepose = densepose
        self.device = device
        self._photo_parts: dict[int, torch.Tensor] = {}

    def _parts(self, image: torch.Tensor) -> torch.Tensor:
        from ficekit.masking import densepose_part_maps

        x = image[None].to(self.device)
        with torch.no_grad():
            probs = densepose_part_maps(self.densepose(x), tuple(x.shape[-2:]), num_images=1)
        return probs.argmax(dim=1).cpu()  # [1, H, W]

    def _type_success(self, case: EditCase, result: torch.Tensor) -> float:
        """1.0 when `result` shows the target's type: the type judge (framed by the photo's upper body) reads its
        kind, or one drawn alike, and no jacket, and the sleeve judge its sleeve (which tells a sweater from a
        short-sleeved t-shirt)."""
        if self.type_judge is None:
            raise ValueError("a type-change case needs the type judge: give Scorer a type_judge")
        region = upper_body_region(case.photo.densepose.I)
        read = self.type_judge.predict(result[None], region[None])[0]
        sleeve = judge_sleeve(result, case.photo, case.slot)
        return float(same_drawn_kind(read.kind, case.target.kind) and not read.jacket and sleeve == case.target.sleeve)

    def score(self, case: EditCase, result: torch.Tensor) -> dict[str, float]:
        """The judges' scores of `result` ([3, H, W] in [0, 1]) against the case's target; sleeve_success is
        NaN for a case that does not change the sleeve, type_success for one that is no type change."""
        garment = case.judged_mask()
        patterned = case.target.pattern != "plain"
        votes = palette_votes(result, garment, mixes=patterned)
        sleeve_changed = case.kind == "sleeve"
        scores = {
            "colour_success": float(colour_matches(votes, case.target.colour, patterned)),
            "pattern_success": float(self.judge.predict(result[None], garment[None])[0] == case.target.pattern),
            "sleeve_success": float(judge_sleeve(result, case.photo, case.slot) == case.target.sleeve)
            if sleeve_changed else math.nan,
            "type_success": self._type_success(case, result) if case.kind == "type" else math.nan,
            "psnr_outside_mask_db": _capped_psnr(result, case.photo.to_tensor(), ~_grown(case.edit_region())),
            "head_psnr_db": _capped_psnr(result, case.photo.to_tensor(), torch.from_numpy(case.photo.mask("head") | case.photo.mask("hair"))),
            "pose_part_iou": math.nan,
        }
        if self.densepose is not None:
            if case.seed not in self._photo_parts:
                self._photo_parts[case.seed] = self._parts(case.photo.to_tensor())
            scores["pose_part_iou"] = float(part_iou(self._photo_parts[case.seed], self._parts(result))[0])
        return scores


def bootstrap_ci(
    values: Sequence[float], level: float = CI_LEVEL, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampling cases with replacement, seeded).

    With 24 cases one case moves a success rate by 4 points; the interval says which differences are more than that.
    """
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci: no finite values")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_ci: level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def _announced_judge(
    judge_class: type[JudgeT], minutes: str, size: int, cache_dir: str | Path | None, progress: bool, world: str
) -> JudgeT:
    """`judge_class.trained(...)`, saying first (one warning) when it must be trained: minutes of CPU."""
    path = judge_class.cache_path(size, cache_dir, world)
    if not path.exists():
        logger.warning(
            "training the %s judge for %d px once (about %s on one CPU core); it will be cached at %s",
            judge_class.NAME, size, minutes, path,
        )  # fmt: skip
    return judge_class.trained(size, cache_dir=cache_dir, progress=progress, world=world)


def pattern_judge(
    size: int, cache_dir: str | Path | None = None, progress: bool = True, world: str = DEFAULT_WORLD
) -> PatternJudge:
    """The pattern judge for `size` px of `world`, saying first (one warning) when it must be trained: minutes of CPU."""
    return _announced_judge(PatternJudge, JUDGE_TRAINING_TIME, size, cache_dir, progress, world)


def type_judge(
    size: int, cache_dir: str | Path | None = None, progress: bool = True, world: str = DEFAULT_WORLD
) -> TypeJudge:
    """The type judge for `size` px of `world`, saying first (one warning) when it must be trained: minutes of CPU."""
    return _announced_judge(TypeJudge, TYPE_JUDGE_TRAINING_TIME, size, cache_dir, progress, world)


def summarize(rows: list[dict[str, float]], seed: int = 0) -> dict[str, Any]:
    """Mean of each metric over the cases that have it; rates also get `<rate>_ci95` [low, high] and `<rate>_n`."""
    out: dict[str, Any] = {}
    for key in METRICS:
        values = [r[key] for r in rows if key in r and not math.isnan(r[key])]
        out[key] = float(np.mean(values)) if values else None
        if key in RATES:
            out[f"{key}_ci95"] = list(bootstrap_ci(values, seed=seed)) if values else None
            out[f"{key}_n"] = len(values)
    return out


def run_benchmark(
    bundle: str = "demo",
    n: int = 24,
    seed: int = 0,
    iterations: int | None = None,
    configs: Sequence[str] = tuple(CONFIGS),
    device: str = "auto",
    progress: bool = True,
    judge_cache: str | None = None,
    grid_path: str | Path | None = None,
    sleeve_cases: int = 0,
    inversion_steps: int | None = None,
    world: str | None = None,  # the world of the test photos; None = the bundle's (its provenance), else v1
    type_cases: int = 0,
    ceiling_steps: int = 0,  # > 0: add the 'ideal-projected' row (ficekit.eval.ceiling) with this many steps
) -> dict[str, Any]:
    """Run every configuration on `n` cases (plus `sleeve_cases` sleeve and `type_cases` type changes) and return
    the report (what --json writes); a configuration the bundle or the installation cannot run is listed under
    'skipped'. The type judge is loaded (or trained) only when there are type cases; in a world whose kinds of top
    it cannot tell apart (not in TYPE_JUDGED_WORLDS) there are none, and 'type_cases_skipped' says why. With
    `ceiling_steps` the generator's ceiling row follows 'ideal': each ideal projected into W+ (ficekit.eval.ceiling)."""
    from ficekit.pipeline import FicePipeline

    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    pipe = FicePipeline.from_bundle(bundle, device=device)
    size = pipe.resolution
    world = world or bundle_world(pipe.bundle)
    type_cases_skipped = None
    if type_cases and world not in TYPE_JUDGED_WORLDS:
        type_cases_skipped = (f"no type cases in world {world}: the type judge tells kinds of top apart only in "
                              f"{', '.join(TYPE_JUDGED_WORLDS)} (judges.TYPE_JUDGED_WORLDS)")  # fmt: skip
        logger.warning("%s", type_cases_skipped)
        type_cases = 0
    cases = make_cases(n, size, seed, sleeve_cases, world, type_cases)
    judge = pattern_judge(size, judge_cache, progress, world)
    kinds_judge = type_judge(size, judge_cache, progress, world) if type_cases else None
    scorer = Scorer(judge, pipe.densepose, pipe.device, kinds_judge)
    iterations = pipe.settings().iterations if iterations is None else iterations

    per_case: dict[str, list[dict[str, Any]]] = {"ideal": []}
    for case in cases:
        per_case["ideal"].append(scorer.score(case, case.ideal.to_tensor()) | {"seconds_per_edit": math.nan})
    results: dict[str, list[torch.Tensor]] = {}
    skipped: dict[str, str] = {}
    if ceiling_steps:
        reason = _cannot_run({"inversion": "optimize"}, pipe)
        if reason is not None:
            logger.warning("skipping %s: %s", CEILING_ROW, reason)
            skipped[CEILING_ROW] = reason
        else:
            per_case[CEILING_ROW], results[CEILING_ROW] = _ceiling_rows(pipe, cases, scorer, ceiling_steps, seed, progress)
    for name in configs:
        overrides = dict(CONFIGS[name], iterations=iterations, seed=seed, batch_size=1)
        if overrides.get("inversion", "e4e") != "e4e":
            overrides["inversion_steps"] = inversion_steps  # None: the method's default
        reason = _cannot_run(overrides, pipe)
        if reason is not None:
            logger.warning("skipping %s: %s", name, reason)
            skipped[name] = reason
            continue
        rows, images = [], []
        for case in cases:
            start = time.perf_counter()
            edit = pipe.edit(case.photo.to_tensor(), case.text, progress=False, **overrides)
            seconds = time.perf_counter() - start
            result = edit.images[0]
            # steps the W+ loop ran (fewer than iterations + 1 when it stopped early): in the per-case JSON
            steps = len(edit.history.get("total", ()))
            rows.append(scorer.score(case, result) | {"seconds_per_edit": seconds, "optimisation_steps": steps})
            images.append(result)
            logger.info("%s seed %d %r: %s", name, case.seed, case.text, {k: round(v, 3) for k, v in rows[-1].items()})
        per_case[name] = rows
        results[name] = images
        if progress:
            print(f"  {name}: {_format_row(summarize(rows, seed))}", file=sys.stderr)

    report = {
        "bundle": str(pipe.bundle.root),
        "n": n,
        "sleeve_cases": sleeve_cases,
        "type_cases": type_cases,
        "type_cases_skipped": type_cases_skipped,
        "world": world,
        "seed": seed,
        "ci_level": CI_LEVEL,
        "iterations": iterations,
        "inversion_steps": inversion_steps,
        "device": str(pipe.device),
        "resolution": size,
        "psnr_cap_db": PSNR_CAP_DB,
        "pattern_judge_held_out_accuracy": judge.accuracy,
        "type_judge_held_out_accuracy": kinds_judge.accuracy if kinds_judge is not None else None,
        "ceiling_steps": ceiling_steps,
        "configs": {name: {"settings": _row_settings(name, ceiling_steps), **summarize(rows, seed)}
                    for name, rows in per_case.items()},
        "skipped": skipped,
        "cases": [
            {"seed": c.seed, "slot": c.slot, "kind": c.kind, "text": c.text,
             "target": {"kind": c.target.kind, "colour": c.target.colour, "pattern": c.target.pattern,
                        "sleeve": c.target.sleeve},
             "scores": {name: rows[i] for name, rows in per_case.items()}}
            for i, c in enumerate(cases)
        ],
    }  # fmt: skip
    if grid_path is not None:
        write_grid(grid_path, cases, results)
    return report


def _ceiling_rows(
    pipe: Any, cases: Sequence[EditCase], scorer: Scorer, steps: int, seed: int, progress: bool
) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
    """Scores and images of the generator's ceiling: each case's ideal projected into W+ (ficekit.eval.ceiling)."""
    rows, images = [], []
    for case in cases:
        start = time.perf_counter()
        image = projected_ideal(case.ideal.to_tensor(), case.photo.to_tensor(), case.edit_region(), pipe.generator,
                                pipe.encoder, steps=steps, seed=seed)  # fmt: skip
        rows.append(scorer.score(case, image) | {"seconds_per_edit": time.perf_counter() - start})
        images.append(image)
    if progress:
        print(f"  {CEILING_ROW}: {_format_row(summarize(rows, seed))}", file=sys.stderr)
    return rows, images


def _cannot_run(overrides: dict[str, Any], pipe: Any) -> str | None:
    """Why a configuration cannot run with this bundle and installation (None: it can)."""
    if overrides.get("mask") == "fice" and pipe.segmenter is None:
        return f"bundle {pipe.bundle.name} has no segmenter"
    if overrides.get("inversion", "e4e") != "e4e":
        try:
            from ficekit.inversion import invert  # noqa: F401
        except ImportError as e:
            return f"inversion {overrides['inversion']!r} needs ficekit.inversion, which is not importable ({e})"
    return None


def _row_settings(name: str, ceiling_steps: int) -> dict[str, Any]:
    """What a report row ran: a configuration's settings, the renderer's ideal, or the ceiling's projection."""
    if name == CEILING_ROW:
        return {"projection": "optimize", "steps": ceiling_steps}
    return CONFIGS.get(name, {"renderer": True})


def write_grid(path: str | Path, cases: Sequence[EditCase], results: dict[str, list[torch.Tensor]]) -> None:
    """A PNG with one row per case: photo | ideal edit | each configuration's result (nearest-upscaled x3).

    Like the --json report, it replaces an earlier benchmark output at the same path (atomically).
    """
    from ficekit.imageio import replace_png

    rows = []
    for i, case in enumerate(cases):
        tiles = [case.photo.to_tensor(), case.ideal.to_tensor()] + [images[i] for images in results.values()]
        rows.append(torch.cat(tiles, dim=2))
    grid = torch.cat(rows, dim=1)
    replace_png(F.interpolate(grid[None], scale_factor=3, mode="nearest")[0], Path(path))


def _format_row(summary: dict[str, float | None]) -> str:
    def fmt(key: str) -> str:
        v = summary.get(key)
        if v is None:
            return "-"
        return f"{100 * v:.0f}%" if key.endswith("success") else f"{v:.2f}" if key != "seconds_per_edit" else f"{v:.1f}"

    return "  ".join(f"{k}={fmt(k)}" for k in METRICS)


def format_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: one row per configuration; success rates with their 95 % bootstrap
    interval over cases, e.g. '65 % [46, 83]'; skipped configurations as notes below it."""
    header = ("| configuration | colour success [95 % CI] | pattern success [95 % CI] | sleeve success [95 % CI] | "
              "type success [95 % CI] | PSNR outside mask (dB) | head PSNR (dB) | pose IoU | s / edit |")  # fmt: skip
    lines = [header, "|" + "---|" * 9]
    for name, row in report["configs"].items():
        cells = []
        for key in METRICS:
            v = row.get(key)
            if v is None:
                cells.append("–")
            elif key in RATES:
                ci = row.get(f"{key}_ci95")
                cells.append(f"{100 * v:.0f} %" + (f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else ""))
            elif key == "seconds_per_edit":
                cells.append(f"{v:.1f}")
            else:
                cells.append(f"{v:.2f}" if key == "pose_part_iou" else f"{v:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, reason in report.get("skipped", {}).items():
        lines.append(f"\nskipped {name}: {reason}")
    if report.get("type_cases_skipped"):
        lines.append(f"\n{report['type_cases_skipped']}")
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """NaN and infinities become null (JSON has neither); containers are walked."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ficekit.eval.synthetic", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--n", type=int, default=24, help="edit cases (default: 24)")
    parser.add_argument("--seed", type=int, default=0, help="picks the held-out photos and targets (default: 0)")
    parser.add_argument("--world", choices=WORLD_VERSIONS, default=None,
                        help="world of the test photos (default: the bundle's, as its provenance records)")  # fmt: skip
    parser.add_argument("--bundle", default="demo", help="bundle name or folder (default: demo)")
    parser.add_argument("--iterations", type=int, default=None, help="optimisation steps (default: the bundle's)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configurations (default: all)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--grid", type=Path, default=None, help="write a PNG grid of the results here")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--sleeve-cases", type=int, default=SLEEVE_CASES,
                        help=f"sleeve-change cases after the n others (default: {SLEEVE_CASES})")  # fmt: skip
    parser.add_argument("--type-cases", type=int, default=TYPE_CASES,
                        help=f"cases changing the kind of top, after the sleeve cases (default: {TYPE_CASES})")  # fmt: skip
    parser.add_argument("--inversion-steps", type=int, default=None,
                        help="steps of the optimize/pti inversions (default: each method's)")  # fmt: skip
    parser.add_argument("--ceiling", type=int, nargs="?", const=DEFAULT_CEILING_STEPS, default=0, metavar="STEPS",
                        help=f"add the generator's ceiling row '{CEILING_ROW}': each ideal edit projected into W+ with "
                        f"STEPS optimisation steps (default {DEFAULT_CEILING_STEPS})")  # fmt: skip
    parser.add_argument("--rounds", type=int, choices=(1, 2), default=1,
                        help="2: the two-round benchmark (session vs naive chain vs one edit; ficekit.eval.rounds)")  # fmt: skip
    parser.add_argument("--followup-iterations", type=int, default=None,
                        help="--rounds 2: steps of the session's follow-up round (default: the bundle's)")  # fmt: skip
    parser.add_argument("--pool", type=Path, nargs="+", default=None, metavar="JSON",
                        help="join the --json reports of several seeds into one (ficekit.eval.pool): table over all "
                        "cases and success per target pattern and sleeve; runs no edit")  # fmt: skip
    args = parser.parse_args(argv)
    if args.pool is not None:
        return _pool_main(args.pool, args.json)
    if args.rounds == 2:
        from ficekit.eval.rounds import run_from_args

        return run_from_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if (args.n < 1 or (args.iterations is not None and args.iterations < 0) or args.sleeve_cases < 0
            or args.type_cases < 0 or (args.inversion_steps or 0) < 0 or args.ceiling < 0):
        print("ficekit.eval.synthetic: error: --n must be >= 1; --iterations, --sleeve-cases, --type-cases, "
              "--inversion-steps, --ceiling >= 0", file=sys.stderr)  # fmt: skip
        return 2
    from ficekit.checkpoint_io import CheckpointError

    try:
        report = run_benchmark(
            args.bundle, args.n, args.seed, args.iterations, [c.strip() for c in args.configs.split(",") if c.strip()],
            args.device, progress=not args.quiet, grid_path=args.grid, sleeve_cases=args.sleeve_cases,
            inversion_steps=args.inversion_steps, world=args.world, type_cases=args.type_cases,
            ceiling_steps=args.ceiling,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"ficekit.eval.synthetic: error: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.json is not None:
        from ficekit.checkpoint_io import atomic_write

        args.json.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(json_safe(report), indent=2, allow_nan=False)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    return 0


def _pool_main(paths: Sequence[Path], out: Path | None) -> int:
    """--pool: print the pooled table and the breakdowns of each configuration; write the pooled JSON."""
    from ficekit.eval.pool import BREAKDOWNS, PoolError, breakdown, format_breakdown, pool_reports

    try:
        reports = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
        pooled = pool_reports(reports)
        targeted = all("target" in case for case in pooled["cases"])  # reports made before targets were recorded lack them
        tables = {name: {by: breakdown(pooled, by, name) for by in BREAKDOWNS} for name in pooled["configs"]
                  if targeted}  # fmt: skip
    except (OSError, json.JSONDecodeError, PoolError, ValueError, KeyError) as e:
        print(f"ficekit.eval.synthetic: error: --pool: {e}", file=sys.stderr)
        return 2
    print(format_table(pooled))
    if not targeted:
        print("\nno breakdown per target: some reports were made before cases recorded their target")
    for name, by_field in tables.items():
        if name == "ideal":
            continue
        for by, table in by_field.items():
            print(f"\n{name}, by target {by}:\n{format_breakdown(table, by)}")
    if out is not None:
        from ficekit.checkpoint_io import atomic_write

        out.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(json_safe({**pooled, "breakdowns": tables}), indent=2, allow_nan=False)
        atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
