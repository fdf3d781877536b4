"""FicePipeline end to end on a tiny randomly initialised bundle (real file formats, random weights)."""

import warnings

import pytest
import torch

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
    assert {"perception", "encoder", "optimize", "stitch", "total"} <= set(result.timings)
    assert result.instruction.category == "upper"


def test_fice_mode_returns_the_photo_outside_the_blend_mask(pipe):
    photos = _photos((40, 40))
    result = pipe.edit(photos, "red dress", iterations=2, mask="fice", stitch="fice", progress=False)
    outside = (result.blend_full[0] == 0).expand(3, -1, -1)
    assert torch.equal(result.images[0][outside], photos[0][outside])
    # FICE's stitch everywhere: blend * G(w) + (1 - blend) * photo at the photo's size
    assert result.images[0].shape == photos[0].shape


def test_empty_auto_mask_warns_and_returns_the_photo(pipe):
    photos = _photos((32, 32))
    with pytest.warns(UserWarning, match="edit region .* is empty"):
        result = pipe.edit(photos, "blue jeans", iterations=1, mask="auto", stitch="hard", progress=False)
    if not bool((result.blend_full[0] > 0).any()):
        assert torch.equal(result.images[0], photos[0])


def test_same_seed_same_result(pipe):
    photos = _photos((32, 32))
    a = pipe.edit(photos, "green sweater", iterations=3, seed=5, progress=False)
    b = pipe.edit(photos, "green sweater", iterations=3, seed=5, progress=False)
    assert torch.equal(a.ws, b.ws) and torch.equal(a.images[0], b.images[0])


def test_clip_views_are_seeded_and_change_the_path(pipe):
    photos = _photos((32, 32))
    a, b = (pipe.edit(photos, "green sweater", iterations=3, seed=5, clip_augment=2, progress=False) for _ in "ab")
    assert torch.equal(a.ws, b.ws)
    assert pipe._objective(a.settings).terms["clip"].augment == 2
    plain = pipe.edit(photos, "green sweater", iterations=3, seed=5, clip_augment=0, progress=False)
    assert not torch.equal(a.ws, plain.ws)


def test_batches_and_rounds(pipe):
    photos = _photos((32, 32), (32, 32), (32, 32))
    result = pipe.edit(photos, "black skirt", iterations=1, batch_size=2, progress=False)
    assert len(result.images) == 3 and result.generated.shape[0] == 3 and result.ws.shape[0] == 3
    rounds = pipe.edit_rounds(photos[:1], ["red shirt", "now with stripes"], iterations=1, progress=False)
    assert len(rounds) == 2 and rounds[1].instruction.text == "now with stripes"


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
                       ({"batch_size": 0}, "batch size"), ({"weights": {"img": -1}}, "weight"),
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
    with pytest.raises(ValueError, match="dimension 1"):
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
