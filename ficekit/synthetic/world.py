"""The vocabulary of the synthetic fashion world and the sampling of one person's attributes.

Everything a picture shows is decided here, as data: `render_attributes(seed)` draws an `Attributes`
record and the renderer (render.py) is a pure function of that record and the image size. Editing
one field of the record (`Attributes.with_garment`) and rendering again changes only what that field
draws. Units: body proportions and pose angles are plain floats (degrees for angles); colours are
names from `PALETTE` (RGB 0-255 as data), except the background's free RGB triples.
"""

from __future__ import annotations

import colorsys
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------------
# Vocabulary.

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (200, 32, 40),
    "orange": (238, 122, 30),
    "yellow": (242, 204, 48),
    "green": (38, 138, 62),
    "teal": (24, 128, 132),
    "blue": (40, 92, 200),
    "navy": (26, 36, 88),
    "purple": (116, 52, 150),
    "pink": (240, 142, 180),
    "white": (242, 242, 238),
    "black": (26, 26, 30),
    "grey": (130, 130, 134),
    "brown": (112, 70, 40),
    "beige": (222, 202, 162),
}
PATTERNS: tuple[str, ...] = ("plain", "stripes_h", "stripes_v", "dots", "checks")
UPPER_KINDS: tuple[str, ...] = ("tshirt", "shirt", "sweater", "tank_top")
LOWER_KINDS: tuple[str, ...] = ("trousers", "shorts", "skirt")
DRESS_KINDS: tuple[str, ...] = ("dress",)
OUTERWEAR_KINDS: tuple[str, ...] = ("jacket",)
SLEEVES: tuple[str, ...] = ("sleeveless", "short", "long")
LENGTHS: tuple[str, ...] = ("mini", "knee", "midi")  # skirts and dresses only
SLEEVES_BY_KIND: dict[str, tuple[str, ...]] = {
    "tshirt": ("short", "long"),
    "shirt": ("short", "long", "sleeveless"),
    "sweater": ("long",),
    "tank_top": ("sleeveless",),
    "dress": ("sleeveless", "short", "long"),
    "jacket": ("long",),
}
# Which Attributes field holds each kind, and the parsing label its pixels get.
SLOTS: dict[str, tuple[str, ...]] = {
    "upper": UPPER_KINDS,
    "lower": LOWER_KINDS,
    "dress": DRESS_KINDS,
    "outerwear": OUTERWEAR_KINDS,
}
SLOT_LABELS: dict[str, str] = {
    "upper": "upper_garment",
    "lower": "lower_garment",
    "dress": "dress",
    "outerwear": "outerwear",
}
SHOE_COLOURS: tuple[str, ...] = ("black", "brown", "white", "grey", "navy", "red", "beige")

SKIN_TONES: dict[str, tuple[int, int, int]] = {
    "pale": (246, 218, 196),
    "light": (234, 192, 160),
    "medium": (206, 154, 114),
    "olive": (180, 132, 90),
    "brown": (140, 92, 60),
    "dark": (92, 60, 40),
}
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (30, 26, 26),
    "dark_brown": (66, 42, 28),
    "brown": (110, 72, 40),
    "blonde": (214, 178, 106),
    "auburn": (150, 62, 30),
    "grey": (168, 166, 160),
}
HAIR_STYLES: tuple[str, ...] = ("buzz", "short", "bob", "long", "bun")
PRESENTATIONS: tuple[str, ...] = ("woman", "man")

# World versions: how a person is framed. 'v1' (the default, which the first demo bundle was trained on) shows
# small full-body figures: at 64 px a top is about 14 px wide, too small to carry stripes, dots or checks.
# 'v2' frames the upper body like VITON (head to hips, broader shoulders), so a top spans about half the frame.
# A record carries its version, so an edited copy (`with_garment`) is drawn with the same framing.
WORLD_VERSIONS: tuple[str, ...] = ("v1", "v2")
DEFAULT_WORLD = "v1"

# The parsing map's classes; exactly these names (the editor's auto-masking reads them).
# 'head' is face and neck skin, including skin showing at a neckline; bare shoulders are 'arms'.
PARSING_LABELS: dict[str, int] = {
    "background": 0,
    "head": 1,
    "hair": 2,
    "upper_garment": 3,
    "lower_garment": 4,
    "dress": 5,
    "outerwear": 6,
    "arms": 7,
    "hands": 8,
    "legs": 9,
    "shoes": 10,
}

# ---------------------------------------------------------------------------------------------------
# The record.


@dataclass(frozen=True)
class Garment:
    """One garment: its kind, colour and pattern (+ a second colour for a patterned one)."""

    kind: str  # one of UPPER_KINDS, LOWER_KINDS, DRESS_KINDS or OUTERWEAR_KINDS
    colour: str  # a PALETTE name
    pattern: str = "plain"  # one of PATTERNS
    secondary: str | None = None  # PALETTE name of the pattern's second colour; None for 'plain'
    sleeve: str | None = None  # SLEEVES entry for tops, dresses and jackets; None otherwise
    length: str | None = None  # LENGTHS entry for skirts and dresses; None otherwise

    def validate(self, slot: str) -> None:
        """Raise ValueError if a field is unknown or does not fit this kind of garment."""
        where = f"attributes.{slot}"
        if self.kind not in SLOTS[slot]:
            raise ValueError(f"{where}.kind: expected one of {SLOTS[slot]}, got {self.kind!r}")
        if self.colour not in PALETTE:
            raise ValueError(f"{where}.colour: expected a PALETTE name {tuple(PALETTE)}, got {self.colour!r}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"{where}.pattern: expected one of {PATTERNS}, got {self.pattern!r}")
        if self.pattern == "plain" and self.secondary is not None:
            raise ValueError(f"{where}.secondary: must be None for a plain garment, got {self.secondary!r}")
        if self.pattern != "plain" and self.secondary not in PALETTE:
            raise ValueError(f"{where}.secondary: a {self.pattern!r} pattern needs a PALETTE colour, got {self.secondary!r}")
        sleeves = SLEEVES_BY_KIND.get(self.kind)
        if sleeves is None and self.sleeve is not None:
            raise ValueError(f"{where}.sleeve: must be None for a {self.kind}, got {self.sleeve!r}")
        if sleeves is not None and self.sleeve not in sleeves:
            raise ValueError(f"{where}.sleeve: a {self.kind} takes one of {sleeves}, got {self.sleeve!r}")
        has_length = self.kind in ("skirt", "dress")
        if has_length and self.length not in LENGTHS:
            raise ValueError(f"{where}.length: a {self.kind} takes one of {LENGTHS}, got {self.length!r}")
        if not has_length and self.length is not None:
            raise ValueError(f"{where}.length: must be None for a {self.kind}, got {self.length!r}")


@dataclass(frozen=True)
class Pose:
    """Limb angles in degrees, outward from hanging straight down. 'right' is the person's right (image left)."""

    arm_right: float  # upper arm
    arm_left: float
    elbow_right: float  # forearm, added to the upper arm's angle
    elbow_left: float
    leg_right: float  # upper leg
    leg_left: float
    knee_right: float  # lower leg, added to the upper leg's angle
    knee_left: float


@dataclass(frozen=True)
class Background:
    """A plain colour (top == bottom) or a vertical gradient from `top` to `bottom`, RGB 0-255."""

    top: tuple[int, int, int]
    bottom: tuple[int, int, int]


@dataclass(frozen=True)
class Attributes:
    """Everything one picture shows. Either `dress` is set, or both `upper` and `lower` are."""

    presentation: str  # PRESENTATIONS entry: body proportions and caption words
    skin: str  # SKIN_TONES name
    hair_style: str  # HAIR_STYLES entry
    hair_colour: str  # HAIR_COLOURS name
    body_width: float  # widths multiplier, about 0.9-1.1
    scale: float  # person height as a fraction of the tallest person, about 0.9-1.0
    offset_x: float  # horizontal shift of the person, in image widths
    pose: Pose
    background: Background
    upper: Garment | None  # top worn under any jacket
    lower: Garment | None  # trousers, shorts or skirt
    dress: Garment | None  # replaces upper and lower
    outerwear: Garment | None  # open jacket over the top or dress, or None
    shoes: str  # SHOE_COLOURS name
    world: str = DEFAULT_WORLD  # WORLD_VERSIONS entry: the framing the renderer draws this person with

    def garments(self) -> dict[str, Garment]:
        """The garments worn, keyed by slot ('upper', 'lower', 'dress', 'outerwear')."""
        return {slot: g for slot in SLOTS if (g := getattr(self, slot)) is not None}

    def with_garment(self, slot: str, **changes: Any) -> Attributes:
        """A copy with fields of one garment replaced, e.g. `with_garment('upper', colour='red')`."""
        if slot not in SLOTS:
            raise ValueError(f"slot: expected one of {tuple(SLOTS)}, got {slot!r}")
        garment = getattr(self, slot)
        if garment is None:
            raise ValueError(f"slot {slot!r}: this person wears no such garment; set it with dataclasses.replace")
        if changes.get("pattern") == "plain" and "secondary" not in changes:
            changes["secondary"] = None
        return dataclasses.replace(self, **{slot: dataclasses.replace(garment, **changes)})

    def validate(self) -> None:
        """Raise ValueError naming the first field that is unknown or inconsistent."""
        check_world(self.world)
        for name, table in (("presentation", PRESENTATIONS), ("skin", SKIN_TONES), ("hair_style", HAIR_STYLES),
                            ("hair_colour", HAIR_COLOURS), ("shoes", SHOE_COLOURS)):
            if getattr(self, name) not in table:
                raise ValueError(f"attributes.{name}: expected one of {tuple(table)}, got {getattr(self, name)!r}")
        if self.dress is not None and (self.upper is not None or self.lower is not None):
            raise ValueError("attributes: a dress replaces both upper and lower; set them to None")
        if self.dress is None and (self.upper is None or self.lower is None):
            raise ValueError("attributes: without a dress, both upper and lower garments are required")
        for slot, garment in self.garments().items():
            garment.validate(slot)
        for name, low, high in (("body_width", 0.7, 1.6), ("scale", 0.7, 1.0), ("offset_x", -0.15, 0.15)):
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"attributes.{name}: expected a value in [{low}, {high}], got {getattr(self, name)}")
        for name, angle in dataclasses.asdict(self.pose).items():
            if not -45.0 <= angle <= 45.0:
                raise ValueError(f"attributes.pose.{name}: expected degrees in [-45, 45], got {angle}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready nested dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attributes:
        """Inverse of `to_dict`."""
        data = dict(data)
        data["pose"] = Pose(**data["pose"])
        bg = data["background"]
        data["background"] = Background(top=tuple(bg["top"]), bottom=tuple(bg["bottom"]))
        for slot in SLOTS:
            if data.get(slot) is not None:
                data[slot] = Garment(**data[slot])
        return cls(**data)


# ---------------------------------------------------------------------------------------------------
# Sampling.

_PATTERN_WEIGHTS = {"plain": 0.4, "stripes_h": 0.15, "stripes_v": 0.15, "dots": 0.15, "checks": 0.15}
# v2 tops and dresses carry patterns more often, so the generator sees each pattern on a fifth of them.
_TOP_PATTERN_WEIGHTS = {"v1": _PATTERN_WEIGHTS, "v2": {"plain": 0.28, "stripes_h": 0.18, "stripes_v": 0.18,
                                                        "dots": 0.18, "checks": 0.18}}
_HAIR_WEIGHTS = {
    "woman": {"buzz": 0.0, "short": 0.15, "bob": 0.3, "long": 0.4, "bun": 0.15},
    "man": {"buzz": 0.35, "short": 0.55, "bob": 0.0, "long": 0.1, "bun": 0.0},
}
_LOWER_WEIGHTS = {
    "woman": {"trousers": 0.4, "shorts": 0.25, "skirt": 0.35},
    "man": {"trousers": 0.7, "shorts": 0.3, "skirt": 0.0},
}
_DRESS_PROBABILITY = {"woman": 0.3, "man": 0.0}
_JACKET_PROBABILITY = 0.2
_BODY_WIDTHS = {"v1": (0.9, 1.1), "v2": (1.3, 1.55)}  # body_width's range per world
_MIN_CONTRAST = 110.0  # RGB distance between a pattern's two colours


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _choice(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def contrasting_colours(colour: str) -> list[str]:
    """Palette colours far enough from `colour` to show as a pattern's second colour."""
    c = np.array(PALETTE[colour], dtype=np.float64)
    return [n for n, rgb in PALETTE.items() if np.linalg.norm(np.array(rgb) - c) >= _MIN_CONTRAST]


def sample_garment(rng: np.random.Generator, kind: str, pattern_weights: dict[str, float] | None = None) -> Garment:
    """Draw the colour, pattern, sleeve and length of one garment of `kind`."""
    colour = _choice(rng, list(PALETTE))
    pattern = _pick(rng, pattern_weights or _PATTERN_WEIGHTS)
    secondary = None if pattern == "plain" else _choice(rng, contrasting_colours(colour))
    sleeve = _choice(rng, SLEEVES_BY_KIND[kind]) if kind in SLEEVES_BY_KIND else None
    length = _choice(rng, LENGTHS) if kind in ("skirt", "dress") else None
    return Garment(kind=kind, colour=colour, pattern=pattern, secondary=secondary, sleeve=sleeve, length=length)


def _background(rng: np.random.Generator) -> Background:
    def muted() -> tuple[int, int, int]:
        rgb = colorsys.hsv_to_rgb(rng.uniform(0.0, 1.0), rng.uniform(0.03, 0.3), rng.uniform(0.55, 0.97))
        return tuple(int(round(255 * x)) for x in rgb)

    top = muted()
    if rng.uniform() < 0.5:
        return Background(top=top, bottom=top)
    return Background(top=top, bottom=muted())


def bundle_world(bundle: Any) -> str:
    """The synthetic world a bundle's models were trained on (its provenance); v1 for bundles from before worlds."""
    return str(bundle.provenance.get("world", DEFAULT_WORLD))


def check_world(world: str) -> str:
    """`world` if it names a world version, else ValueError listing them."""
    if world not in WORLD_VERSIONS:
        raise ValueError(f"world: expected one of {WORLD_VERSIONS}, got {world!r}")
    return world


def render_attributes(seed: int, world: str = DEFAULT_WORLD) -> Attributes:
    """Sample the attributes of the person shown for `seed` in `world` (deterministic; no drawing).

    A seed shows the same person (presentation, skin, hair) and pose in both worlds. v2 draws broader bodies
    (realistic shoulders), patterned tops more often (so its garments may differ) and is framed closer.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    check_world(world)
    rng = np.random.default_rng([int(seed), 0])
    presentation = _choice(rng, PRESENTATIONS)
    skin = _choice(rng, list(SKIN_TONES))
    hair_style = _pick(rng, _HAIR_WEIGHTS[presentation])
    hair_colour = _choice(rng, list(HAIR_COLOURS))
    body_width = float(rng.uniform(*_BODY_WIDTHS[world]))
    scale = float(rng.uniform(0.9, 1.0))
    offset_x = float(rng.uniform(-0.04, 0.04))
    a = rng.uniform(size=8)
    pose = Pose(
        arm_right=float(5 + 14 * a[0]), arm_left=float(5 + 14 * a[1]),
        elbow_right=float(-4 + 12 * a[2]), elbow_left=float(-4 + 12 * a[3]),
        leg_right=float(1 + 5 * a[4]), leg_left=float(1 + 5 * a[5]),
        knee_right=float(-2 + 4 * a[6]), knee_left=float(-2 + 4 * a[7]),
    )
    background = _background(rng)
    upper = lower = dress = None
    if rng.uniform() < _DRESS_PROBABILITY[presentation]:
        dress = sample_garment(rng, "dress", _TOP_PATTERN_WEIGHTS[world])
    else:
        upper = sample_garment(rng, _choice(rng, UPPER_KINDS), _TOP_PATTERN_WEIGHTS[world])
        lower_kind = _pick(rng, _LOWER_WEIGHTS[presentation])
        lower = sample_garment(rng, lower_kind, {"plain": 0.6, "stripes_h": 0.05, "stripes_v": 0.1, "dots": 0.1, "checks": 0.15})
    outerwear = None
    if rng.uniform() < _JACKET_PROBABILITY:
        outerwear = sample_garment(rng, "jacket", {"plain": 0.7, "stripes_h": 0.0, "stripes_v": 0.1, "dots": 0.0, "checks": 0.2})
    shoes = _choice(rng, SHOE_COLOURS)
    return Attributes(
        presentation=presentation, skin=skin, hair_style=hair_style, hair_colour=hair_colour,
        body_width=body_width, scale=scale, offset_x=offset_x, pose=pose, background=background,
        upper=upper, lower=lower, dress=dress, outerwear=outerwear, shoes=shoes, world=world,
    )
