"""The sleeve and type judges (ficekit.eval.judges) on renders whose answer is known, and the judges' world versions."""

from __future__ import annotations

import math

import pytest
import torch

from ficekit.checkpoint_io import CheckpointError
from ficekit.eval.judges import (
    IGNORE_INDEX,
    JUDGED_SLOTS,
    TYPE_KINDS,
    GarmentType,
    PatternJudge,
    PatternNet,
    TypeData,
    TypeJudge,
    arm_regions,
    body_crop,
    judge_data,
    judge_sleeve,
    same_drawn_kind,
    sleeve_coverage,
    sleeve_from_coverage,
    type_data,
    upper_body_region,
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


def test_upper_body_region_is_torso_and_arms_and_body_crop_is_its_grown_box() -> None:
    parts = torch.tensor([[0, 2, 23], [15, 19, 9], [3, 16, 20]])
    assert upper_body_region(parts).tolist() == [[False, True, False], [True, True, False], [False, True, True]]
    image = torch.rand(3, 20, 30)
    region = torch.zeros(20, 30, dtype=torch.bool)
    region[5:11, 8:14] = True  # a 6 x 6 box, grown by BODY_CROP_MARGIN = 1 on each side: rows 4-11, columns 7-14
    torch.testing.assert_close(body_crop(image, region, size=8), image[:, 4:12, 7:15])
    torch.testing.assert_close(body_crop(image[:, :16, :16], None, size=16), image[:, :16, :16])  # None: all
    with pytest.raises(ValueError, match="no pixel"):
        body_crop(image, torch.zeros(20, 30, dtype=torch.bool))


def test_type_data_labels_the_top_and_leaves_dresses_and_tops_under_jackets_unjudged() -> None:
    seeds = held_out_seeds(30, seed=5)
    data = type_data(seeds, 64, world="v2")
    assert data.crops.shape == (30, 3, 48, 48)
    for seed, kind, jacket in zip(seeds, data.kinds.tolist(), data.jackets.tolist(), strict=True):
        garments = render(seed, 64, world="v2", n_captions=1).attributes.garments()
        assert jacket == float("outerwear" in garments)
        if "dress" in garments or "outerwear" in garments:
            assert kind == IGNORE_INDEX
        else:
            assert TYPE_KINDS[kind] == garments["upper"].kind
    assert {IGNORE_INDEX, *range(len(TYPE_KINDS))} <= set(data.kinds.tolist())  # every kind, and unjudged crops


class _FixedLogits(torch.nn.Module):
    """A stand-in net whose logits are given: kind logits favouring `kind`, then the jacket logit."""

    def __init__(self, kind: int, jacket_logit: float) -> None:
        super().__init__()
        self.logits = torch.full((len(TYPE_KINDS) + 1,), -1.0)
        self.logits[kind] = 1.0
        self.logits[-1] = jacket_logit

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(crops.shape[0], -1)


def test_type_judge_decodes_logits_and_counts_accuracy_per_question() -> None:
    judge = TypeJudge(_FixedLogits(TYPE_KINDS.index("shirt"), jacket_logit=2.0), 64, {"kind": 1.0, "jacket": 1.0})
    images, regions = torch.rand(2, 3, 64, 64), torch.ones(2, 64, 64, dtype=torch.bool)
    assert judge.predict(images, regions) == [GarmentType("shirt", True)] * 2
    assert judge.predict(images) == [GarmentType("shirt", True)] * 2
    with pytest.raises(ValueError, match="N, 3, H, W"):
        judge.predict(torch.rand(3, 64, 64))
    # reading 'sweater' with a jacket: of a shirt, a t-shirt, a sweater and a dress (unjudged), the sweater is right,
    # the t-shirt right as judged (drawn alike); the jacket is right for the three worn with one
    kinds = torch.tensor([TYPE_KINDS.index(k) for k in ("shirt", "tshirt", "sweater")] + [IGNORE_INDEX])
    data = TypeData(torch.rand(4, 3, 48, 48), kinds, torch.tensor([0.0, 1.0, 1.0, 1.0]))
    assert TypeJudge.accuracies(_FixedLogits(TYPE_KINDS.index("sweater"), 2.0), data) == pytest.approx(
        {"kind": 1 / 3, "kind_as_judged": 2 / 3, "jacket": 3 / 4})
    assert same_drawn_kind("tshirt", "sweater") and same_drawn_kind("shirt", "shirt")
    assert not same_drawn_kind("tshirt", "shirt") and not same_drawn_kind("tank_top", "sweater")


def test_type_judges_are_cached_per_world_and_refuse_other_judges_files(tmp_path) -> None:
    v1, v2 = TypeJudge.cache_path(64, tmp_path, world="v1"), TypeJudge.cache_path(64, tmp_path, world="v2")
    assert v1 != v2 and v2.name.startswith("type-v2-64px-") and v2 != PatternJudge.cache_path(64, tmp_path, "v2")
    judge = TypeJudge.train(64, n_train=40, n_val=10, steps=2, progress=False, world="v2")
    assert set(judge.accuracy) == {"kind", "kind_as_judged", "jacket"} and judge.world == "v2"
    judge.save(v2)
    again = TypeJudge.trained(64, cache_dir=tmp_path, progress=False, world="v2")  # read back, not retrained
    images = torch.stack([render(s, 64, world="v2", n_captions=1).to_tensor() for s in held_out_seeds(3)])
    assert again.predict(images) == judge.predict(images) and again.accuracy == judge.accuracy
    with pytest.raises(CheckpointError, match="not a version-1 pattern judge file"):
        PatternJudge.load(v2)
    PatternJudge(PatternNet(), 64, 0.9, world="v2").save(tmp_path / "pattern.pt")
    with pytest.raises(CheckpointError, match="type judge"):
        TypeJudge.load(tmp_path / "pattern.pt")
    with pytest.raises(ValueError, match="world"):
        TypeJudge.train(32, n_train=10, n_val=5, steps=1, progress=False, world="v9")


@pytest.mark.slow
def test_the_default_type_judge_reads_held_out_renders_of_known_kind() -> None:
    """The judge the benchmark trains (about 5 minutes on one core) reads >= 95 % of held-out tops' kinds (kinds drawn
    alike counting as one) and of jackets; measured 98.7 % and 99.3 % on 2000 renders (issue 16's report)."""
    judge = TypeJudge.train(64, progress=False, world="v2")
    data = type_data(held_out_seeds(400, seed=31), 64, world="v2")
    accuracy = TypeJudge.accuracies(judge.net, data)
    assert accuracy["kind_as_judged"] >= 0.95 and accuracy["jacket"] >= 0.95, accuracy
    assert judge.accuracy["kind_as_judged"] >= 0.95 and judge.accuracy["jacket"] >= 0.95, judge.accuracy
