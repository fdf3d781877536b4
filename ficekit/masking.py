"""Edit / keep / blend masks: FICE's exact masks, or automatic garment masks from DensePose and a parser.

Two modes (`build_masks`):

- 'fice' reproduces FICE: edit = body, keep = 1 - body (the img term's weight), blend = 1 - head (stitching
  takes G(w) everywhere but the head), from FICE's 3-class segmenter.
- 'auto' (InstructVTON-style) derives the region from the instruction's garment category and its sleeve and
  length words: the garment the person wears now (from a parser) united with the body parts the new garment
  may cover (from DensePose), minus protected regions (head, hair, hands, feet, uncovered arms/legs, garments
  of other categories), then cleaned and feathered. See `auto_masks` for the rules.

Masks are [N,1,H,W] floats in [0,1], 1 = the named region. They are computed once from the input photo and are
constants for the optimisation (the auto masks are thresholded, so they carry no gradient).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ficekit.instruction import (
    GARMENT_CATEGORIES,
    LENGTHS,
    SLEEVES,
    Instruction,
    check_category,
)
from ficekit.mask_ops import (
    check_px,
    dilate,
    feather_inward,
    feather_outward,
    morph_close,
    morph_open,
)
from ficekit.perception.densepose_parts import (
    DENSEPOSE_PARTS,
    NUM_DENSEPOSE_CHANNELS,
    densepose_part_maps,
    densepose_probabilities,
)
from ficekit.perception.segmenter import FiceSegmentation, SegmentationMasks
from ficekit.shapes import check_shape

# Public names of this module; parsing lives in ficekit.instruction, mask morphology in ficekit.mask_ops.
__all__ = [
    "BODY_REGIONS",
    "CATEGORY_RULES",
    "DENSEPOSE_PARTS",
    "GARMENT_CATEGORIES",
    "MASK_MODES",
    "PARSER_ROLES",
    "EditMasks",
    "auto_masks",
    "build_masks",
    "covered_regions",
    "densepose_part_maps",
    "densepose_probabilities",
    "fice_masks",
    "parser_role",
    "region_mask",
]

MASK_MODES: tuple[str, ...] = ("auto", "fice")


# Body regions used by the mask rules: DensePose channels, left and right together.
BODY_REGIONS: dict[str, tuple[int, ...]] = {
    "torso": (1, 2),
    "hands": (3, 4),
    "feet": (5, 6),
    "upper_legs": (7, 8, 9, 10),
    "lower_legs": (11, 12, 13, 14),
    "upper_arms": (15, 16, 17, 18),
    "lower_arms": (19, 20, 21, 22),
    "head": (23, 24),
}

# Parser label names read for each role (the first present names are merged; absent ones are ignored). Covers
# ficekit's own names, the LIP/ATR human-parsing names and FICE's 'head'.
PARSER_ROLES: dict[str, tuple[str, ...]] = {
    "head": ("head", "face", "hair", "hat", "sunglasses"),
    "hands": ("hands", "hand", "left_hand", "right_hand", "gloves", "glove"),
    "feet": ("feet", "foot", "shoes", "shoe", "left_shoe", "right_shoe", "socks"),
    "arms": ("arms", "arm", "left_arm", "right_arm"),
    "legs": ("legs", "leg", "left_leg", "right_leg"),
    "upper_garment": ("upper_garment", "upper_clothes", "upper-clothes", "top"),
    "lower_garment": ("lower_garment", "lower_clothes", "pants", "trousers", "skirt", "shorts"),
    "dress": ("dress", "jumpsuit", "jumpsuits", "full_garment"),
    "outerwear": ("outerwear", "coat", "jacket"),
    "accessories": ("bag", "accessories", "scarf"),
}
GARMENT_ROLES: tuple[str, ...] = ("upper_garment", "lower_garment", "dress", "outerwear")
ALWAYS_PROTECTED: tuple[str, ...] = ("head", "hands", "feet")  # body regions and parser roles
LIMBS: dict[str, tuple[str, str]] = {"arms": ("upper_arms", "lower_arms"), "legs": ("upper_legs", "lower_legs")}

# Body regions a new garment covers, by sleeve and by length word.
SLEEVE_COVERAGE: dict[str, tuple[str, ...]] = {
    "sleeveless": (),
    "short": ("upper_arms",),
    "long": ("upper_arms", "lower_arms"),
}
LENGTH_COVERAGE: dict[str, tuple[str, ...]] = {
    "mini": ("upper_legs",),
    "short": ("upper_legs",),
    "knee": ("upper_legs",),
    "midi": ("upper_legs", "lower_legs"),
    "long": ("upper_legs", "lower_legs"),
    "maxi": ("upper_legs", "lower_legs"),
}


@dataclass(frozen=True)
class CategoryRule:
    """How auto-masking treats one garment category."""

    garments: tuple[str, ...]  # parser roles of the garment being replaced (editable)
    protect: tuple[str, ...]  # parser roles of other garments, kept as they are
    protect_unless_legs: tuple[str, ...]  # roles kept unless the new garment reaches the legs (worn under it)
    torso: bool  # the new garment covers the torso
    sleeve_default: str | None  # sleeve assumed without a sleeve word; None = sleeve words ignored
    length_default: str | None  # length assumed without a length word; None = no legs unless a length word
    uses_length: bool  # length words apply to this category


# Layering: a garment worn over the new one stays (a jacket over a new dress); one worn under it is replaced
# where the new garment covers it (the trousers under a new long coat).
CATEGORY_RULES: dict[str, CategoryRule] = {
    "upper": CategoryRule(
        garments=("upper_garment", "outerwear"),
        protect=("lower_garment",),
        protect_unless_legs=(),
        torso=True,
        sleeve_default="short",
        length_default=None,
        uses_length=False,
    ),
    "lower": CategoryRule(
        garments=("lower_garment",),
        protect=("upper_garment", "outerwear"),
        protect_unless_legs=(),
        torso=False,
        sleeve_default=None,
        length_default="short",
        uses_length=True,
    ),
    "full": CategoryRule(
        garments=("dress", "upper_garment", "lower_garment"),
        protect=("outerwear",),
        protect_unless_legs=(),
        torso=True,
        sleeve_default="sleeveless",
        length_default="knee",
        uses_length=True,
    ),
    "outerwear": CategoryRule(
        garments=("outerwear", "upper_garment"),
        protect=(),
        protect_unless_legs=("lower_garment",),
        torso=True,
        sleeve_default="long",
        length_default=None,
        uses_length=True,
    ),
}


def covered_regions(category: str, sleeve: str | None = None, length: str | None = None) -> tuple[str, ...]:
    """Body regions (keys of BODY_REGIONS) the new garment of `category` may cover, given its sleeve and length.

    upper: torso + arms by sleeve (default short: upper arms); lower: legs by length (default short: upper
    legs); full: torso + arms by sleeve (default sleeveless) + legs by length (default knee: upper legs);
    outerwear: torso + arms by sleeve (default long) + legs only when a length word is given.
    """
    rule = CATEGORY_RULES[check_category(category)]
    if sleeve is not None and sleeve not in SLEEVES:
        raise ValueError(f"unknown sleeve {sleeve!r}; expected one of {list(SLEEVES)} or None")
    if length is not None and length not in LENGTHS:
        raise ValueError(f"unknown length {length!r}; expected one of {list(LENGTHS)} or None")
    regions: list[str] = ["torso"] if rule.torso else []
    if rule.sleeve_default is not None:
        regions += SLEEVE_COVERAGE[sleeve or rule.sleeve_default]
    if rule.uses_length:
        length = length or rule.length_default
        if length is not None:
            regions += LENGTH_COVERAGE[length]
    return tuple(regions)


def region_mask(parts: torch.Tensor, *regions: str) -> torch.Tensor:
    """[N,1,H,W] summed probability of BODY_REGIONS `regions` from part maps [N,25,H,W] (zeros for none)."""
    check_shape("parts", parts, [None, NUM_DENSEPOSE_CHANNELS, None, None])
    unknown = [r for r in regions if r not in BODY_REGIONS]
    if unknown:
        raise ValueError(f"unknown body regions {unknown}; known: {list(BODY_REGIONS)}")
    channels = sorted({c for r in regions for c in BODY_REGIONS[r]})
    if not channels:
        return parts.new_zeros(parts.shape[0], 1, *parts.shape[-2:])
    return parts[:, channels].sum(dim=1, keepdim=True).clamp(0, 1)


# ---------------------------------------------------------------------------------------------------
# Masks.


@dataclass
class EditMasks:
    """Masks for one edit, all [N,1,H,W] float in [0,1].

    edit:     region free to change (1 = free).
    keep:     1 - edit: where the img (masked reconstruction) term holds the photo.
    blend:    stitching weight of the generated image (1 = generated, 0 = photo).
    category: garment category the masks were built for (None in 'fice' mode without one).
    mode:     'auto' or 'fice'.
    bare:     where inside `edit` the new garment leaves the arms bare (ficekit.skin); None when not known.
    skin_rgb: [N,3] the photo's skin colour (ficekit.skin); None when not known.
    """

    edit: torch.Tensor
    keep: torch.Tensor
    blend: torch.Tensor
    category: str | None
    mode: str
    bare: torch.Tensor | None = None
    skin_rgb: torch.Tensor | None = None

    def cpu(self) -> EditMasks:
        """The same masks on the CPU (results leave the device the edit ran on)."""
        names = ("edit", "keep", "blend", "bare", "skin_rgb")
        return dataclasses.replace(self, **{k: getattr(self, k).cpu() for k in names if getattr(self, k) is not None})


def fice_masks(fice: FiceSegmentation, category: str | None = None) -> EditMasks:
    """FICE's masks exactly: edit = body, keep = 1 - body, blend = 1 - head (from the 3-class segmenter)."""
    if not isinstance(fice, SegmentationMasks):
        raise ValueError(f"fice: expected the FICE segmentation (FiceSegmentation), got {type(fice).__name__}")
    for name in ("body", "head"):
        if name not in fice:
            raise ValueError(f"fice: segmentation lacks {name!r} (names: {list(fice)}); expected FICE's 3 classes")
    body, head = fice["body"], fice["head"]
    check_shape("fice.body", body, [None, 1, None, None])
    return EditMasks(edit=body, keep=1 - body, blend=1 - head, category=category, mode="fice")


def _union(masks: Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Probabilistic union 1 - prod(1 - m) (exact for 0/1 masks); zeros like `like` for none."""
    out = torch.zeros_like(like)
    for m in masks:
        out = 1 - (1 - out) * (1 - m.clamp(0, 1))
    return out


def parser_role(parser: SegmentationMasks | None, role: str) -> torch.Tensor | None:
    """The parser's merged mask for a PARSER_ROLES role, or None when it has none of the role's names."""
    if parser is None:
        return None
    names = [n for n in PARSER_ROLES[role] if n in parser]
    return parser.merge(*names).clamp(0, 1) if names else None


def _reference(
    parts: torch.Tensor | None, parser: SegmentationMasks | None, fice: SegmentationMasks | None
) -> torch.Tensor:
    """A [N,1,H,W] zero mask shaped like the inputs, after checking they agree on N, H, W."""
    shapes: list[tuple[str, torch.Tensor]] = []
    if parts is not None:
        check_shape("parts", parts, [None, NUM_DENSEPOSE_CHANNELS, None, None])
        shapes.append(("parts", parts))
    for name, seg in (("parser", parser), ("fice", fice)):
        if seg is not None:
            if not isinstance(seg, SegmentationMasks):
                raise ValueError(f"{name}: expected SegmentationMasks, got {type(seg).__name__}")
            check_shape(f"{name}.probs", seg.probs, [None, None, None, None])
            shapes.append((f"{name}.probs", seg.probs))
    first_name, first = shapes[0]
    n, _, h, w = first.shape
    for name, t in shapes[1:]:
        if t.shape[0] != n or t.shape[-2:] != first.shape[-2:]:
            raise ValueError(
                f"{name} has N={t.shape[0]}, H x W = {tuple(t.shape[-2:])}; expected those of {first_name}: "
                f"N={n}, H x W = {(h, w)}"
            )
    dtype = torch.promote_types(first.dtype, torch.float32)
    return torch.zeros(n, 1, h, w, dtype=dtype, device=first.device)


def auto_masks(
    category: str,
    sleeve: str | None = None,
    length: str | None = None,
    *,
    parts: torch.Tensor | None = None,
    parser: SegmentationMasks | None = None,
    fice: FiceSegmentation | None = None,
    dilation_px: int = 4,
    feather_px: int = 4,
    close_px: int = 3,
    open_px: int = 2,
) -> EditMasks:
    """Automatic garment masks for a category and its sleeve/length words (see build_masks for the inputs).

    Rules (soft masks are combined by probabilistic union, then thresholded at 0.5):
      garment  = the parser's current garment of the category (CATEGORY_RULES[c].garments)
      coverage = DensePose regions the new garment may cover (covered_regions)
      protect  = head, hands, feet (DensePose regions and parser roles; FICE's head too when `fice` is given),
                 accessories, garments of other categories (CATEGORY_RULES[c].protect; for outerwear the lower
                 garment only while the new garment stays above the legs), and the arms and legs the
                 new garment does not cover: with a parser that labels arms/legs, their skin outside the covered
                 DensePose regions (a sleeve of the current garment there stays editable, so sleeves can
                 shorten); without one, the uncovered DensePose arm/leg regions. Without DensePose, arm/leg skin
                 becomes editable only when the new garment covers the whole limb (long sleeves; midi and longer).
      edit core = (garment ∪ coverage) minus protect, closed (close_px), opened (open_px), dilated
                 (dilation_px), minus protect again: binary.
      edit     = core with a ramp about feather_px wide outside it, never into protected pixels (feather_outward);
                 keep = 1 - edit (soft).
      blend    = core with a ramp about feather_px wide inside it (feather_inward; edge-aware: no ramp along
                 protected edges); exactly 0 outside the core, so stitching returns the photo bit-exactly there.
    Hands are thus always protected; arms crossing the garment are protected unless the sleeve covers them.
    """
    rule = CATEGORY_RULES[check_category(category)]
    for name, px in (
        ("dilation_px", dilation_px),
        ("feather_px", feather_px),
        ("close_px", close_px),
        ("open_px", open_px),
    ):
        check_px(name, px)
    has_garment = any(parser_role(parser, r) is not None for r in GARMENT_ROLES)
    if parts is None and not has_garment:
        what = (
            "no parser"
            if parser is None
            else f"a parser without garment labels (names: {list(parser)}; expected some of "
            f"{[n for r in GARMENT_ROLES for n in PARSER_ROLES[r]]})"
        )
        raise ValueError(
            f"auto masks need DensePose part maps (parts=) or a garment parser (parser=); got no parts and {what}"
        )
    zero = _reference(parts, parser, fice)
    covered = covered_regions(category, sleeve, length)

    protect_roles = (*ALWAYS_PROTECTED, "accessories", *rule.protect)
    if "upper_legs" not in covered:
        protect_roles += rule.protect_unless_legs
    editable = [m for m in (parser_role(parser, r) for r in rule.garments) if m is not None]
    protected = [m for m in (parser_role(parser, r) for r in protect_roles) if m is not None]
    if parts is not None:
        editable.append(region_mask(parts, *covered))
        protected.append(region_mask(parts, *ALWAYS_PROTECTED))
    if fice is not None:
        if "head" not in fice:
            raise ValueError(f"fice: segmentation lacks 'head' (names: {list(fice)}); expected FICE's 3 classes")
        protected.append(fice["head"])
    for limb, segments in LIMBS.items():
        skin = parser_role(parser, limb)
        covered_segments = [s for s in segments if s in covered]
        if parts is not None:
            if skin is not None:
                protected.append(skin * (1 - region_mask(parts, *covered_segments)))
            else:
                protected.append(region_mask(parts, *[s for s in segments if s not in covered]))
        elif skin is not None:
            (editable if len(covered_segments) == len(segments) else protected).append(skin)

    protect = (_union(protected, zero) >= 0.5).to(zero.dtype)
    core = (_union(editable, zero) >= 0.5).to(zero.dtype) * (1 - protect)
    core = morph_open(morph_close(core, close_px), open_px)
    core = dilate(core, dilation_px) * (1 - protect)
    edit = feather_outward(core, protect, feather_px)
    blend = feather_inward(core, protect, feather_px)
    return EditMasks(edit=edit, keep=1 - edit, blend=blend, category=category, mode="auto")


# Auto-mask refinement sizes at 256 px (FICE's resolution); other resolutions scale them (refinement_px).
REFINEMENT_PX_AT_256: dict[str, int] = {"dilation_px": 4, "feather_px": 4, "close_px": 3, "open_px": 2}


def refinement_px(size: int) -> dict[str, int]:
    """REFINEMENT_PX_AT_256 scaled to an image side of `size` px (rounded half up, at least 1 px each).

    A fixed 4-px dilation is 1.5 % of a 256-px image but 6 % of a 64-px one, where it swallowed the skin
    and background around a small garment; scaling keeps the mask's margin the same share of the person.
    """
    return {k: max(1, math.floor(v * size / 256 + 0.5)) for k, v in REFINEMENT_PX_AT_256.items()}


def build_masks(
    instruction: Instruction | None,
    *,
    parts: torch.Tensor | None = None,
    parser: SegmentationMasks | None = None,
    fice: FiceSegmentation | None = None,
    mode: str = "auto",
    dilation_px: int | None = None,
    feather_px: int | None = None,
    close_px: int | None = None,
    open_px: int | None = None,
) -> EditMasks:
    """Edit/keep/blend masks for an instruction.

    Args:
        instruction: the parsed instruction (its category, sleeve and length); may be None in 'fice' mode.
        parts: DensePose part maps [N,25,H,W] in the image frame (densepose_part_maps), or None.
        parser: a garment parser's SegmentationMasks (label names as in PARSER_ROLES), or None.
        fice: FICE's segmentation (background/body/head); required in 'fice' mode, protects the head in 'auto'.
        mode: 'fice' = FICE's masks exactly (fice_masks); 'auto' = garment masks (auto_masks); needs parts or
            a parser with garment labels, or both.
        dilation_px, feather_px, close_px, open_px: refinement sizes in pixels of the input (auto mode);
            None = REFINEMENT_PX_AT_256 scaled to the input's shorter side (4, 4, 3, 2 at 256 px; 1 each at 64).

    Raises:
        ValueError: unknown mode, missing inputs for the mode, no category in auto mode, mismatched shapes.
    """
    if mode not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mode!r}; expected one of {list(MASK_MODES)}")
    if instruction is not None and not isinstance(instruction, Instruction):
        raise ValueError(
            f"instruction: expected an Instruction (parse_instruction) or None, got {type(instruction).__name__}"
        )
    category = instruction.category if instruction is not None else None
    if mode == "fice":
        if fice is None:
            raise ValueError("mode='fice' needs FICE's segmentation (fice=FiceSegmentation with body and head)")
        return fice_masks(fice, category)
    if category is None:
        raise ValueError(
            "auto masks need a garment category but the instruction names no garment; pass one of "
            f"{list(GARMENT_CATEGORIES)} to parse_instruction(category=...) or use classify_category"
        )
    attributes = instruction.attributes
    given = {"dilation_px": dilation_px, "feather_px": feather_px, "close_px": close_px, "open_px": open_px}
    reference = parts if parts is not None else parser.probs if parser is not None else None
    scaled = refinement_px(min(reference.shape[-2:])) if reference is not None else REFINEMENT_PX_AT_256
    dilation_px, feather_px, close_px, open_px = (scaled[k] if v is None else v for k, v in given.items())
    return auto_masks(
        category,
        attributes.sleeve,
        attributes.length,
        parts=parts,
        parser=parser,
        fice=fice,
        dilation_px=dilation_px,
        feather_px=feather_px,
        close_px=close_px,
        open_px=open_px,
    )
