"""Bare-skin guidance (ficekit.skin): where a sleeve leaves the arm bare, the photo's skin colour, the term's value,
DensePose V maps and the term's place in the objective and the pipeline."""

from __future__ import annotations

import pytest
import torch

from ficekit.objective import EditTargets, build_objective
from ficekit.perception.densepose import DensePoseOutput
from ficekit.perception.densepose_parts import densepose_part_and_v_maps, densepose_part_maps
from ficekit.perception.segmenter import SegmentationMasks
from ficekit.skin import SHORT_SLEEVE_END, SkinTerm, bare_arm_mask, oriented_v, skin_colour
from ficekit.texture import TextureTerm

H = W = 16


def _body(flip_v: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Part maps [1,25,H,W] and V [1,25,H,W]: head rows 0-3, an upper arm (chart 15) in rows 4-11 of columns 0-2
    with V from 0 at the shoulder (row 4) to 1 at the elbow (row 11), a forearm (chart 19) in rows 12-15, the torso
    in columns 4-11 of rows 4-15; background elsewhere."""
    parts = torch.zeros(1, 25, H, W)
    parts[0, 0] = 1
    v = torch.zeros(1, 25, H, W)

    def put(channel: int, rows: slice, cols: slice) -> None:
        parts[0, :, rows, cols] = 0
        parts[0, channel, rows, cols] = 1

    put(23, slice(0, 4), slice(4, 12))
    put(15, slice(4, 12), slice(0, 3))
    put(19, slice(12, 16), slice(0, 3))
    put(1, slice(4, 16), slice(4, 12))
    ramp = torch.linspace(0, 1, 8)[:, None].expand(8, 3)
    v[0, 15, 4:12, 0:3] = 1 - ramp if flip_v else ramp
    return parts, v


def test_oriented_v_keeps_v_that_grows_from_the_shoulder_and_flips_the_other() -> None:
    parts, v = _body()
    head = parts[0, 23]
    torch.testing.assert_close(oriented_v(v[0, 15], parts[0, 15], head), v[0, 15])
    _, flipped = _body(flip_v=True)
    torch.testing.assert_close(oriented_v(flipped[0, 15], parts[0, 15], head), 1 - flipped[0, 15])


@pytest.mark.parametrize("flip_v", [False, True])
def test_bare_arm_mask_follows_the_sleeve(flip_v: bool) -> None:
    parts, v = _body(flip_v)
    edit = torch.ones(1, 1, H, W)
    upper, fore = parts[:, 15:16], parts[:, 19:20]
    assert torch.equal(bare_arm_mask("upper", "long", parts, v, edit), torch.zeros_like(edit))
    assert torch.equal(bare_arm_mask("upper", None, parts, v, edit), torch.zeros_like(edit))
    assert torch.equal(bare_arm_mask("lower", "sleeveless", parts, v, edit), torch.zeros_like(edit))
    torch.testing.assert_close(bare_arm_mask("upper", "sleeveless", parts, v, edit), upper + fore)
    short = bare_arm_mask("upper", "short", parts, v, edit)
    # the forearm and the upper arm's elbow half (V > SHORT_SLEEVE_END: rows 8-11), whichever way the model's V runs
    expected = fore.clone()
    rows = torch.linspace(0, 1, 8) > SHORT_SLEEVE_END
    expected[0, 0, 4:12, 0:3] = rows[:, None].float().expand(8, 3)
    torch.testing.assert_close(short, expected)
    # only inside the edit region
    half = torch.zeros_like(edit)
    half[..., 14:, :] = 1
    torch.testing.assert_close(bare_arm_mask("upper", "short", parts, v, half), expected * half)


def _parser(face: torch.Tensor) -> SegmentationMasks:
    probs = torch.zeros(1, 2, H, W)
    probs[0, 0] = 1 - face
    probs[0, 1] = face
    return SegmentationMasks(probs, {"background": 0, "face": 1}, {"head": ("face",)})


def test_skin_colour_is_the_median_of_the_visible_skin() -> None:
    photo = torch.zeros(1, 3, H, W)
    skin = torch.tensor([0.8, 0.6, 0.5])
    face = torch.zeros(H, W)
    face[0:4, 4:12] = 1
    photo[0, :, 0:4, 4:12] = skin[:, None, None]
    photo[0, :, 0, 4] = 1.0  # one odd pixel (an eye) does not move the median
    no_edit = torch.zeros(1, 1, H, W)
    torch.testing.assert_close(skin_colour(photo, _parser(face), None, no_edit), skin[None])
    # skin the edit repaints does not count; with too little left the colour is unknown
    edit = torch.ones(1, 1, H, W)
    edit[..., 0, 4:7] = 0
    assert skin_colour(photo, _parser(face), None, edit) is None
    assert skin_colour(photo, None, None, no_edit) is None


def test_skin_term_value_is_the_mean_squared_distance_over_bare_pixels() -> None:
    generated = torch.zeros(2, 3, H, W)
    generated[:, 0] = 1.0  # red
    bare = torch.zeros(2, 1, H, W)
    bare[0, :, :4, :4] = 1
    skin = torch.tensor([[1.0, 0.5, 0.5], [0.0, 0.0, 0.0]])
    targets = EditTargets(photo=torch.zeros(2, 3, H, W), keep_mask=torch.zeros(2, 1, H, W), body_parts=None, head=None,
                          text_features=None, ws_init=torch.zeros(2, 4, 8), bare_mask=bare, skin_rgb=skin)  # fmt: skip
    # photo 0: every bare pixel is 0.25 + 0.25 = 0.5 from its skin; photo 1 has no bare pixel
    torch.testing.assert_close(SkinTerm()(generated, targets.ws_init, targets), torch.tensor(0.5))
    none = EditTargets(photo=torch.zeros(2, 3, H, W), keep_mask=torch.zeros(2, 1, H, W), body_parts=None, head=None,
                       text_features=None, ws_init=torch.zeros(2, 4, 8))  # fmt: skip
    assert float(SkinTerm()(generated, none.ws_init, none)) == 0.0
    with pytest.raises(ValueError, match="bare_mask"):
        EditTargets(photo=torch.zeros(2, 3, H, W), keep_mask=torch.zeros(2, 1, H, W), body_parts=None, head=None,
                    text_features=None, ws_init=torch.zeros(2, 4, 8), bare_mask=torch.zeros(1, 1, H, W))  # fmt: skip


def test_part_and_v_maps_paste_v_like_the_parts() -> None:
    g = torch.Generator().manual_seed(0)
    out = DensePoseOutput(coarse_segm=torch.randn(1, 2, 8, 8, generator=g), fine_segm=torch.randn(1, 25, 8, 8, generator=g),
                          u=torch.rand(1, 25, 8, 8, generator=g), v=torch.rand(1, 25, 8, 8, generator=g),
                          boxes=torch.tensor([[4.0, 4.0, 12.0, 12.0]]), batch_index=torch.zeros(1, dtype=torch.int64))  # fmt: skip
    parts, v = densepose_part_and_v_maps(out, (16, 16))
    torch.testing.assert_close(parts, densepose_part_maps(out, (16, 16)))
    torch.testing.assert_close(v[:, :, 4:12, 4:12], out.v)  # the 8 x 8 grid lands one to one on its box
    assert torch.all(v[:, :, :4] == 0) and torch.all(v[:, :, :, 12:] == 0)


def test_objective_builds_the_skin_term_and_texture_skips_bare_arms() -> None:
    objective = build_objective(None, None, None, None, weights={"img": 1.0, "skin": 2.0}, regularizer="none")
    assert objective.active == ["img", "skin"]

    class Gallery(torch.nn.Module):
        pass

    term = TextureTerm(torch.nn.Identity(), Gallery())  # forward only reads the targets' statistics
    generated = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(1))
    mean, cov = torch.zeros(1, 27), torch.eye(27)[None]
    bare = torch.zeros(1, 1, H, W)
    bare[..., :8, :] = 1
    base = dict(photo=torch.zeros(1, 3, H, W), keep_mask=torch.zeros(1, 1, H, W), body_parts=None, head=None,
                text_features=None, ws_init=torch.zeros(1, 4, 8), texture_mean=mean, texture_covariance=cov)  # fmt: skip
    whole = term(generated, None, EditTargets(**base))
    covered = term(generated, None, EditTargets(**base, bare_mask=bare))
    only_bottom = EditTargets(**(base | {"keep_mask": bare}))
    assert not torch.isclose(whole, covered)
    torch.testing.assert_close(covered, term(generated, None, only_bottom))


@pytest.fixture(scope="module")
def demo():
    from ficekit.pipeline import FicePipeline

    return FicePipeline.from_bundle("demo", device="cpu")


def test_demo_pipeline_marks_bare_arms_only_for_an_instruction_with_a_sleeve(demo) -> None:
    from ficekit.inputs import as_photos
    from ficekit.instruction import parse_instruction
    from ficekit.settings import edit_settings

    path = demo.bundle.root / "examples" / "person1.png"  # a short-sleeved top
    x, _ = demo.frame(as_photos(str(path))[0])
    settings = edit_settings(demo.bundle.defaults, weights={"skin": 10.0})
    sleeveless = demo.perceive(x, [parse_instruction("red sleeveless top")], settings)
    off = edit_settings(demo.bundle.defaults, weights={"skin": 0.0})
    assert demo.perceive(x, [parse_instruction("red sleeveless top")], off).bare is None  # term off: masks as before
    assert sleeveless.bare is not None and sleeveless.skin_rgb is not None
    assert torch.all(sleeveless.bare <= sleeveless.edit + 1e-6)  # only inside the edit region
    assert float(sleeveless.bare.sum()) > 20  # both upper arms
    skin = sleeveless.skin_rgb[0]
    assert float(skin[0]) > float(skin[2])  # a skin tone (red above blue), not the garment's purple or the background
    assert demo.perceive(x, [parse_instruction("red shirt")], settings).bare is None  # no sleeve named: nothing bare
    result = demo.edit(x[0], "red sleeveless top", iterations=2, weights={"skin": 1.0}, progress=False)
    assert "skin" in result.history and len(result.history["skin"]) == 3
