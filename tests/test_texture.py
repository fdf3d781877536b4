"""Exemplar texture guidance: statistics with known values, retrieval, the objective term, the gallery file."""

from __future__ import annotations

import pytest
import torch

from ficekit.texture import (
    CHANNELS,
    TextureGallery,
    TextureTerm,
    load_gallery,
    texture_distance,
    texture_statistics,
)


def stripes(horizontal: bool, size: int = 32, period: int = 4) -> torch.Tensor:
    """[1, 3, size, size] black-and-white stripes."""
    line = (torch.arange(size) // (period // 2) % 2).float()
    grid = line[:, None].expand(size, size) if horizontal else line[None, :].expand(size, size)
    return grid.expand(1, 3, size, size).clone()


def full_mask(size: int = 32) -> torch.Tensor:
    return torch.ones(1, 1, size, size)


def test_plain_colour_has_its_colour_as_mean_and_no_covariance():
    image = torch.tensor([0.2, 0.5, 0.8])[None, :, None, None].expand(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1  # inside, away from the zero padding at the border
    mean, cov = texture_statistics(image, mask)
    assert mean.shape == (1, CHANNELS) and cov.shape == (1, CHANNELS, CHANNELS)
    assert torch.allclose(mean[0, :3], torch.tensor([0.2, 0.5, 0.8]))
    assert mean[0, 3:].abs().max() < 1e-6
    assert cov.abs().max() < 1e-6


def test_horizontal_stripes_respond_to_the_vertical_derivative_only():
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 4:28, 4:28] = 1
    _, cov = texture_statistics(stripes(horizontal=True), mask)
    # channels 3..14: scale 1, colour c, filters (0°: d/dx, 90°: d/dy, 45°, 135°) -> index 3 + 4c + f
    dx, dy = 3, 4
    assert cov[0, dy, dy] > 0.05
    assert cov[0, dx, dx] < 1e-8
    _, cov_v = texture_statistics(stripes(horizontal=False), mask)
    assert cov_v[0, dx, dx] > 0.05 and cov_v[0, dy, dy] < 1e-8


def test_distance_is_zero_for_equal_statistics_and_known_for_a_mean_shift():
    mean, cov = texture_statistics(stripes(True), full_mask())
    assert texture_distance(mean, cov, mean, cov).item() == 0
    shifted = mean.clone()
    shifted[0, 0] += 0.1  # (0.1)² / MEAN_SCALE = 1
    assert texture_distance(mean, cov, shifted, cov).item() == pytest.approx(1.0)


def test_a_horizontal_exemplar_is_closer_to_horizontal_than_to_vertical_stripes():
    target = texture_statistics(stripes(True, period=6), full_mask())
    same = texture_distance(*texture_statistics(stripes(True), full_mask()), *target)
    other = texture_distance(*texture_statistics(stripes(False), full_mask()), *target)
    assert same < other


def statistics_of(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat(images)
    return texture_statistics(x, torch.ones(len(images), 1, *x.shape[2:]))


def tiny_gallery() -> TextureGallery:
    """Two garments: horizontal stripes (feature e0) and vertical stripes (feature e1)."""
    means, covs = statistics_of([stripes(True), stripes(False)])
    return TextureGallery(torch.eye(2, 4), means, covs, source="test")


def test_gallery_retrieves_the_garments_that_match_the_text():
    gallery = tiny_gallery()
    mean, cov = gallery.exemplar_statistics(torch.tensor([[0.1, 1.0, 0.0, 0.0]]), k=1)
    assert torch.equal(mean, gallery.means[1:2]) and torch.equal(cov, gallery.covariances[1:2])
    both, _ = gallery.exemplar_statistics(torch.tensor([[1.0, 1.0, 0.0, 0.0]]), k=5)  # k is capped at M
    assert torch.allclose(both, gallery.means.mean(0, keepdim=True))
    with pytest.raises(ValueError, match="gallery's CLIP"):
        gallery.exemplar_statistics(torch.ones(1, 3))


def test_gallery_file_round_trip_and_bad_files(tmp_path):
    gallery = tiny_gallery()
    path = tmp_path / "gallery.pt"
    gallery.save(path)
    loaded = load_gallery(path)
    assert len(loaded) == 2 and loaded.source == "test"
    assert torch.allclose(loaded.means, gallery.means, atol=1e-3)
    assert not any(b.requires_grad for b in loaded.buffers())
    (tmp_path / "other.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable texture gallery"):
        load_gallery(tmp_path / "other.pt")
    torch.save({"format": "something"}, tmp_path / "dict.pt")
    with pytest.raises(ValueError, match="not a texture gallery"):
        load_gallery(tmp_path / "dict.pt")
    with pytest.raises(ValueError, match="gallery statistics"):
        TextureGallery(torch.eye(2, 4), gallery.means[:, :5], gallery.covariances)


class KeywordClip(torch.nn.Module):
    """encode_text: 'horizontal' -> e0, else e1 (the tiny gallery's features)."""

    def encode_text(self, texts):
        texts = [texts] if isinstance(texts, str) else texts
        return torch.stack([torch.eye(4)[0 if "horizontal" in t else 1] for t in texts])


def test_term_pulls_the_edit_region_toward_the_texts_exemplars():
    from ficekit.objective import EditTargets, Objective

    objective = Objective({"texture": TextureTerm(KeywordClip(), tiny_gallery(), exemplars=1)})
    photo = stripes(False)
    keep = torch.zeros(1, 1, 32, 32)  # edit everything
    targets = objective.prepare(photo, keep, ["horizontal stripes"], torch.zeros(1, 4, 8))
    assert isinstance(targets, EditTargets) and targets.texture_mean.shape == (1, CHANNELS)
    zeros = torch.zeros(1, 4, 8)
    assert objective(stripes(True), zeros, targets).total.item() == pytest.approx(0, abs=1e-6)
    assert objective(stripes(False), zeros, targets).total.item() > 1
    follow_up = objective.retarget(targets, ["vertical stripes"], zeros)  # a new text retrieves new exemplars
    assert objective(stripes(False), zeros, follow_up).total.item() == pytest.approx(0, abs=1e-6)
    image = stripes(False).requires_grad_(True)
    objective(image, zeros, targets).total.backward()
    assert image.grad.abs().sum() > 0
    keep_all = objective.retarget(targets, ["horizontal stripes"], zeros, keep_mask=torch.ones(1, 1, 32, 32))
    # nothing to edit: the edit region is empty, so its statistics are zeros and the distance is the target's own
    assert torch.isfinite(objective(stripes(False), zeros, keep_all).total)


def test_objective_needs_a_gallery_for_a_texture_weight():
    from ficekit.objective import build_objective

    with pytest.raises(ValueError, match="'texture' term has weight 0.3 but gallery is None"):
        build_objective(None, KeywordClip(), None, None, weights={"texture": 0.3, "img": 1.0}, regularizer="none")
    objective = build_objective(None, KeywordClip(), None, None, weights={"texture": 0.3, "img": 1.0},
                                regularizer="none", gallery=tiny_gallery())  # fmt: skip
    assert objective.active == ["img", "texture"]


def test_demo_bundle_ships_a_gallery_for_its_clip():
    from ficekit.bundle import load_bundle

    bundle = load_bundle("demo")
    gallery = bundle.load("gallery")
    clip = bundle.load("clip")
    assert len(gallery) >= 1000
    assert gallery.clip_features.shape[1] == clip.encode_text(["red t-shirt"]).shape[1]
    assert bundle.defaults.weights.get("collage", 0) > 0  # its pictures make the collage term and start
    assert bundle.defaults.weights.get("texture", 0) == 0  # off by default: with the collage it smears (README)


def test_build_gallery_adds_a_verified_gallery_to_a_bundle_folder(tmp_path):
    import shutil

    from ficekit.bundle import load_bundle
    from ficekit.synthetic.build_gallery import main

    source = load_bundle("demo")
    folder = tmp_path / "bundle"
    shutil.copytree(source.root, folder)
    assert main(["--bundle", str(folder), "--n", "3", "--texture-weight", "0.5", "--collage-weight", "20",
                 "--overwrite", "--quiet"]) == 0  # fmt: skip
    bundle = load_bundle(folder)
    gallery = bundle.load("gallery")
    assert len(gallery) == 3 and bundle.defaults.weights["texture"] == 0.5 and bundle.defaults.weights["collage"] == 20
    images, masks = gallery.exemplar_pictures([0, 1, 2])  # redrawn from the recorded render seeds
    assert torch.allclose(texture_statistics(images, masks)[0], gallery.means, atol=2e-3)
    assert bundle.provenance["training"]["gallery"]["renders"] == 3
    assert torch.isfinite(gallery.covariances).all() and gallery.means[:, :3].min() >= 0
    with pytest.raises(SystemExit) as exit_info:  # an existing gallery is kept without --overwrite
        main(["--bundle", str(folder), "--n", "3", "--quiet"])
    assert exit_info.value.code == 2
