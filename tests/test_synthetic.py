"""The procedural fashion world: determinism, edit locality, label consistency, palette, captions, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from ficekit.synthetic import (
    DENSEPOSE_PARTS,
    GARMENT_WORDS,
    PALETTE,
    PARSING_LABELS,
    PATTERNS,
    Attributes,
    Garment,
    render,
    render_attributes,
)
from ficekit.synthetic.captions import colour_words
from ficekit.synthetic.render import main
from ficekit.synthetic.world import contrasting_colours

P = PARSING_LABELS
ARM_PARTS = {"upper": (15, 16), "lower": (19, 20)}
EXPECTED_LABELS = ["background", "head", "hair", "upper_garment", "lower_garment", "dress", "outerwear",
                   "arms", "hands", "legs", "shoes"]


def _person(seed: int = 3, **changes: object) -> Attributes:
    """A person without a jacket or hair over the shoulders, with fields replaced."""
    at = render_attributes(seed)
    at = dataclasses.replace(at, outerwear=None, hair_style="short")
    return dataclasses.replace(at, **changes)


def _two_piece(upper: Garment, lower: Garment | None = None, seed: int = 3) -> Attributes:
    lower = lower or Garment("trousers", "navy")
    return _person(seed, upper=upper, lower=lower, dress=None)


def _dilate(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        p = np.pad(out, 1)
        out = out.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                out |= p[dy:dy + out.shape[0], dx:dx + out.shape[1]]
    return out


def _touched(seed: int, size: int, at: Attributes, slot: str) -> np.ndarray:
    """Pixels with any supersample of the slot's garment: render at 3x with one sample per pixel."""
    fine = render(seed, size * 3, attributes=at, supersample=1).mask(slot)
    return fine.reshape(size, 3, size, 3).any(axis=(1, 3))


def _recolour(at: Attributes, slot: str) -> Attributes:
    colour = "red" if getattr(at, slot).colour != "red" else "blue"
    return at.with_garment(slot, colour=colour, pattern="checks", secondary=contrasting_colours(colour)[0])


# ---------------------------------------------------------------------------------------------------
# Determinism and the record.


def test_same_seed_same_arrays_and_different_seeds_differ() -> None:
    a, b = render(11, 64), render(11, 64)
    for x, y in ((a.image, b.image), (a.parsing, b.parsing), (a.densepose.I, b.densepose.I),
                 (a.densepose.U, b.densepose.U), (a.densepose.V, b.densepose.V)):
        np.testing.assert_array_equal(x, y)
    assert a.captions == b.captions and a.attributes == b.attributes
    assert a.image.shape == (64, 64, 3) and a.image.dtype == np.uint8
    assert a.parsing.shape == (64, 64) and a.densepose.U.dtype == np.float32
    c = render(12, 64)
    assert not np.array_equal(a.image, c.image) and a.attributes != c.attributes


def test_attributes_round_trip_through_json_and_validate() -> None:
    for seed in range(20):
        at = render_attributes(seed)
        assert Attributes.from_dict(json.loads(json.dumps(at.to_dict()))) == at
    at = render_attributes(0)
    with pytest.raises(ValueError, match="colour"):
        render(0, 32, attributes=dataclasses.replace(at, upper=Garment("tshirt", "mauve", sleeve="short")))
    with pytest.raises(ValueError, match="secondary"):
        render(0, 32, attributes=at.with_garment("upper", pattern="dots", secondary=None))
    with pytest.raises(ValueError, match="sleeve"):
        render(0, 32, attributes=dataclasses.replace(at, upper=Garment("tank_top", "red", sleeve="long")))
    with pytest.raises(ValueError, match="dress"):
        render(0, 32, attributes=dataclasses.replace(at, dress=Garment("dress", "red", sleeve="short", length="knee")))
    with pytest.raises(ValueError, match="size"):
        render(0, 8)
    with pytest.raises(ValueError, match="seed"):
        render_attributes(-1)


def test_to_tensor_is_the_image_in_unit_range() -> None:
    sample = render(5, 32)
    t = sample.to_tensor()
    assert t.shape == (3, 32, 32) and t.dtype == torch.float32
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy() * 255.0, sample.image, atol=1e-4)


# ---------------------------------------------------------------------------------------------------
# Editing one garment keeps everything else.


def test_recolouring_a_garment_changes_only_its_pixels() -> None:
    slots_seen = set()
    for seed in range(24):
        at = render_attributes(seed)
        before = render(seed, 64, attributes=at)
        for slot in at.garments():
            slots_seen.add(slot)
            edited = _recolour(at, slot)
            after = render(seed, 64, attributes=edited)
            changed = (before.image != after.image).any(axis=-1)
            assert changed.any()
            # exact: only pixels whose supersamples include the garment change
            assert not (changed & ~_touched(seed, 64, at, slot)).any(), (seed, slot)
            # in label terms: (almost) every change lies on the garment or its one-pixel boundary
            near = _dilate(before.mask(slot), 1)
            assert (changed & ~near).sum() <= max(2, 0.01 * changed.sum()), (seed, slot)
            # geometry is untouched: same labels, same DensePose
            np.testing.assert_array_equal(before.parsing, after.parsing)
            np.testing.assert_array_equal(before.densepose.I, after.densepose.I)
            assert after.attributes.garments()[slot] != at.garments()[slot]
    assert slots_seen == {"upper", "lower", "dress", "outerwear"}


def test_changing_the_top_kind_changes_only_the_tops_region() -> None:
    at = _two_piece(Garment("sweater", "green", sleeve="long"))
    edited = at.with_garment("upper", kind="tank_top", sleeve="sleeveless")
    before, after = render(3, 64, attributes=at), render(3, 64, attributes=edited)
    region = _touched(3, 64, at, "upper") | _touched(3, 64, edited, "upper")
    changed = (before.image != after.image).any(axis=-1) | (before.parsing != after.parsing)
    assert changed.any() and not (changed & ~region).any()
    assert (after.mask("arms") & before.mask("upper")).sum() > 20  # bare arms where the sleeves were


# ---------------------------------------------------------------------------------------------------
# Labels agree with what is drawn.


def _arm(sample, which: str) -> np.ndarray:  # noqa: ANN001 - a Sample
    return np.isin(sample.densepose.I, ARM_PARTS[which])


def test_long_sleeves_cover_the_arms_with_the_garment_label() -> None:
    s = render(3, 128, attributes=_two_piece(Garment("sweater", "blue", sleeve="long")))
    upper_arm, forearm = _arm(s, "upper"), _arm(s, "lower")
    assert upper_arm.sum() > 50 and forearm.sum() > 50
    assert (s.parsing[upper_arm] == P["upper_garment"]).all()
    assert (s.parsing[forearm] == P["upper_garment"]).mean() > 0.85  # bare wrists below the cuffs
    assert (s.mask("upper_garment") & (upper_arm | forearm)).sum() > 100


def test_sleeveless_arms_are_skin_and_short_sleeves_cover_only_upper_arms() -> None:
    s = render(3, 128, attributes=_two_piece(Garment("tank_top", "white", sleeve="sleeveless")))
    arms = _arm(s, "upper") | _arm(s, "lower")
    assert (s.parsing[arms] == P["arms"]).all()
    assert not np.isin(s.densepose.I[s.mask("upper_garment")], ARM_PARTS["upper"] + ARM_PARTS["lower"]).any()
    s = render(3, 128, attributes=_two_piece(Garment("tshirt", "white", sleeve="short")))
    upper_labels = s.parsing[_arm(s, "upper")]
    assert (upper_labels == P["upper_garment"]).mean() > 0.3 and (upper_labels == P["arms"]).mean() > 0.2
    assert (s.parsing[_arm(s, "lower")] == P["arms"]).all()


@pytest.mark.parametrize("lower", [Garment("shorts", "grey"), Garment("trousers", "blue"),
                                   Garment("skirt", "red", length="mini")])
def test_lower_garments_cover_the_legs_they_should(lower: Garment) -> None:
    s = render(3, 128, attributes=_two_piece(Garment("tshirt", "white", sleeve="short"), lower))
    thighs, shins = np.isin(s.densepose.I, (9, 10)), np.isin(s.densepose.I, (13, 14))
    on_thighs, on_shins = s.parsing[thighs], s.parsing[shins]
    if lower.kind == "trousers":
        assert (on_thighs == P["lower_garment"]).all() and (on_shins == P["lower_garment"]).mean() > 0.95
    else:
        assert (on_thighs == P["lower_garment"]).mean() > 0.3 and (on_thighs == P["legs"]).mean() > 0.2
        assert (on_shins == P["legs"]).all()
    if lower.kind == "skirt":  # the skirt's flare covers background between the legs
        assert (s.mask("lower_garment") & (s.densepose.I == 0)).sum() > 10


def test_dress_replaces_both_garments() -> None:
    dress = Garment("dress", "purple", "dots", "white", sleeve="short", length="knee")
    s = render(3, 128, attributes=_person(upper=None, lower=None, dress=dress))
    assert s.mask("dress").sum() > 500
    assert not s.mask("upper_garment").any() and not s.mask("lower_garment").any()
    assert (s.mask("dress") & np.isin(s.densepose.I, (9, 10))).sum() > 50  # over the thighs


@pytest.mark.parametrize("seed", range(8))
def test_skin_hands_feet_and_head_labels_match_densepose(seed: int) -> None:
    s = render(seed, 128)
    I, U, V = s.densepose.I, s.densepose.U, s.densepose.V  # noqa: E741 - the DensePose names
    np.testing.assert_array_equal(s.mask("hands"), np.isin(I, (3, 4)))
    assert np.isin(I[s.mask("shoes")], (5, 6)).all()
    assert np.isin(I[s.mask("head")], (2, 23, 24)).all()  # face, neck and neckline skin
    assert np.isin(I[s.mask("legs")], (9, 10, 13, 14)).all()
    assert np.isin(I[s.mask("arms")], (2, 15, 16, 19, 20)).all()  # bare shoulders are torso
    assert (I[s.mask("background")] == 0).all()
    skin = np.isin(s.parsing, [P[n] for n in ("arms", "hands", "legs", "shoes")])
    assert (I[skin] > 0).all()
    assert 0.0 <= U.min() and U.max() <= 1.0 and 0.0 <= V.min() and V.max() <= 1.0
    assert not U[I == 0].any() and not V[I == 0].any()
    assert set(np.unique(I)) <= {0, *DENSEPOSE_PARTS.values()}


def test_person_right_is_image_left() -> None:
    s = render(3, 128, attributes=_two_piece(Garment("tank_top", "white", sleeve="sleeveless")))
    x = np.arange(128)[None, :]

    def centre(part: int) -> float:
        mask = s.densepose.I == part
        assert mask.any(), part
        return float((x * mask).sum() / mask.sum())

    for right, left in (("hand_right", "hand_left"), ("foot_right", "foot_left"), ("upper_arm_right", "upper_arm_left"),
                        ("lower_leg_right", "lower_leg_left"), ("head_right", "head_left")):
        assert centre(DENSEPOSE_PARTS[right]) < centre(DENSEPOSE_PARTS[left])


def test_parsing_labels_are_exactly_the_documented_names() -> None:
    assert list(PARSING_LABELS) == EXPECTED_LABELS
    assert sorted(PARSING_LABELS.values()) == list(range(len(EXPECTED_LABELS)))
    seen: set[int] = set()
    for seed in range(40):
        seen |= set(np.unique(render(seed, 32).parsing).tolist())
    assert seen == set(PARSING_LABELS.values())


# ---------------------------------------------------------------------------------------------------
# Palette and patterns.


def test_every_palette_colour_renders_true_and_every_pattern_shows_both_colours() -> None:
    base = _two_piece(Garment("tshirt", "white", sleeve="short"))
    torso = None
    for colour, rgb in PALETTE.items():
        s = render(3, 64, attributes=base.with_garment("upper", colour=colour))
        if torso is None:  # the top's pixels away from its outline
            torso = ~_dilate(~s.mask("upper"), 1)
        median = np.median(s.image[torso].astype(np.float64), axis=0)
        assert np.abs(median - rgb).max() < 45, (colour, median, rgb)
        for pattern in PATTERNS[1:]:
            second = contrasting_colours(colour)[0]
            p = render(3, 64, attributes=base.with_garment("upper", colour=colour, pattern=pattern, secondary=second))
            pixels = p.image[torso].astype(np.float64)
            near_second = np.linalg.norm(pixels - PALETTE[second], axis=1) < np.linalg.norm(pixels - rgb, axis=1)
            assert 0.08 < near_second.mean() < 0.8, (colour, pattern, near_second.mean())


# ---------------------------------------------------------------------------------------------------
# Captions.


def _mentions(text: str, words: tuple[str, ...] | list[str]) -> bool:
    return any(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text) for w in words)


def test_captions_name_the_colours_and_garments_of_the_sample() -> None:
    distinctive = {"dress": "dress", "skirt": "skirt", "jacket": "jacket", "shorts": "shorts", "sweater": "sweater",
                   "jeans": "trousers", "trousers": "trousers", "tank top": "tank_top", "tee": "tshirt"}
    vocabulary = set()
    for seed in range(60):
        s = render(seed, 16)
        garments = s.attributes.garments().values()
        assert len(s.captions) >= 5 and len(set(s.captions)) == len(s.captions)
        for caption in s.captions:
            vocabulary |= set(caption.split())
            assert any(_mentions(caption, colour_words(g.colour)) and _mentions(caption, GARMENT_WORDS[g.kind])
                       for g in garments), (seed, caption)
            worn = {g.kind for g in garments}
            for word, kind in distinctive.items():
                assert not _mentions(caption, (word,)) or kind in worn, (seed, caption, word)
        text = " ".join(s.captions)
        for g in garments:
            assert _mentions(text, colour_words(g.colour)) and _mentions(text, GARMENT_WORDS[g.kind]), (seed, g)
    assert {"cotton", "silk", "linen", "denim", "wool"} <= vocabulary  # words the world does not draw
    assert {"casual", "striped", "polka", "checked", "sleeveless"} <= vocabulary


# ---------------------------------------------------------------------------------------------------
# Speed and the CLI.


def test_rendering_is_fast_enough_for_training_sets() -> None:
    start = time.perf_counter()
    for seed in range(20):
        render(seed, 64)
    assert time.perf_counter() - start < 20.0  # about 0.1 s measured; the bound only catches pathologies


def test_cli_writes_images_maps_and_captions(tmp_path) -> None:  # noqa: ANN001 - pytest fixture
    assert main(["--seed", "4", "--n", "2", "--size", "48", "--out", str(tmp_path), "--quiet"]) == 0
    for seed in (4, 5):
        for suffix in ("", "_parsing", "_densepose"):
            with Image.open(tmp_path / f"{seed:06d}{suffix}.png") as im:
                assert im.size == (48, 48) and im.mode == "RGB"
    records = json.loads((tmp_path / "captions.json").read_text())
    assert set(records) == {"4", "5"} and records["4"]["captions"] == render(4, 16).captions
    assert Attributes.from_dict(records["5"]["attributes"]) == render_attributes(5)
    assert (tmp_path / "sheet.png").exists()


def test_cli_runs_as_a_module(tmp_path) -> None:  # noqa: ANN001 - pytest fixture
    cmd = [sys.executable, "-m", "ficekit.synthetic.render", "--seed", "9", "--n", "1", "--size", "32", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "wrote 1 samples" in done.stdout and (tmp_path / "000009_densepose.png").exists()


def test_training_batches_are_seeded_and_disjoint_from_held_out():
    from ficekit.synthetic.dataset import HELD_OUT_SEED_START, held_out_seeds, render_batch, training_batches

    a, b = next(training_batches(3, 32, seed=4)), next(training_batches(3, 32, seed=4))
    assert a.seeds == b.seeds and torch.equal(a.images, b.images)
    assert a.images.shape == (3, 3, 32, 32) and a.parsing.shape == a.parts.shape == a.u.shape == (3, 32, 32)
    assert all(s < HELD_OUT_SEED_START for s in a.seeds)
    assert all(s >= HELD_OUT_SEED_START for s in held_out_seeds(5))
    one = render_batch([a.seeds[0]], 32)
    assert torch.equal(one.images[0], a.images[0]) and one.captions[0] == a.captions[0]


def test_budget_ends_by_steps_or_time():
    from ficekit.synthetic.training import Budget

    budget = Budget(steps=3)
    assert [budget.next() for _ in range(5)] == [True, True, True, False, False] and budget.step == 3
    timed = Budget(steps=10**9, seconds=0.05)
    while timed.next():
        pass
    assert timed.elapsed >= 0.05 and timed.step >= 1
    with pytest.raises(ValueError, match="steps"):
        Budget(steps=0)


def test_budget_progress_and_schedules():
    from ficekit.synthetic.training import Budget, cosine_factor, lr_factor

    budget = Budget(steps=5)
    seen = []
    while budget.next():
        seen.append((budget.progress, cosine_factor(budget), lr_factor(budget, warmup=0.0)))
    assert [p for p, _, _ in seen] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert seen[0][1] == pytest.approx(1.0) and seen[0][2] == pytest.approx(1.0)
    assert all(a[1] > b[1] for a, b in zip(seen, seen[1:], strict=False))  # decays


# ---------------------------------------------------------------------------------------------------
# World versions: v1 unchanged, v2 framed so that tops carry their patterns.

# sha256 over image, parsing, I, U, V and captions of these renders, computed before world versions existed:
# the shipped demo bundle was trained on v1, so v1 must stay bit-identical.
V1_HASH_RENDERS = ((0, 1, 2, 3, 7, 1_000_000_000, 1_000_000_005), (64, 128))
V1_HASH = "badbef8f467fd6c469f2e092cc17930514712dfe3501f5e2596fb60e174547bb"


def _top_span(sample) -> int:  # noqa: ANN001 - a Sample
    """Width in pixels of the garment covering the torso in front (jacket, else dress, else top)."""
    garments = sample.attributes.garments()
    slot = next(s for s in ("outerwear", "dress", "upper") if s in garments)
    columns = np.nonzero(sample.mask(slot).any(axis=0))[0]
    return int(columns[-1] - columns[0] + 1)


def test_v1_renders_are_bit_identical_to_before_world_versions() -> None:
    digest = hashlib.sha256()
    for seed in V1_HASH_RENDERS[0]:
        for size in V1_HASH_RENDERS[1]:
            s = render(seed, size=size)
            for array in (s.image, s.parsing, s.densepose.I, s.densepose.U, s.densepose.V):
                digest.update(np.ascontiguousarray(array).tobytes())
            digest.update("|".join(s.captions).encode())
    assert digest.hexdigest() == V1_HASH
    assert render_attributes(0).world == "v1" and render(0, 16, world="v1").attributes == render_attributes(0)


def test_v2_tops_span_half_the_frame_where_v1_tops_are_small() -> None:
    v2 = [_top_span(render(seed, 64, world="v2", n_captions=1)) for seed in range(40)]
    v1 = [_top_span(render(seed, 64, n_captions=1)) for seed in range(40)]
    assert np.median(v2) >= 40 and np.mean(np.array(v2) >= 32) >= 0.8 and min(v2) >= 26
    assert np.median(v1) < 20


def test_v2_is_the_same_person_framed_closer_and_edits_keep_the_world() -> None:
    v1, v2 = render_attributes(5), render_attributes(5, "v2")
    assert v2.world == "v2" and (v1.skin, v1.presentation, v1.hair_style, v1.pose) == (v2.skin, v2.presentation, v2.hair_style, v2.pose)
    assert v2.body_width > v1.body_width
    edited = v2.with_garment(next(iter(v2.garments())), colour="red")
    assert edited.world == "v2"
    np.testing.assert_array_equal(render(5, 64, attributes=v2).image, render(5, 64, world="v2").image)
    head_v1, head_v2 = render(5, 64).mask("head").sum(), render(5, 64, world="v2").mask("head").sum()
    assert head_v2 > 4 * head_v1  # about 2.6x the scale: 7x the area
    assert Attributes.from_dict(json.loads(json.dumps(v2.to_dict()))) == v2


def test_world_names_are_checked() -> None:
    with pytest.raises(ValueError, match="world"):
        render(0, 32, world="v3")
    with pytest.raises(ValueError, match="world"):
        render_attributes(0, "V2")
    with pytest.raises(ValueError, match="contradicts"):
        render(0, 32, attributes=render_attributes(0, "v2"), world="v1")
    with pytest.raises(ValueError, match="world"):
        render(0, 32, attributes=dataclasses.replace(render_attributes(0), world="v0"))


@pytest.mark.parametrize("seed", range(6))
def test_v2_labels_match_densepose(seed: int) -> None:
    s = render(seed, 64, world="v2")
    I, U, V = s.densepose.I, s.densepose.U, s.densepose.V  # noqa: E741 - the DensePose names
    assert np.isin(I[s.mask("head")], (2, 23, 24)).all()
    assert np.isin(I[s.mask("arms")], (2, 15, 16, 19, 20)).all()
    assert (I[s.mask("background")] == 0).all()
    assert (I[np.isin(s.parsing, [P["arms"], P["hands"]])] > 0).all()
    assert np.isin(I[s.mask("upper") | s.mask("dress")], (2, 15, 16, 19, 20)).all()  # tops follow the body
    assert not U[I == 0].any() and not V[I == 0].any() and 0.0 <= U.min() and V.max() <= 1.0
    assert set(np.unique(I)) <= {0, *DENSEPOSE_PARTS.values()} and (I == 2).mean() > 0.15  # the torso fills the frame


def test_v2_sleeves_cover_the_upper_arms_they_should() -> None:
    base = dataclasses.replace(render_attributes(3, "v2"), outerwear=None, hair_style="short", dress=None,
                               lower=Garment("trousers", "navy"))
    covered = {}
    for sleeve in ("sleeveless", "short", "long"):
        s = render(3, 64, attributes=dataclasses.replace(base, upper=Garment("shirt", "blue", sleeve=sleeve)))
        upper_arm = _arm(s, "upper")
        assert upper_arm.sum() > 100  # the arms are large enough to read
        covered[sleeve] = float((s.parsing[upper_arm] == P["upper_garment"]).mean())
    assert covered["sleeveless"] == 0.0 and 0.3 < covered["short"] < 0.9 and covered["long"] > 0.95


def test_contrast_captions_differ_in_the_drawn_attribute_only() -> None:
    from ficekit.synthetic.captions import CONTRAST_ATTRIBUTES, contrast_captions, visible_top

    rng = np.random.default_rng(0)
    seen = set()
    for seed in range(60):
        at = render_attributes(seed, "v2")
        positive, negative, attribute = contrast_captions(at, rng)
        seen.add(attribute)
        g = visible_top(at)
        assert positive != negative and GARMENT_WORDS[g.kind][0] in positive and colour_words(g.colour)[0] in positive
        a, b = positive.split(), negative.split()
        if len(a) == len(b):  # one word replaced (or an article with it: "a red" / "an orange")
            differing = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
            assert len(differing) <= 2 and (len(differing) == 1 or differing[1] - differing[0] == 1), (positive, negative)
        else:  # a one-word phrase replaced by a two-word one ("dotted" / "polka dot")
            assert attribute == "pattern" and abs(len(a) - len(b)) == 1, (positive, negative)
    assert seen == set(CONTRAST_ATTRIBUTES)


def test_v2_captions_name_only_what_the_upper_body_frame_shows() -> None:
    lower_words = {w for kind in ("trousers", "shorts", "skirt") for w in GARMENT_WORDS[kind]}
    for seed in range(30):
        at = render_attributes(seed, "v2")
        for caption in render(seed, 16, world="v2").captions:
            padded = f" {caption} "
            assert not any(f" {w} " in padded or f" {w}," in padded for w in lower_words), caption
            assert not re.search(r"\b(shoes|sneakers|trainers|full-body|knee-length|midi|mini)\b", caption), caption
        top = at.dress or at.upper
        assert any(w in " ".join(render(seed, 16, world="v2").captions) for w in GARMENT_WORDS[top.kind]), seed
