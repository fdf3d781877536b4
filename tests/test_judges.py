"""The sleeve judge (ficekit.eval.judges) on renders whose sleeve is known, and the judges' world versions."""

from __future__ import annotations

import math

import pytest
import torch

from ficekit.eval.judges import (
    JUDGED_SLOTS,
    PatternJudge,
    PatternNet,
    arm_regions,
    judge_data,
    judge_sleeve,
    sleeve_coverage,
    sleeve_from_coverage,
)
from ficekit.synthetic import render
from ficekit.synthetic.dataset import held_out_seeds
from ficekit.synthetic.world import SLEEVES_BY_KIND

pytestmark = pytest.mark.usefixtures("one_thread")


def _judged(seed: int, world: str = "v2"):  # noqa: ANN202 - (Sample, slot) or None
    photo = render(seed, 64, world=world, n_captions=1)
    garments = photo.attributes.garments()
    if "outerwear" in garments:
        return None
    return photo, next(s for s in JUDGED_SLOTS if s in garments)


def test_coverage_counts_pixels_nearer_the_garment_than_the_skin() -> None:
    image = torch.zeros(3, 4, 4)
    image[:, :, :2] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # left half red (the garment)
    image[:, :, 2:] = torch.tensor([0.8, 0.6, 0.5])[:, None, None]  # right half skin-coloured
    garment = torch.zeros(4, 4, dtype=torch.bool)
    garment[0, 0] = True
    shoulder = torch.zeros(4, 4, dtype=torch.bool)
    shoulder[:, 1:3] = True  # 4 red + 4 skin pixels
    elbow = torch.zeros(4, 4, dtype=torch.bool)
    elbow[:, 0] = True  # 4 red pixels (MIN_ARM_PIXELS)
    nowhere = torch.zeros(4, 4, dtype=torch.bool)
    skin = torch.tensor([0.8, 0.6, 0.5])
    shares = sleeve_coverage(image, {"shoulder": shoulder, "elbow": elbow, "hidden": nowhere}, skin, garment)
    assert shares["shoulder"] == 0.5 and shares["elbow"] == 1.0 and math.isnan(shares["hidden"])
    assert sleeve_from_coverage({"shoulder": 0.9, "elbow": 0.8}) == "long"
    assert sleeve_from_coverage({"shoulder": 0.9, "elbow": 0.1}) == "short"
    assert sleeve_from_coverage({"shoulder": 0.2, "elbow": 0.9}) == "sleeveless"
    assert sleeve_from_coverage({"shoulder": math.nan, "elbow": math.nan}) == "sleeveless"
    with pytest.raises(ValueError, match="garment mask"):
        sleeve_coverage(image, {"shoulder": shoulder}, skin, torch.zeros(4, 4, dtype=torch.bool))


def test_arm_regions_take_the_central_strip_of_the_upper_arm() -> None:
    parts = torch.tensor([[15, 15, 15, 2], [16, 16, 19, 0]])
    u = torch.tensor([[0.5, 0.9, 0.5, 0.5], [0.4, 0.6, 0.5, 0.0]])
    v = torch.tensor([[0.2, 0.2, 0.8, 0.2], [0.9, 0.3, 0.9, 0.0]])
    regions = arm_regions(parts, u, v)
    assert regions["shoulder"].tolist() == [[True, False, False, False], [False, True, False, False]]
    assert regions["elbow"].tolist() == [[False, False, True, False], [True, False, False, False]]


def test_sleeve_judge_reads_photos_and_sleeve_changed_redraws_of_v2() -> None:
    """>= 95 % on renders whose sleeve is known: the photos themselves, and the photo's person redrawn with every
    other sleeve its garment allows, judged with the photo's DensePose (as the benchmark judges an edit)."""
    hits = total = 0
    kinds = set()
    for seed in held_out_seeds(40, seed=3):
        if (judged := _judged(seed)) is None:
            continue
        photo, slot = judged
        garment = photo.attributes.garments()[slot]
        for sleeve in SLEEVES_BY_KIND[garment.kind]:
            edited = photo if sleeve == garment.sleeve else render(
                seed, 64, attributes=photo.attributes.with_garment(slot, sleeve=sleeve), n_captions=1)
            hits += judge_sleeve(edited.to_tensor(), photo, slot) == sleeve
            total += 1
            kinds.add(sleeve)
    assert kinds == {"sleeveless", "short", "long"} and total >= 45
    assert hits / total >= 0.95, (hits, total)


def test_sleeve_judge_sees_a_garment_coloured_like_skin_as_no_sleeve_change() -> None:
    """A sleeveless edit into a skin-coloured garment must not read as sleeves (the garment reference comes from
    the chest, which an edit cannot bare), and a wrong-size image is refused."""
    for seed in held_out_seeds(60, seed=4):
        if (judged := _judged(seed)) is None:
            continue
        photo, slot = judged
        if photo.attributes.garments()[slot].kind in ("shirt", "dress"):
            break
    bare = render(seed, 64, attributes=photo.attributes.with_garment(slot, sleeve="sleeveless", colour="beige",
                                                                    pattern="plain"), n_captions=1)
    assert judge_sleeve(bare.to_tensor(), photo, slot) == "sleeveless"
    with pytest.raises(ValueError, match="px"):
        judge_sleeve(torch.rand(3, 32, 32), photo, slot)


def test_pattern_judges_are_kept_per_world_and_v1_keeps_its_cache_name(tmp_path) -> None:
    v1, v2 = PatternJudge.cache_path(64, tmp_path), PatternJudge.cache_path(64, tmp_path, world="v2")
    assert v1 != v2 and v1.name.startswith("pattern-64px-") and v2.name.startswith("pattern-v2-64px-")
    PatternJudge(PatternNet(), 64, 0.97, world="v2").save(tmp_path / "j.pt")
    assert PatternJudge.load(tmp_path / "j.pt").world == "v2"
    with pytest.raises(ValueError, match="world"):
        PatternJudge.train(32, n_train=10, n_val=5, steps=1, progress=False, world="v9")
    crops = judge_data(held_out_seeds(3), 64, world="v2").crops
    assert crops.shape[1:] == (3, 32, 32) and len(crops) >= 2
