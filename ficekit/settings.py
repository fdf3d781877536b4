"""EditSettings: everything that steers one edit, validated in one place.

A bundle's `defaults` (bundle.json), the Python API's keyword overrides and the command line's options all
end up here; every value is checked once, before any model loads, with a one-line error naming the option.
Limits on options that multiply time or memory are documented constants (`--force` lifts the iteration cap).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .colour_match import COLOUR_MATCHES
from .fast_step import COMPILE_CHOICES
from .inversion import INVERSION_METHODS
from .objective import CLIP_REGIONS, MODEL_TERMS
from .optimize import MAX_EARLY_STOP, MAX_PERCEPTION_EVERY
from .regularizers import REGULARIZERS
from .stitch import STITCH_METHODS

MASK_MODES = ("auto", "fice")
SCHEDULES = ("constant", "cosine", "rampdown")
CATEGORIES = ("upper", "lower", "full", "outerwear")
STARTS = ("inversion", "collage")  # where a first round's optimisation starts (ficekit.pipeline.start_latent)
FICE_WEIGHTS: dict[str, float] = {"clip": 1.0, "img": 30.0, "shape": 10.0, "head_shape": 1.0, "w_delta": 1.0}

MAX_ITERATIONS = 20_000  # optimisation steps above this are refused unless forced (hours on a CPU)
MAX_CLIP_AUGMENT = 64  # CLIP views per image: each view is one more CLIP forward and backward per step
MAX_BATCH_SIZE = 64  # photos optimised together: memory grows linearly with it
MAX_INVERSION_STEPS = 20_000  # optimisation/PTI inversion steps
MAX_SEED = 2**63 - 1  # torch seeds are 64-bit


@dataclass(frozen=True)
class EditSettings:
    """Everything that steers one edit; defaults come from the bundle, overrides from the caller."""

    iterations: int = 500  # optimisation steps of a first round (FICE runs iterations + 1)
    lr: float = 0.05  # Adam learning rate
    weights: Mapping[str, float] = field(default_factory=lambda: dict(FICE_WEIGHTS))  # term name -> weight
    regularizer: str = "w_delta"  # latent regulariser name (ficekit.regularizers.REGULARIZERS)
    mask: str = "fice"  # 'fice' (FICE's masks) or 'auto' (garment auto-masking)
    stitch: str = "fice"  # stitching method (ficekit.stitch.STITCH_METHODS)
    schedule: str = "constant"  # learning-rate schedule
    seed: int | None = 0  # makes a run repeatable; None = not seeded
    category: str | None = None  # garment category; None = from the text (or CLIP zero-shot per photo)
    batch_size: int = 4  # photos optimised together
    clip_augment: int = 0  # random views CLIP scores per image (ficekit); 0 = G(w) itself, as FICE
    clip_region: str = "image"  # CLIP scores G(w) ('image', FICE) or G(w) over the kept photo ('edit', ficekit)
    inversion: str = "e4e"  # photo -> W+: 'e4e' (FICE), 'optimize' or 'pti' (ficekit.inversion)
    inversion_steps: int | None = None  # steps of 'optimize'/'pti'; None = the method's default
    start: str = "inversion"  # first round starts at the inversion (FICE) or at the encoded 'collage' edit
    followup_iterations: int | None = None  # steps of a session's follow-up round; None = iterations // 3
    colour_match: str = "off"  # 'collage': the result's garment colours matched to the collage's; 'off' = FICE
    compile: str = "off"  # 'off' = the eager reference loop; 'auto' = the compiled step (ficekit.fast_step)
    perception_every: int = 1  # DensePose/segmenter terms every k-th step (faster, changes the maths); 1 = FICE
    early_stop: int = 0  # stop on a loss plateau over windows of this many steps (changes the result); 0 = off
    early_stop_tol: float = 0.01  # relative fall of the windowed mean loss below which the loss has plateaued

    def validate(self, force: bool = False) -> EditSettings:
        """Raise ValueError naming the first impossible value; `force` lifts the iteration cap."""
        _check_int("iterations", self.iterations, 1, None if force else MAX_ITERATIONS, "--force allows more")
        if self.followup_iterations is not None:
            _check_int("followup_iterations", self.followup_iterations, 1, None if force else MAX_ITERATIONS)
        _check_number("lr", self.lr, positive=True)
        _check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _check_int("clip_augment", self.clip_augment, 0, MAX_CLIP_AUGMENT)
        _check_int("perception_every", self.perception_every, 1, MAX_PERCEPTION_EVERY)
        _check_int("early_stop", self.early_stop, 0, MAX_EARLY_STOP)
        _check_number("early_stop_tol", self.early_stop_tol, positive=False)
        if self.early_stop_tol >= 1:
            raise ValueError(f"early_stop_tol must be below 1, got {self.early_stop_tol}")
        if self.inversion_steps is not None:
            _check_int("inversion_steps", self.inversion_steps, 0, MAX_INVERSION_STEPS)
            if self.inversion == "e4e" and self.inversion_steps:
                raise ValueError("inversion_steps: e4e is one encoder pass; steps apply to 'optimize' and 'pti'")
        if self.seed is not None:
            _check_int("seed", self.seed, 0, MAX_SEED)
        _check_choice("mask", self.mask, MASK_MODES)
        _check_choice("clip_region", self.clip_region, CLIP_REGIONS)
        _check_choice("stitch", self.stitch, STITCH_METHODS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("regularizer", self.regularizer, sorted(REGULARIZERS))
        _check_choice("inversion", self.inversion, INVERSION_METHODS)
        _check_choice("start", self.start, STARTS)
        _check_choice("colour_match", self.colour_match, COLOUR_MATCHES)
        _check_choice("compile", self.compile, COMPILE_CHOICES)
        if self.category is not None:
            _check_choice("category", self.category, CATEGORIES)
        if not isinstance(self.weights, Mapping):
            raise ValueError(f"weights must map term names to numbers, got {self.weights!r}")
        known = (*MODEL_TERMS, *REGULARIZERS)
        for name, weight in self.weights.items():
            if name not in known:
                raise ValueError(f"weights: unknown term {name!r}; known terms: {list(known)}")
            _check_number(f"weights[{name!r}]", weight, positive=False)
        return self

    @property
    def rounds_iterations(self) -> int:
        """Steps of a follow-up round: followup_iterations, or a third of a first round's."""
        return self.followup_iterations or max(1, self.iterations // 3)


def _check_int(name: str, value: Any, low: int, high: int | None, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {bound}, got {value}" + (f" ({hint})" if hint and value > low else ""))


def _check_number(name: str, value: Any, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if (positive and not value > 0) or value < 0:
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value}")


def _check_choice(name: str, value: Any, choices: Any) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


BUNDLE_DEFAULT_FIELDS = (
    "iterations", "lr", "weights", "regularizer", "mask", "stitch", "schedule", "clip_augment", "clip_region",
    "inversion", "inversion_steps", "start", "followup_iterations", "colour_match", "compile", "perception_every",
    "early_stop", "early_stop_tol",
)


def edit_settings(defaults: Any, force: bool = False, **overrides: Any) -> EditSettings:
    """EditSettings from a bundle's EditDefaults plus `overrides` (None = keep the default; weights merge
    term by term), validated — cheap, so callers can check options before loading any model."""
    base = EditSettings(**{name: getattr(defaults, name) for name in BUNDLE_DEFAULT_FIELDS if hasattr(defaults, name)})
    base = dataclasses.replace(base, weights=dict(base.weights))
    unknown = set(overrides) - {f.name for f in dataclasses.fields(EditSettings)}
    if unknown:
        raise ValueError(f"unknown edit setting(s) {sorted(unknown)}")
    if overrides.get("weights") is not None:
        if not isinstance(overrides["weights"], Mapping):
            raise ValueError(f"weights must map term names to numbers, got {overrides['weights']!r}")
        overrides["weights"] = {**base.weights, **overrides["weights"]}
    keep_none = ("seed", "category", "inversion_steps", "followup_iterations")
    overrides = {k: v for k, v in overrides.items() if v is not None or k in keep_none}
    given_steps = overrides.get("inversion_steps")
    for name in ("inversion_steps", "followup_iterations"):  # None from a caller means "the bundle's"
        if name in overrides and overrides[name] is None:
            overrides[name] = getattr(base, name)
    if overrides.get("inversion", base.inversion) != base.inversion and given_steps is None:
        overrides["inversion_steps"] = None  # the bundle's step count belongs to the bundle's method
    return dataclasses.replace(base, **overrides).validate(force=force)


def settings_dict(settings: EditSettings) -> dict[str, Any]:
    """EditSettings as keyword overrides (weights as a plain dict), e.g. to pass on or write in a report."""
    d = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    d["weights"] = dict(d["weights"])
    return d


def objective_weights(weights: Mapping[str, float], regularizer: str) -> dict[str, float]:
    """Weights keyed for the objective: a weight given under another regulariser's name (the bundle's
    default, e.g. FICE's 'w_delta') moves to the chosen regulariser unless that has its own weight."""
    others = {name: w for name, w in weights.items() if name in REGULARIZERS and name != regularizer}
    out = {name: w for name, w in weights.items() if name not in others}
    if regularizer not in out and others:
        out[regularizer] = next(iter(others.values()))
    out.pop("none", None)
    return out
