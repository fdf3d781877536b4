"""Masks: DensePose part maps in the image frame, refinement ops, FICE's masks and the auto garment masks.

The auto-mask tests use a hand-built 64x64 body: rectangles for head, torso, arms, hands, legs and feet as
DensePose part maps, and a parser that labels the same rectangles by what the person wears.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from ficekit.instruction import parse_instruction
from ficekit.mask_ops import box_blur, dilate, erode, feather_inward, feather_outward, morph_close, morph_open
from ficekit.masking import (
    BODY_REGIONS,
    CATEGORY_RULES,
    DENSEPOSE_PARTS,
    LENGTH_COVERAGE,
    SLEEVE_COVERAGE,
    EditMasks,
    build_masks,
    covered_regions,
    densepose_part_maps,
    densepose_probabilities,
    fice_masks,
    region_mask,
)
from ficekit.perception.densepose import DensePoseOutput
from ficekit.perception.segmenter import FICE_LABELS, FiceSegmentation, SegmentationMasks

# ---------------------------------------------------------------------------------------------------
# The part table.


def test_body_regions_partition_the_charts_by_name() -> None:
    channels = sorted(c for r in BODY_REGIONS.values() for c in r)
    assert channels == list(range(1, 25))
    names = {
        "torso": "torso",
        "hands": "hand",
        "feet": "foot",
        "upper_legs": "upper leg",
        "lower_legs": "lower leg",
        "upper_arms": "upper arm",
        "lower_arms": "lower arm",
        "head": "head",
    }
    assert set(names) == set(BODY_REGIONS)
    for region, indices in BODY_REGIONS.items():
        for i in indices:
            assert names[region] in DENSEPOSE_PARTS[i], (region, i, DENSEPOSE_PARTS[i])
    assert DENSEPOSE_PARTS[0] == "background" and len(DENSEPOSE_PARTS) == 25


# ---------------------------------------------------------------------------------------------------
# DensePose part maps.


def _output(k: int, s: int, boxes: list[list[float]], batch_index: list[int], coarse: int = 2) -> DensePoseOutput:
    g = torch.Generator().manual_seed(k * 100 + s)
    return DensePoseOutput(
        coarse_segm=torch.randn(k, coarse, s, s, generator=g) * 2,
        fine_segm=torch.randn(k, 25, s, s, generator=g) * 2,
        u=torch.rand(k, 25, s, s, generator=g),
        v=torch.rand(k, 25, s, s, generator=g),
        boxes=torch.tensor(boxes, dtype=torch.float32).view(k, 4),
        batch_index=torch.tensor(batch_index, dtype=torch.int64),
    )


@pytest.mark.parametrize("coarse", [2, 15])
def test_probabilities_sum_to_one_and_match_fice_body_parts(coarse: int) -> None:
    out = _output(2, 8, [[0, 0, 8, 8]] * 2, [0, 1], coarse=coarse)
    probs = densepose_probabilities(out)
    assert probs.shape == (2, 25, 8, 8)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 8, 8))
    parts = list(range(1, 25))
    torch.testing.assert_close(probs[:, 1:], out.body_parts(parts))


def test_whole_image_box_is_the_grid_itself() -> None:
    out = _output(1, 16, [[0, 0, 16, 16]], [0])
    maps = densepose_part_maps(out, (16, 16))
    assert maps.shape == (1, 25, 16, 16)
    torch.testing.assert_close(maps, densepose_probabilities(out))


def test_sub_box_lands_in_its_region() -> None:
    # box x 16..48, y 8..40 (32 x 32 pixels) with a 32 x 32 grid: pasted one to one; background elsewhere
    out = _output(1, 32, [[16, 8, 48, 40]], [0])
    maps = densepose_part_maps(out, (64, 64))
    probs = densepose_probabilities(out)
    torch.testing.assert_close(maps[:, :, 8:40, 16:48], probs)
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[8:40, 16:48] = False
    assert torch.all(maps[0, 0][outside] == 1) and torch.all(maps[0, 1:][:, outside] == 0)
    torch.testing.assert_close(maps.sum(1), torch.ones(1, 64, 64))


def test_box_resampling_is_bilinear() -> None:
    # a 16 x 16 grid over a 32 x 32 box: bilinear upsampling x2 (half-pixel centres, edges clamped)
    out = _output(1, 16, [[8, 24, 40, 56]], [0])
    maps = densepose_part_maps(out, (64, 48))
    expected = F.interpolate(densepose_probabilities(out), size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(maps[:, :, 24:56, 8:40], expected)
    assert maps.shape == (1, 25, 64, 48)


def test_overlapping_boxes_and_batch_index() -> None:
    out = _output(3, 8, [[0, 0, 8, 8], [4, 0, 12, 8], [0, 0, 12, 8]], [0, 0, 1])
    # box 1 sure of a person (coarse says person), box 0 sure of background: box 1 wins where they overlap
    out.coarse_segm[0] = torch.tensor([10.0, -10.0]).view(2, 1, 1)
    out.coarse_segm[1] = torch.tensor([-10.0, 10.0]).view(2, 1, 1)
    maps = densepose_part_maps(out, (8, 12))
    probs = densepose_probabilities(out)
    assert maps.shape == (2, 25, 8, 12)
    torch.testing.assert_close(maps[0, :, :, 4:12], probs[1])
    torch.testing.assert_close(maps[0, :, :, 0:4], probs[0, :, :, 0:4])
    expected = F.interpolate(probs[2:3], size=(8, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(maps[1:2], expected)
    torch.testing.assert_close(maps.sum(1), torch.ones(2, 8, 12))


def test_part_maps_argument_errors() -> None:
    out = _output(1, 8, [[0, 0, 8, 8]], [0])
    none = _output(0, 8, [], [])
    assert densepose_part_maps(none, (4, 4), num_images=2)[:, 0].eq(1).all()
    with pytest.raises(ValueError, match="num_images"):
        densepose_part_maps(none, (4, 4))
    with pytest.raises(ValueError, match="batch_index"):
        densepose_part_maps(out, (8, 8), num_images=0)
    with pytest.raises(ValueError, match="image_size"):
        densepose_part_maps(out, (0, 8))
    bad = DensePoseOutput(out.coarse_segm, out.fine_segm[:, :24], out.u, out.v, out.boxes, out.batch_index)
    with pytest.raises(ValueError, match="fine_segm"):
        densepose_part_maps(bad, (8, 8))


# ---------------------------------------------------------------------------------------------------
# Refinement ops.


def _square(size: int, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    m = torch.zeros(1, 1, size, size)
    m[..., r0:r1, c0:c1] = 1
    return m


def test_dilate_and_erode_move_edges_by_px() -> None:
    m = _square(32, 10, 20, 12, 18)
    assert torch.equal(dilate(m, 2), _square(32, 8, 22, 10, 20))
    assert torch.equal(erode(m, 2), _square(32, 12, 18, 14, 16))
    assert torch.equal(dilate(m, 0), m) and torch.equal(erode(m, 0), m)
    # the image border is not background: a square touching it does not shrink from that side
    assert torch.equal(erode(_square(16, 0, 8, 0, 16), 1), _square(16, 0, 7, 0, 16))


def test_close_fills_holes_and_open_removes_specks() -> None:
    m = _square(32, 4, 24, 4, 24)
    m[..., 10, 10] = 0  # a one-pixel hole
    m[..., 4:24, 15:17] = 0  # a 2-pixel slit
    assert torch.equal(morph_close(m, 1), _square(32, 4, 24, 4, 24))
    speck = _square(32, 4, 24, 4, 24)
    speck[..., 28:30, 28:30] = 1  # a 2x2 speck
    assert torch.equal(morph_open(speck, 2), _square(32, 4, 24, 4, 24))
    assert torch.equal(morph_open(m, 0), m)


def test_box_blur_keeps_exact_values_away_from_edges() -> None:
    m = _square(32, 8, 24, 8, 24)
    b = box_blur(m, 2)
    assert torch.all(b[..., 10:22, 10:22] == 1) and torch.all(b[..., :6, :] == 0)
    assert 0 < b[0, 0, 8, 16] < 1
    with pytest.raises(ValueError, match="non-negative"):
        box_blur(m, -1)


def test_feathering_is_bounded_and_edge_aware() -> None:
    mask = _square(40, 8, 32, 8, 28)
    protected = _square(40, 8, 32, 28, 40)  # a protected block against the mask's right edge
    inward = feather_inward(mask, protected, 4)
    assert torch.all(inward[mask == 0] == 0)  # exactly 0 outside
    assert torch.all(inward[..., 12:28, 12:28] == 1)  # exactly 1 from 4 px inside
    assert torch.all(inward[0, 0, 20, 8:12].diff() > 0)  # ramps up from a free edge (left)
    assert 0 < inward[0, 0, 20, 8] < 0.2
    assert torch.all(inward[0, 0, 12:28, 27] == 1)  # no ramp along the protected edge (right)
    outward = feather_outward(mask, protected, 4)
    assert torch.all(outward[mask == 1] == 1)
    assert torch.all(outward[protected == 1] == 0)  # never leaks into protected pixels
    assert torch.all(outward[0, 0, 20, 3:8].diff() > 0) and 0 < outward[0, 0, 20, 4] < 0.2  # ramps down outside
    assert torch.all(outward[0, 0, 20, :4] == 0)  # nothing beyond 4 px
    assert torch.equal(feather_inward(mask, protected, 0), mask)
    assert torch.equal(feather_outward(mask, protected, 0), mask)


# ---------------------------------------------------------------------------------------------------
# A synthetic body: DensePose part maps and a parser.

SIZE = 64
# region -> (rows, cols) rectangles; left/right as the image shows them (the mask rules merge them anyway)
RECTS: dict[str, list[tuple[slice, slice, int]]] = {
    # name: [(rows, cols, DensePose channel)]
    "head": [(slice(2, 14), slice(26, 38), 23)],
    "torso": [(slice(14, 34), slice(22, 42), 2)],
    "upper_arms": [(slice(14, 26), slice(14, 22), 16), (slice(14, 26), slice(42, 50), 15)],
    "lower_arms": [(slice(26, 36), slice(14, 22), 20), (slice(26, 36), slice(42, 50), 19)],
    "hands": [(slice(36, 40), slice(14, 22), 3), (slice(36, 40), slice(42, 50), 4)],
    "upper_legs": [(slice(34, 46), slice(22, 32), 9), (slice(34, 46), slice(32, 42), 10)],
    "lower_legs": [(slice(46, 56), slice(22, 32), 13), (slice(46, 56), slice(32, 42), 14)],
    "feet": [(slice(56, 60), slice(22, 32), 6), (slice(56, 60), slice(32, 42), 5)],
}
PARSER_LABELS = {
    "background": 0,
    "face": 1,
    "hair": 2,
    "upper_garment": 3,
    "lower_garment": 4,
    "dress": 5,
    "outerwear": 6,
    "arms": 7,
    "hands": 8,
    "legs": 9,
    "shoes": 10,
    "bag": 11,
}
# Default outfit: short-sleeved shirt, shorts, bare forearms and calves.
OUTFIT = {
    "head": "face",
    "torso": "upper_garment",
    "upper_arms": "upper_garment",
    "lower_arms": "arms",
    "hands": "hands",
    "upper_legs": "lower_garment",
    "lower_legs": "legs",
    "feet": "shoes",
}


def region(name: str) -> torch.Tensor:
    """[1,1,H,W] bool of a body region's rectangles."""
    m = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool)
    for rows, cols, _ in RECTS[name]:
        m[..., rows, cols] = True
    return m


def rect(rows: slice, cols: slice) -> torch.Tensor:
    m = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool)
    m[..., rows, cols] = True
    return m


@dataclass
class Scene:
    """DensePose part maps and parser masks of the synthetic body; `paint` adds overlapping things."""

    parts: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def make(cls, outfit: dict[str, str] | None = None) -> Scene:
        parts = torch.zeros(1, SIZE, SIZE, dtype=torch.long)
        labels = torch.zeros(1, SIZE, SIZE, dtype=torch.long)
        for name, rects in RECTS.items():
            for rows, cols, channel in rects:
                parts[:, rows, cols] = channel
                labels[:, rows, cols] = PARSER_LABELS[(outfit or OUTFIT)[name]]
        return cls(parts, labels)

    def paint(self, where: torch.Tensor, label: str | None = None, part: int | None = None) -> Scene:
        if label is not None:
            self.labels[where[:, 0]] = PARSER_LABELS[label]
        if part is not None:
            self.parts[where[:, 0]] = part
        return self

    def part_maps(self) -> torch.Tensor:
        return F.one_hot(self.parts, 25).permute(0, 3, 1, 2).float()

    def parser(self) -> SegmentationMasks:
        probs = F.one_hot(self.labels, len(PARSER_LABELS)).permute(0, 3, 1, 2).float()
        return SegmentationMasks(probs=probs, labels=PARSER_LABELS, groups={"head": ("face", "hair")})


def masks_for(text: str, scene: Scene, inputs: str = "both", **kwargs) -> EditMasks:
    parts = scene.part_maps() if inputs in ("both", "parts") else None
    parser = scene.parser() if inputs in ("both", "parser") else None
    return build_masks(parse_instruction(text), parts=parts, parser=parser, **kwargs)


def check_invariants(m: EditMasks) -> None:
    for name in ("edit", "keep", "blend"):
        t = getattr(m, name)
        assert t.shape == (1, 1, SIZE, SIZE) and t.dtype == torch.float32, name
        assert t.min() >= 0 and t.max() <= 1, name
    assert torch.equal(m.keep, 1 - m.edit)
    assert torch.all(m.blend[m.edit == 0] == 0)  # stitching returns the photo outside the edit region
    assert torch.all(m.blend <= m.edit)
    photo, generated = torch.rand(2, 1, 3, SIZE, SIZE).unbind(0)
    stitched = m.blend * generated + (1 - m.blend) * photo
    outside = (m.edit == 0).expand_as(photo)
    assert torch.equal(stitched[outside], photo[outside])


def assert_edits(m: EditMasks, *names: str) -> None:
    for name in names:
        assert torch.all(m.edit[region(name)] == 1), f"{name} should be editable"


def assert_keeps(m: EditMasks, *names: str) -> None:
    for name in names:
        assert torch.all(m.edit[region(name)] == 0), f"{name} should be protected"
        assert torch.all(m.blend[region(name)] == 0), name


def assert_untouched_beyond(m: EditMasks, name: str, margin: int) -> None:
    """An unprotected region next to the edit: only the dilation/feather band reaches into it."""
    near = dilate((m.edit == 1).float(), margin).bool()
    assert torch.any(region(name) & ~near), name  # the check is not vacuous
    assert torch.all(m.edit[region(name) & ~near] == 0), name


# ---------------------------------------------------------------------------------------------------
# Coverage rules.


def test_covered_regions_table() -> None:
    assert covered_regions("upper") == ("torso", "upper_arms")
    assert covered_regions("upper", "long") == ("torso", "upper_arms", "lower_arms")
    assert covered_regions("upper", "sleeveless", "maxi") == ("torso",)  # length ignored for tops
    assert covered_regions("lower") == ("upper_legs",)
    assert covered_regions("lower", "long", "long") == ("upper_legs", "lower_legs")  # sleeve ignored
    assert covered_regions("full") == ("torso", "upper_legs")
    assert covered_regions("full", "short", "midi") == ("torso", "upper_arms", "upper_legs", "lower_legs")
    assert covered_regions("outerwear") == ("torso", "upper_arms", "lower_arms")
    assert covered_regions("outerwear", None, "knee") == ("torso", "upper_arms", "lower_arms", "upper_legs")
    assert set(CATEGORY_RULES) == {"upper", "lower", "full", "outerwear"}
    assert all(set(v) <= set(BODY_REGIONS) for v in (*SLEEVE_COVERAGE.values(), *LENGTH_COVERAGE.values()))
    with pytest.raises(ValueError, match="unknown garment category"):
        covered_regions("hat")
    with pytest.raises(ValueError, match="unknown sleeve"):
        covered_regions("upper", "medium")
    with pytest.raises(ValueError, match="unknown length"):
        covered_regions("lower", None, "ankle")


# ---------------------------------------------------------------------------------------------------
# Auto masks, per category. (text, inputs, editable regions, protected regions)

ALL = set(RECTS)
# Regions neither edited nor protected: the torso for a lower edit without a parser (DensePose cannot tell the
# shirt from the waistband); only the dilation and feather band may enter them.
FREE = {("blue skirt", "parts"): {"torso"}, ("black trousers", "parts"): {"torso"}, ("mini skirt", "parts"): {"torso"}}
CATEGORY_CASES = [
    # upper: torso + upper arms by default; forearms only with long sleeves; sleeveless drops the arms
    ("red shirt", "both", {"torso", "upper_arms"}),
    ("red shirt", "parts", {"torso", "upper_arms"}),
    ("red shirt", "parser", {"torso", "upper_arms"}),
    ("long sleeve shirt", "both", {"torso", "upper_arms", "lower_arms"}),
    ("long sleeve shirt", "parts", {"torso", "upper_arms", "lower_arms"}),
    ("long sleeve shirt", "parser", {"torso", "upper_arms", "lower_arms"}),
    ("sleeveless top", "parts", {"torso"}),
    ("sleeveless top", "both", {"torso", "upper_arms"}),  # the current short sleeves stay editable
    # lower: upper legs by default; trousers reach the ankles
    ("blue skirt", "both", {"upper_legs"}),
    ("blue skirt", "parts", {"upper_legs"}),
    ("blue skirt", "parser", {"upper_legs"}),
    ("black trousers", "both", {"upper_legs", "lower_legs"}),
    ("black trousers", "parts", {"upper_legs", "lower_legs"}),
    ("black trousers", "parser", {"upper_legs", "lower_legs"}),
    ("mini skirt", "parts", {"upper_legs"}),
    # full: torso + upper legs; sleeves and length words extend it
    ("red dress", "both", {"torso", "upper_arms", "upper_legs"}),  # the current shirt's sleeves are replaced too
    ("red dress", "parts", {"torso", "upper_legs"}),
    ("red dress", "parser", {"torso", "upper_arms", "upper_legs"}),
    ("long sleeve maxi dress", "both", {"torso", "upper_arms", "lower_arms", "upper_legs", "lower_legs"}),
    ("long sleeve maxi dress", "parts", {"torso", "upper_arms", "lower_arms", "upper_legs", "lower_legs"}),
    ("short sleeve midi dress", "parts", {"torso", "upper_arms", "upper_legs", "lower_legs"}),
    # outerwear: torso + both arm segments; a long coat reaches down over the shorts and calves
    ("leather jacket", "both", {"torso", "upper_arms", "lower_arms"}),
    ("leather jacket", "parts", {"torso", "upper_arms", "lower_arms"}),
    ("leather jacket", "parser", {"torso", "upper_arms", "lower_arms"}),
    ("long wool coat", "both", {"torso", "upper_arms", "lower_arms", "upper_legs", "lower_legs"}),
    ("knee length coat", "parts", {"torso", "upper_arms", "lower_arms", "upper_legs"}),
]


@pytest.mark.parametrize(("text", "inputs", "editable"), CATEGORY_CASES, ids=[f"{c[0]}-{c[1]}" for c in CATEGORY_CASES])
def test_auto_masks_per_category(text: str, inputs: str, editable: set[str]) -> None:
    m = masks_for(text, Scene.make(), inputs)
    assert m.mode == "auto" and m.category == parse_instruction(text).category
    check_invariants(m)
    assert_edits(m, *editable)
    free = FREE.get((text, inputs), set())
    assert_keeps(m, *(ALL - editable - free))
    for name in free:
        assert_untouched_beyond(m, name, 4)


def test_upper_edit_keeps_long_sleeves_of_the_current_shirt_editable() -> None:
    # current shirt has long sleeves; "short sleeve" must be able to remove the forearm sleeves (parser + parts)
    scene = Scene.make({**OUTFIT, "lower_arms": "upper_garment"})
    assert_edits(masks_for("short sleeve shirt", scene), "torso", "upper_arms", "lower_arms")
    # DensePose alone cannot tell sleeve from skin: uncovered forearms stay protected
    assert_keeps(masks_for("short sleeve shirt", scene, "parts"), "lower_arms", "hands")


def test_outerwear_counts_as_the_upper_garment() -> None:
    scene = Scene.make({**OUTFIT, "torso": "outerwear", "upper_arms": "outerwear"})
    m = masks_for("a yellow top", scene, "parser")
    assert_edits(m, "torso", "upper_arms")
    assert_keeps(m, "lower_arms", "upper_legs")


def test_full_keeps_a_jacket_worn_over_it() -> None:
    scene = Scene.make({**OUTFIT, "upper_arms": "outerwear"})
    m = masks_for("red dress", scene)
    assert_keeps(m, "upper_arms")
    assert_edits(m, "torso", "upper_legs")


def test_dress_replaced_by_upper_and_lower_edits() -> None:
    # the dress is not another category's garment: a new top or skirt replaces the part of it that it covers
    scene = Scene.make({**OUTFIT, "torso": "dress", "upper_legs": "dress"})
    top = masks_for("red shirt", scene)
    assert_edits(top, "torso", "upper_arms")
    assert_untouched_beyond(top, "upper_legs", 4)
    skirt = masks_for("red mini skirt", scene)
    assert_edits(skirt, "upper_legs")
    assert_untouched_beyond(skirt, "torso", 4)


# ---------------------------------------------------------------------------------------------------
# Protected regions, each overlapping or touching the garment region (a test per region).


def test_head_is_protected_from_dilation() -> None:
    m = masks_for("red shirt", Scene.make(), dilation_px=4)
    assert_keeps(m, "head")
    assert torch.all(m.edit[rect(slice(10, 14), slice(18, 26))] > 0)  # dilation did grow into the background


def test_hair_over_the_shoulder_is_protected() -> None:
    hair = rect(slice(14, 22), slice(22, 26))
    m = masks_for("red shirt", Scene.make().paint(hair, label="hair"))  # DensePose calls it torso
    assert torch.all(m.edit[hair] == 0) and torch.all(m.blend[hair] == 0)
    assert torch.all(m.edit[rect(slice(14, 22), slice(26, 42))] == 1)


@pytest.mark.parametrize("inputs", ["both", "parts", "parser"])
def test_hand_on_the_torso_is_protected_even_with_long_sleeves(inputs: str) -> None:
    hand = rect(slice(26, 31), slice(36, 41))
    scene = Scene.make().paint(hand, label="hands", part=4)
    for text in ("red shirt", "long sleeve shirt", "red dress", "leather jacket"):
        m = masks_for(text, scene, inputs)
        assert torch.all(m.edit[hand] == 0) and torch.all(m.blend[hand] == 0), text
        check_invariants(m)
    # edge-aware blend: the garment next to the hand is fully generated, no halo of the old garment
    m = masks_for("red shirt", scene, inputs)
    assert torch.all(m.blend[rect(slice(26, 31), slice(35, 36))] == 1)


@pytest.mark.parametrize("inputs", ["both", "parts"])
def test_forearm_across_the_torso_follows_the_sleeve_words(inputs: str) -> None:
    forearm = rect(slice(28, 31), slice(24, 40))
    scene = Scene.make().paint(forearm, label="arms", part=19)
    m = masks_for("red shirt", scene, inputs)  # short sleeves by default: the bare forearm stays
    assert torch.all(m.edit[forearm] == 0)
    assert torch.all(m.edit[rect(slice(16, 26), slice(24, 40))] == 1)
    m = masks_for("long sleeve shirt", scene, inputs)  # a long sleeve covers it
    assert torch.all(m.edit[forearm] == 1)


def test_feet_are_protected_under_long_trousers() -> None:
    for inputs in ("both", "parts", "parser"):
        m = masks_for("black trousers", Scene.make(), inputs, dilation_px=6)
        assert_keeps(m, "feet")
        assert_edits(m, "lower_legs")


@pytest.mark.parametrize(
    ("text", "garment", "where"),
    [
        ("red shirt", "lower_garment", "upper_legs"),  # the shorts stay when the top changes
        ("blue skirt", "upper_garment", "torso"),  # the shirt stays when the skirt changes
        ("red dress", "outerwear", "upper_arms"),  # a jacket over the dress stays
        ("leather jacket", "lower_garment", "upper_legs"),  # a hip-length jacket leaves the shorts
    ],
)
def test_other_garments_are_protected(text: str, garment: str, where: str) -> None:
    scene = Scene.make({**OUTFIT, where: garment})
    assert_keeps(masks_for(text, scene), where)


def test_untucked_shirt_hem_over_the_hips_is_protected_for_a_lower_edit() -> None:
    hem = rect(slice(34, 38), slice(22, 42))
    m = masks_for("blue jeans", Scene.make().paint(hem, label="upper_garment"))  # DensePose: upper legs
    assert torch.all(m.edit[hem] == 0)
    assert torch.all(m.edit[rect(slice(38, 56), slice(22, 42))] == 1)


def test_a_bag_over_the_torso_is_protected() -> None:
    bag = rect(slice(20, 28), slice(30, 38))
    m = masks_for("red shirt", Scene.make().paint(bag, label="bag"))
    assert torch.all(m.edit[bag] == 0)


def test_fice_head_protects_in_auto_mode() -> None:
    scene = Scene.make()
    chin = rect(slice(14, 18), slice(28, 36))  # DensePose says torso; FICE's segmenter says head
    probs = torch.zeros(1, 3, SIZE, SIZE)
    probs[:, 0] = 1
    probs[:, :, chin[0, 0]] = torch.tensor([0.0, 0.0, 1.0]).view(3, 1)
    fice = FiceSegmentation(probs=probs, labels=FICE_LABELS)
    m = build_masks(parse_instruction("red shirt"), parts=scene.part_maps(), fice=fice)
    assert torch.all(m.edit[chin] == 0)
    assert torch.all(build_masks(parse_instruction("red shirt"), parts=scene.part_maps()).edit[chin] == 1)


# ---------------------------------------------------------------------------------------------------
# Refinement inside build_masks.


def test_refinement_closes_holes_and_drops_specks() -> None:
    scene = Scene.make()
    hole = rect(slice(22, 24), slice(30, 32))
    speck = rect(slice(6, 8), slice(4, 6))
    scene.paint(hole, label="background", part=0).paint(speck, label="upper_garment")
    m = masks_for("red shirt", scene, "parser", dilation_px=0, feather_px=0, close_px=2, open_px=2)
    assert torch.all(m.edit[hole] == 1)
    assert torch.all(m.edit[speck] == 0)
    raw = masks_for("red shirt", scene, "parser", dilation_px=0, feather_px=0, close_px=0, open_px=0)
    assert torch.all(raw.edit[hole] == 0) and torch.all(raw.edit[speck] == 1)
    assert torch.equal(raw.edit, raw.blend)  # no feathering: blend is the binary edit region


def test_dilation_and_feather_sizes() -> None:
    scene = Scene.make()
    base = masks_for("blue skirt", scene, "parts", dilation_px=0, feather_px=0, close_px=0, open_px=0)
    assert torch.equal(base.edit, region("upper_legs").float())
    grown = masks_for("blue skirt", scene, "parts", dilation_px=3, feather_px=0, close_px=0, open_px=0)
    # upper legs rows 34..45, cols 22..41: grow 3 px into the background at the sides (below the hands, rows
    # 40..45) and into the unprotected torso above, but not into the protected forearms, hands or calves
    assert torch.all(grown.edit[rect(slice(40, 46), slice(19, 45))] == 1)
    assert torch.all(grown.edit[rect(slice(31, 34), slice(22, 42))] == 1)
    assert grown.edit[0, 0, 40, 18] == 0 and grown.edit[0, 0, 40, 45] == 0 and grown.edit[0, 0, 30, 30] == 0
    assert_keeps(grown, "lower_arms", "hands", "lower_legs")
    soft = masks_for("blue skirt", scene, "parts", dilation_px=0, feather_px=4, close_px=0, open_px=0)
    assert torch.all(soft.edit[region("upper_legs")] == 1)
    assert 0 < soft.edit[0, 0, 40, 20] < 1 and soft.edit[0, 0, 40, 17] == 0  # ramps out on the background side
    assert 0 < soft.blend[0, 0, 40, 22] < 1 and soft.blend[0, 0, 40, 30] == 1  # ramps in from the same edge
    assert torch.all(soft.blend[0, 0, 45, 26:38] == 1)  # no ramp against the protected lower legs


def test_soft_inputs_are_thresholded() -> None:
    scene = Scene.make()
    parts = scene.part_maps() * 0.9 + 0.1 / 25  # softened one-hot maps (still sum to 1)
    m = build_masks(parse_instruction("red shirt"), parts=parts, dilation_px=0, feather_px=0, close_px=0, open_px=0)
    assert torch.equal(m.edit, (region("torso") | region("upper_arms")).float())


def test_batch_of_two_layouts() -> None:
    a, b = Scene.make(), Scene.make({**OUTFIT, "lower_arms": "upper_garment"})
    parts = torch.cat([a.part_maps(), b.part_maps()])
    pa, pb = a.parser(), b.parser()
    parser = SegmentationMasks(torch.cat([pa.probs, pb.probs]), PARSER_LABELS, pa.groups)
    m = build_masks(parse_instruction("short sleeve shirt"), parts=parts, parser=parser)
    assert m.edit.shape == (2, 1, SIZE, SIZE)
    forearms = region("lower_arms")[0, 0]
    assert torch.all(m.edit[0, 0][forearms] == 0) and torch.all(m.edit[1, 0][forearms] == 1)


# ---------------------------------------------------------------------------------------------------
# FICE's masks.


def _fice_segmentation(n: int = 2) -> FiceSegmentation:
    probs = torch.softmax(torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(3)), dim=1)
    return FiceSegmentation(probs=probs, labels=FICE_LABELS)


def test_fice_mode_is_fices_formula() -> None:
    fice = _fice_segmentation()
    body, head = fice.probs[:, 1:2], fice.probs[:, 2:3]
    for instruction in (parse_instruction("red shirt"), None):
        m = build_masks(instruction, fice=fice, mode="fice")
        assert torch.equal(m.edit, body)
        assert torch.equal(m.keep, 1 - body)
        assert torch.equal(m.blend, 1 - head)
        assert m.mode == "fice"
    assert build_masks(parse_instruction("red shirt"), fice=fice, mode="fice").category == "upper"
    assert torch.equal(fice_masks(fice).blend, 1 - head)


# ---------------------------------------------------------------------------------------------------
# Errors.


def test_build_masks_errors() -> None:
    scene = Scene.make()
    shirt = parse_instruction("red shirt")
    with pytest.raises(ValueError, match=r"parts=.*parser=.*got no parts and no parser"):
        build_masks(shirt)
    with pytest.raises(ValueError, match="without garment labels"):
        build_masks(shirt, parser=_fice_segmentation(1))
    with pytest.raises(ValueError, match="names no garment"):
        build_masks(parse_instruction("make it red"), parts=scene.part_maps())
    with pytest.raises(ValueError, match="auto masks need a garment category"):
        build_masks(None, parts=scene.part_maps())
    with pytest.raises(ValueError, match="mode='fice' needs"):
        build_masks(shirt, parts=scene.part_maps(), mode="fice")
    with pytest.raises(ValueError, match="unknown mask mode"):
        build_masks(shirt, parts=scene.part_maps(), mode="manual")
    with pytest.raises(ValueError, match="dilation_px"):
        build_masks(shirt, parts=scene.part_maps(), dilation_px=-1)
    with pytest.raises(ValueError, match="feather_px"):
        build_masks(shirt, parts=scene.part_maps(), feather_px=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="parser.probs has N=1, H x W = \\(32, 32\\)"):
        parser = SegmentationMasks(torch.ones(1, 1, 32, 32), {"upper_garment": 0})
        build_masks(shirt, parts=scene.part_maps(), parser=parser)
    with pytest.raises(ValueError, match="parts: dimension 1 is 24"):
        build_masks(shirt, parts=torch.zeros(1, 24, SIZE, SIZE))
    with pytest.raises(ValueError, match="expected an Instruction"):
        build_masks("red shirt", parts=scene.part_maps())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown body regions"):
        region_mask(scene.part_maps(), "tail")


def test_refinement_sizes_scale_with_the_image_side() -> None:
    from ficekit.masking import REFINEMENT_PX_AT_256, refinement_px

    assert refinement_px(256) == REFINEMENT_PX_AT_256
    assert refinement_px(64) == {"dilation_px": 1, "feather_px": 1, "close_px": 1, "open_px": 1}
    assert refinement_px(512) == {k: 2 * v for k, v in REFINEMENT_PX_AT_256.items()}
    scene = Scene.make()
    default = masks_for("blue skirt", scene, "parts")
    explicit = masks_for("blue skirt", scene, "parts", **refinement_px(SIZE))
    assert torch.equal(default.edit, explicit.edit) and torch.equal(default.blend, explicit.blend)
