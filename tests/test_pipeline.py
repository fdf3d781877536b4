"""FicePipeline end to end on a tiny randomly initialised bundle (real file formats, random weights)."""

import dataclasses
import logging
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ficekit.pipeline import EditSettings, FicePipeline, edit_settings, objective_weights
from ficekit.random_bundle import write_random_bundle


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> FicePipeline:
    bundle = write_random_bundle(tmp_path_factory.mktemp("bundle") / "tiny", preset="tiny", seed=0)
    return FicePipeline.from_bundle(bundle, device="cpu")


def _photos(*sizes):
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, h, w, generator=g) for h, w in sizes]


def test_edit_shapes_history_and_timings(pipe):
    photos = _photos((48, 40), (32, 64))
    result = pipe.edit(photos, "striped cotton shirt", iterations=3, progress=False)
    assert [tuple(im.shape) for im in result.images] == [(3, 48, 40), (3, 32, 64)]
    r = pipe.resolution
    assert result.generated.shape == (2, 3, r, r)
    assert result.masks.blend.shape == (2, 1, r, r)
    assert result.ws.shape == (2, pipe.generator.num_ws, pipe.generator.w_dim)
    assert set(result.history) >= {"total", "clip", "img"} and all(len(v) == 4 for v in result.history.values())
    assert {"perception", "inversion", "optimize", "stitch", "total"} <= set(result.timings)
    assert result.instruction.category == "upper"
    assert result.names == ["images[0]", "images[1]"] and [i.category for i in result.instructions] == ["upper"] * 2


def test_fice_mode_stitches_by_fices_formula(pipe):
    photos = _photos((40, 40))
    result = pipe.edit(photos, "red dress", iterations=2, mask="fice", stitch="fice", progress=False)
    blend = result.blend_full[0]
    assert float(blend.min()) < float(blend.max())  # a real mask, not a constant
    from ficekit.outputs import full_size

    generated, _ = full_size(result, 0, photos[0])
    expected = (blend * generated + (1 - blend) * photos[0]).clamp(0, 1)  # FICE: (1 - head)·G(w) + head·photo
    torch.testing.assert_close(result.images[0], expected, atol=1e-6, rtol=0)


def test_hard_stitch_returns_the_photo_outside_the_mask(pipe, monkeypatch):
    photos = _photos((40, 48))
    real = pipe.perceive

    def left_half(x, instructions, settings):
        masks = real(x, instructions, settings)
        blend = torch.zeros_like(masks.blend)
        blend[..., : x.shape[-1] // 2] = 1
        return dataclasses.replace(masks, blend=blend)

    monkeypatch.setattr(pipe, "perceive", left_half)
    result = pipe.edit(photos, "red shirt", iterations=2, mask="auto", stitch="hard", progress=False)
    outside = (result.blend_full[0] == 0).expand(3, -1, -1)
    assert outside.any() and (~outside).any()  # both regions exist, so neither check below is vacuous
    assert torch.equal(result.images[0][outside], photos[0][outside])
    assert not torch.equal(result.images[0][~outside], photos[0][~outside])


def test_empty_auto_mask_warns_naming_the_photo_and_returns_it(pipe, monkeypatch, caplog):
    photos = _photos((32, 32), (32, 32))
    real = pipe.perceive

    def second_empty(x, instructions, settings):
        masks = real(x, instructions, settings)
        blend = masks.blend.clone()
        blend[0] = 1
        blend[1] = 0
        return dataclasses.replace(masks, blend=blend)

    monkeypatch.setattr(pipe, "perceive", second_empty)
    with caplog.at_level(logging.WARNING, logger="ficekit.pipeline"):
        result = pipe.edit(photos, "blue jeans", iterations=1, mask="auto", stitch="hard", progress=False,
                           names=["front.png", "back.png"])
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("back.png: no lower region") for m in messages)
    assert not any("front.png" in m for m in messages)
    assert torch.equal(result.images[1], photos[1])


def test_same_seed_same_result(pipe):
    photos = _photos((32, 32))
    a = pipe.edit(photos, "green sweater", iterations=3, seed=5, progress=False)
    b = pipe.edit(photos, "green sweater", iterations=3, seed=5, progress=False)
    assert torch.equal(a.ws, b.ws) and torch.equal(a.images[0], b.images[0])


def test_clip_views_are_seeded_and_change_the_path(pipe):
    photos = _photos((32, 32))
    a, b = (pipe.edit(photos, "green sweater", iterations=3, seed=5, clip_augment=2, progress=False) for _ in "ab")
    assert torch.equal(a.ws, b.ws)
    assert pipe.objective(a.settings).terms["clip"].augment == 2
    plain = pipe.edit(photos, "green sweater", iterations=3, seed=5, clip_augment=0, progress=False)
    assert not torch.equal(a.ws, plain.ws)


def test_clip_region_reaches_the_objective_and_changes_the_path(pipe):
    photos = _photos((32, 32))
    edit = pipe.edit(photos, "green sweater", iterations=3, seed=5, clip_region="edit", progress=False)
    image = pipe.edit(photos, "green sweater", iterations=3, seed=5, clip_region="image", progress=False)
    assert pipe.objective(edit.settings).terms["clip"].region == "edit"
    assert pipe.objective(image.settings).terms["clip"].region == "image"
    assert not torch.equal(edit.ws, image.ws)


def test_batches_and_rounds(pipe):
    photos = _photos((32, 32), (32, 32), (32, 32))
    result = pipe.edit(photos, "black skirt", iterations=1, batch_size=2, progress=False)
    assert len(result.images) == 3 and result.generated.shape[0] == 3 and result.ws.shape[0] == 3
    rounds = pipe.edit_rounds(photos[:1], ["red shirt", "now with stripes"], iterations=1, progress=False)
    assert len(rounds) == 2 and rounds[1].instruction.text == "red striped shirt"  # the state, not the raw text


def test_long_text_is_truncated_with_a_warning(pipe):
    text = "a shirt " + " ".join(["very"] * 120)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe.edit(_photos((32, 32)), text, iterations=1, progress=False)
    assert any("truncat" in str(w.message).lower() for w in caught)


def test_settings_merge_and_validation(pipe):
    s = pipe.settings(iterations=7, weights={"img": 3.0})
    assert s.clip_augment == pipe.bundle.defaults.clip_augment and pipe.settings(clip_augment=3).clip_augment == 3
    assert s.iterations == 7 and s.weights["img"] == 3.0 and s.weights["clip"] == 1.0
    assert edit_settings(pipe.bundle.defaults, lr=None).lr == pipe.bundle.defaults.lr
    with pytest.raises(ValueError, match="unknown edit setting"):
        pipe.settings(iterationz=3)
    for bad, match in [({"iterations": 0}, "iterations"), ({"lr": 0}, "lr"), ({"mask": "x"}, "mask"),
                       ({"stitch": "x"}, "stitch"), ({"regularizer": "x"}, "regularizer"),
                       ({"batch_size": 0}, "batch_size"), ({"weights": {"img": -1}}, "weight"),
                       ({"clip_augment": -2}, "clip_augment")]:
        with pytest.raises(ValueError, match=match):
            pipe.settings(**bad)
    assert isinstance(s, EditSettings)


def test_regularizer_weight_follows_the_chosen_regularizer():
    fice = {"clip": 1.0, "img": 30.0, "w_delta": 2.0}
    assert objective_weights(fice, "w_delta") == fice
    assert objective_weights(fice, "pn") == {"clip": 1.0, "img": 30.0, "pn": 2.0}
    assert objective_weights({**fice, "pn": 5.0}, "pn") == {"clip": 1.0, "img": 30.0, "pn": 5.0}
    assert objective_weights(fice, "none") == {"clip": 1.0, "img": 30.0}


def test_bad_images_are_refused(pipe):
    with pytest.raises(ValueError, match=r"expected a \[3, H, W\] RGB image, got shape \[4, 32, 32\]"):
        pipe.edit(torch.rand(1, 4, 32, 32), "shirt", iterations=1, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipe.edit(torch.rand(1, 3, 32, 32) * 255, "shirt", iterations=1, progress=False)
    with pytest.raises(ValueError, match="empty"):
        pipe.edit(torch.rand(1, 3, 32, 32), "   ", iterations=1, progress=False)


def test_edit_masks_are_the_masks_the_edit_uses(pipe):
    photos = _photos((48, 40), (32, 64))
    for mode in ("fice", "auto"):
        masks = pipe.edit_masks(photos, "red dress", mask=mode)
        result = pipe.edit(photos, "red dress", iterations=1, mask=mode, progress=False)
        assert [tuple(m.shape) for m in masks] == [(1, 48, 40), (1, 32, 64)]
        for mask, blend in zip(masks, result.blend_full, strict=True):
            torch.testing.assert_close(mask, blend)


def test_inputs_in_every_form_and_outputs_as_asked(pipe, tmp_path):
    photo = _photos((40, 32))[0]
    as_uint8 = (photo * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    exact = as_uint8.astype(np.float32).transpose(2, 0, 1) / 255
    path = tmp_path / "me.png"
    Image.fromarray(as_uint8).save(path)
    forms = [Image.fromarray(as_uint8), path, str(path), as_uint8, torch.from_numpy(exact), torch.from_numpy(exact)[None]]
    results = [pipe.edit(form, "red shirt", iterations=1, progress=False) for form in forms]
    for result in results[1:]:
        assert torch.equal(result.images[0], results[0].images[0])
    assert results[1].names == [str(path)]
    listed = pipe.edit([Image.fromarray(as_uint8), path], "red shirt", iterations=1, progress=False)
    assert len(listed.images) == 2  # optimised together: equal up to float rounding of a batch of two
    torch.testing.assert_close(listed.images[1], results[0].images[0], atol=1e-3, rtol=0)
    pil = pipe.edit(path, "red shirt", iterations=1, progress=False, output_type="pil").images[0]
    assert isinstance(pil, Image.Image) and pil.size == (32, 40)
    array = pipe.edit(path, "red shirt", iterations=1, progress=False, output_type="np").images[0]
    assert array.shape == (40, 32, 3) and array.dtype == np.float32
    np.testing.assert_allclose(np.asarray(pil), np.round(array * 255), atol=0)
    with pytest.raises(ValueError, match="output_type"):
        pipe.edit(path, "red shirt", iterations=1, progress=False, output_type="tf")


def test_non_finite_pixels_are_refused_by_name(pipe):
    photo = _photos((32, 32))[0]
    photo[0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match=r"images\[1\]: 1 pixel value\(s\) are NaN"):
        pipe.edit([_photos((32, 32))[0], photo], "red shirt", iterations=1, progress=False)


def test_seeding_leaves_the_callers_random_stream_alone(pipe):
    photos = _photos((32, 32))
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    pipe.edit(photos, "green sweater", iterations=2, clip_augment=2, progress=False)
    assert torch.equal(torch.rand(4), expected)  # the edit did not touch the global RNG

    def run(generator):
        return pipe.edit(photos, "green sweater", iterations=2, clip_augment=2, progress=False, generator=generator)

    a, b = run(torch.Generator().manual_seed(7)), run(torch.Generator().manual_seed(7))
    c = run(torch.Generator().manual_seed(8))
    assert torch.equal(a.ws, b.ws) and not torch.equal(a.ws, c.ws)
    with pytest.raises(ValueError, match="torch.Generator"):
        run(7)


def test_step_callbacks_reach_the_loop(pipe):
    seen = []
    result = pipe.edit(_photos((32, 32)), "red shirt", iterations=4, progress=False,
                       callback=lambda step, ws, generated, losses: seen.append((step, generated.shape, losses["total"])),
                       callback_every=2)
    assert [s for s, _, _ in seen] == [0, 2, 4]
    assert seen[0][1] == (1, 3, pipe.resolution, pipe.resolution)
    assert [t for _, _, t in seen] == [result.history["total"][s] for s in (0, 2, 4)]
    with pytest.raises(ValueError, match="callback_every"):
        pipe.edit(_photos((32, 32)), "red shirt", iterations=1, progress=False, callback=print, callback_every=0)


def test_each_photo_gets_its_own_zero_shot_category(pipe, monkeypatch):
    """A text naming no garment: each photo is masked for its own category, exactly as when masked alone."""
    import ficekit.pipeline as pipeline_module

    photos = _photos((32, 32), (32, 32))
    choice = {id(photos[0]): "upper", id(photos[1]): "lower"}
    order = []

    def classify(clip, x, text):
        if x.shape[0] == 2:
            return ["upper", "lower"]
        return [order.pop(0)]

    monkeypatch.setattr(pipeline_module, "classify_category", classify)
    result = pipe.edit(photos, "something red", iterations=1, mask="auto", progress=False)
    assert [i.category for i in result.instructions] == ["upper", "lower"]
    for photo, blend in zip(photos, result.blend_full, strict=True):
        order.append(choice[id(photo)])
        alone = pipe.edit_masks([photo], "something red", mask="auto")[0]
        torch.testing.assert_close(alone, blend)
    assert result.masks.category is None  # the categories differ


def test_batches_join_timings_by_stage(pipe):
    result = pipe.edit(_photos((32, 32), (32, 32), (32, 32)), "red shirt", iterations=2, batch_size=2, progress=False)
    assert result.timings["seconds_per_iteration"] < result.timings["optimize"] / 3 + 1e-9  # a mean, not a sum
    assert result.names == ["images[0]", "images[1]", "images[2]"]


def test_to_moves_every_model(pipe):
    assert pipe.to("cpu") is pipe and pipe.device.type == "cpu"
    for bad in ("tpu", "mps", "cuda:banana"):
        with pytest.raises(ValueError, match="expected auto, cpu, cuda or cuda:N|not supported|not a device"):
            pipe.to(bad)


def test_public_api_imports():
    import ficekit

    for name in ("FicePipeline", "EditResult", "EditSettings", "load_bundle", "EditSession"):
        assert getattr(ficekit, name).__name__ == name
    with pytest.raises(AttributeError):
        ficekit.NotAThing  # noqa: B018


def test_perception_every_reaches_the_loop(pipe):
    """perception_every=3: the DensePose and segmenter terms hold their value between their steps (0, 3, final)."""
    photo = _photos((32, 32))
    spaced = pipe.edit(photo, "red shirt", iterations=4, perception_every=3, progress=False)
    every = pipe.edit(photo, "red shirt", iterations=4, progress=False)
    for name in ("shape", "head_shape"):
        held = spaced.history[name]
        assert held[1] == held[2] == held[0] and held[3] != held[2]
        assert held[0] == every.history[name][0] and held[1] != every.history[name][1]  # held, not re-evaluated
    assert spaced.settings.perception_every == 3 and every.settings.perception_every == 1
