"""Exemplar collage guidance: the collage of known pictures, the term's value and gradient, the gallery's pictures
(stored and redrawn), the objective's wiring (prepare, retarget, weights), and the collage start (the encoder's
latent of the photo with the collage pasted in)."""

from __future__ import annotations

import pytest
import torch

from ficekit.collage import CollageTerm, collage_composite, exemplar_collage, text_collage
from ficekit.objective import EditTargets, Objective, build_objective
from ficekit.texture import TextureGallery, load_gallery, texture_statistics


def plain(rgb: tuple[float, float, float], size: int = 8) -> torch.Tensor:
    return torch.tensor(rgb)[:, None, None].expand(3, size, size).clone()


def test_each_pixel_comes_from_the_first_exemplar_that_covers_it():
    red, blue = plain((1, 0, 0)), plain((0, 0, 1))
    left, everything = torch.zeros(1, 8, 8), torch.ones(1, 8, 8)
    left[:, :, :4] = 1
    collage = exemplar_collage(torch.stack([red, blue]), torch.stack([left, everything]))
    assert collage.shape == (1, 3, 8, 8)
    assert torch.equal(collage[0, :, :, :4], red[:, :, :4]) and torch.equal(collage[0, :, :, 4:], blue[:, :, 4:])
    # rank order matters: blue first covers every pixel
    assert torch.equal(exemplar_collage(torch.stack([blue, red]), torch.stack([everything, left]))[0], blue)


def test_uncovered_pixels_take_their_filled_neighbours_colours():
    image = torch.zeros(1, 3, 5, 5)
    image[0, :, 2, 2] = torch.tensor([0.2, 0.4, 0.6])
    mask = torch.zeros(1, 1, 5, 5)
    mask[0, 0, 2, 2] = 1
    collage = exemplar_collage(image, mask)  # one covered pixel spreads over the whole frame
    assert torch.allclose(collage[0], torch.tensor([0.2, 0.4, 0.6])[:, None, None].expand(3, 5, 5))
    one_ring = exemplar_collage(image, mask, max_growth=1)
    assert torch.allclose(one_ring[0, :, 1:4, 1:4], collage[0, :, 1:4, 1:4]) and one_ring[0, :, 0].abs().sum() == 0
    assert exemplar_collage(image, torch.zeros(1, 1, 5, 5)).abs().sum() == 0  # no garment anywhere: zeros
    with pytest.raises(ValueError, match="masks: expected"):
        exemplar_collage(image, torch.zeros(1, 1, 4, 5))


def pictures_gallery() -> TextureGallery:
    """Two garments with stored pictures: red on the left half (feature e0), blue everywhere (feature e1)."""
    red, blue = plain((1, 0, 0)), plain((0, 0, 1))
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, :, :, :4] = 1
    masks[1] = 1
    images = torch.stack([red, blue])
    means, covariances = texture_statistics(images, masks)
    return TextureGallery(torch.eye(2, 4), means, covariances, source="test",
                          images=(images * 255).round().to(torch.uint8), masks=masks.bool())  # fmt: skip


class KeywordClip(torch.nn.Module):
    """encode_text: 'red' -> e0 + 0.5 e1 (ranks red first, blue second), else e1."""

    def encode_text(self, texts):
        texts = [texts] if isinstance(texts, str) else texts
        return torch.stack([torch.tensor([1.0, 0.5, 0, 0]) if "red" in t else torch.eye(4)[1] for t in texts])


def test_term_is_the_masked_mse_to_the_collage_inside_the_edit_region():
    objective = Objective({"collage": CollageTerm(KeywordClip(), pictures_gallery(), exemplars=2)})
    photo = torch.zeros(1, 3, 8, 8)
    keep = torch.ones(1, 1, 8, 8)
    keep[:, :, :, 2:6] = 0  # edit columns 2..5
    targets = objective.prepare(photo, keep, ["red top"], torch.zeros(1, 4, 8))
    assert isinstance(targets, EditTargets) and targets.collage.shape == (1, 3, 8, 8)
    expected = torch.cat([plain((1, 0, 0))[:, :, :4], plain((0, 0, 1))[:, :, 4:]], dim=2)
    assert torch.equal(targets.collage[0], expected)
    zeros = torch.zeros(1, 4, 8)
    assert objective(expected[None], zeros, targets).total.item() == 0
    # black everywhere: each of the 32 edited pixels is off by 1 in one channel -> 32 / (3 * 64)
    assert objective(photo, zeros, targets).total.item() == pytest.approx(32 / 192)
    bare = torch.zeros(1, 1, 8, 8)
    bare[:, :, :, 2:4] = 1  # bare arms are left to the skin term
    assert objective(photo, zeros, objective.retarget(targets, ["red top"], zeros, bare_mask=bare)).total.item() \
        == pytest.approx(16 / 192)
    blue = objective.retarget(targets, ["blue top"], zeros)  # a follow-up's text builds its own collage
    assert torch.equal(blue.collage[0], plain((0, 0, 1)))
    image = photo.clone().requires_grad_(True)
    objective(image, zeros, targets).total.backward()
    assert image.grad[0, :, :, :2].abs().sum() == 0 and image.grad[0, :, :, 2:6].abs().sum() > 0


def test_term_needs_pictures_and_the_objective_a_gallery(tmp_path):
    statistics_only = TextureGallery(torch.eye(2, 4), *texture_statistics(torch.zeros(2, 3, 8, 8),
                                                                          torch.ones(2, 1, 8, 8)))  # fmt: skip
    with pytest.raises(ValueError, match="needs a gallery with its pictures"):
        CollageTerm(KeywordClip(), statistics_only)
    with pytest.raises(ValueError, match="'collage' term has weight 1.0 but gallery is None"):
        build_objective(None, KeywordClip(), None, None, weights={"collage": 1.0, "img": 1.0}, regularizer="none")
    objective = build_objective(None, KeywordClip(), None, None, weights={"img": 1.0, "collage": 1.0},
                                regularizer="none", gallery=pictures_gallery())  # fmt: skip
    assert objective.active == ["img", "collage"]


def test_a_version_1_gallery_file_still_loads_without_pictures(tmp_path):
    gallery = pictures_gallery()
    torch.save({"format": "ficekit-texture-gallery", "version": 1, "source": "old",
                "clip_features": gallery.clip_features.half(), "means": gallery.means.half(),
                "covariances": gallery.covariances.half()}, tmp_path / "v1.pt")  # fmt: skip
    loaded = load_gallery(tmp_path / "v1.pt")
    assert len(loaded) == 2 and not loaded.has_pictures
    with pytest.raises(ValueError, match="statistics only"):
        loaded.exemplar_pictures([0])


def test_stored_pictures_survive_the_gallery_file(tmp_path):
    gallery = pictures_gallery()
    gallery.save(tmp_path / "gallery.pt")
    loaded = load_gallery(tmp_path / "gallery.pt")
    assert loaded.has_pictures
    images, masks = loaded.exemplar_pictures([1, 0])
    assert torch.equal(images[0], plain((0, 0, 1))) and torch.equal(masks[1], gallery.masks[0].float())
    with pytest.raises(ValueError, match="give both images and masks"):
        TextureGallery(gallery.clip_features, gallery.means, gallery.covariances, images=gallery.images)
    with pytest.raises(ValueError, match="images must be uint8"):
        TextureGallery(gallery.clip_features, gallery.means, gallery.covariances, images=gallery.images.float(),
                       masks=gallery.masks)  # fmt: skip


def test_a_synthetic_gallery_redraws_its_pictures_from_render_seeds(tmp_path):
    from ficekit.synthetic.render import render

    samples = [render(seed, size=32, world="v2") for seed in (11, 12)]  # a dress, and a top over trousers
    slots = ["dress", "upper"]
    images = torch.stack([s.to_tensor() for s in samples])
    masks = torch.stack([torch.from_numpy(s.mask(slot))[None].float() for s, slot in zip(samples, slots, strict=True)])
    renders = {"world": "v2", "size": 32, "people": [11, 12], "slots": slots}
    gallery = TextureGallery(torch.eye(2, 4), *texture_statistics(images, masks), renders=renders)
    gallery.save(tmp_path / "gallery.pt")
    loaded = load_gallery(tmp_path / "gallery.pt")
    redrawn, redrawn_masks = loaded.exemplar_pictures([1, 0])
    assert torch.equal(redrawn, images.flip(0)) and torch.equal(redrawn_masks, masks.flip(0))
    assert redrawn_masks.sum() > 0
    with pytest.raises(ValueError, match="expected 2 people and slots"):
        TextureGallery(torch.eye(2, 4), *texture_statistics(images, masks), renders={**renders, "people": [11]})


def test_demo_gallery_has_its_pictures():
    from ficekit.bundle import load_bundle

    bundle = load_bundle("demo")
    gallery = bundle.load("gallery")
    assert gallery.has_pictures
    images, masks = gallery.exemplar_pictures([0])
    assert images.shape == (1, 3, 64, 64) and masks.sum() >= 16  # an edited garment covers at least 16 pixels


def test_demo_edits_use_the_collage_by_default_and_collage_0_turns_it_off():
    from ficekit import FicePipeline

    pipe = FicePipeline.from_bundle("demo", device="cpu")
    assert "collage" in pipe.objective(pipe.settings()).active
    off = pipe.settings(weights={**pipe.settings().weights, "collage": 0})
    assert "collage" not in pipe.objective(off).active


def test_text_collage_is_the_terms_collage_and_needs_pictures():
    clip, gallery = KeywordClip(), pictures_gallery()
    collage = text_collage(clip, gallery, "red top", (8, 8), exemplars=2)
    expected = torch.cat([plain((1, 0, 0))[:, :, :4], plain((0, 0, 1))[:, :, 4:]], dim=2)
    assert torch.equal(collage[0], expected)
    assert text_collage(clip, gallery, ["red top"], (16, 16), exemplars=2).shape == (1, 3, 16, 16)  # resized
    statistics_only = TextureGallery(gallery.clip_features, gallery.means, gallery.covariances)
    with pytest.raises(ValueError, match="statistics only"):
        text_collage(clip, statistics_only, "red top", (8, 8))


def test_composite_keeps_the_photo_pastes_the_collage_and_paints_bare_arms_with_skin():
    photo, collage = plain((0.0, 1.0, 0.0))[None], plain((1.0, 0.0, 0.0))[None]
    keep = torch.ones(1, 1, 8, 8)
    keep[:, :, 2:, :] = 0  # rows 2.. are edited
    bare = torch.zeros(1, 1, 8, 8)
    bare[:, :, 6:, :] = 1  # rows 6.. are bare arms
    skin = torch.tensor([[0.8, 0.6, 0.4]])
    composite = collage_composite(photo, keep, collage, bare, skin)
    assert torch.equal(composite[0, :, :2], photo[0, :, :2])
    assert torch.equal(composite[0, :, 2:6], collage[0, :, 2:6])
    assert torch.allclose(composite[0, :, 6:], skin[0][:, None, None].expand(3, 2, 8))
    assert torch.equal(collage_composite(photo, keep, collage)[0, :, 6:], collage[0, :, 6:])  # no bare mask
    with pytest.raises(ValueError, match="keep: expected"):
        collage_composite(photo, keep[:, :, :4], collage)
    with pytest.raises(ValueError, match="collage: expected"):
        collage_composite(photo, keep, collage[:, :, :4])


def test_collage_start_is_the_inversion_moved_by_the_encoders_step_to_the_composite(demo_pipe):
    from ficekit.inputs import as_photos

    pipe = demo_pipe
    assert pipe.settings().start == "collage"  # the demo's default
    photo = pipe.bundle.example_images[0]
    edit = pipe.edit(photo, "red striped t-shirt", iterations=1, progress=False)
    masks = edit.masks
    x, _ = pipe.frame(as_photos(photo)[0])
    with torch.no_grad():
        inverted = pipe.encoder(x)
        collage = text_collage(pipe.clip, pipe.gallery, "red striped t-shirt", (64, 64))
        composite = collage_composite(x, masks.keep, collage, masks.bare, masks.skin_rgb)
        expected = pipe.encoder(composite)
    assert torch.allclose(edit.ws_init, expected, atol=1e-5)  # for e4e, the encoder's latent of the composite
    assert (edit.ws_init - inverted).abs().max() > 0.1  # not where FICE starts
    fice = pipe.edit(photo, "red striped t-shirt", iterations=1, progress=False, start="inversion")
    assert torch.equal(fice.ws_init, inverted)


def test_collage_start_needs_a_gallery_with_pictures(demo_pipe):
    import dataclasses

    pipe = demo_pipe
    saved = pipe.gallery
    try:
        pipe.gallery = TextureGallery(saved.clip_features, saved.means, saved.covariances)  # statistics only
        with pytest.raises(ValueError, match="start='collage'.*no gallery with pictures"):
            pipe.settings()
        assert pipe.settings(start="inversion").start == "inversion"
    finally:
        pipe.gallery = saved
    with pytest.raises(ValueError, match="start must be one of"):
        pipe.settings(start="photo")
    assert dataclasses.replace(pipe.settings(), start="inversion").validate().start == "inversion"
