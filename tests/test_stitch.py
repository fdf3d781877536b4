"""Stitching: the photo survives bit for bit outside the blend region; each method's own rule."""

from __future__ import annotations

import pytest
import torch

from ficekit.stitch import (
    STITCH_METHODS,
    default_levels,
    feather_mask,
    gaussian_pyramid,
    laplacian_pyramid,
    reconstruct_pyramid,
    stitch,
)


def _images(n: int = 2, h: int = 40, w: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random photo, generated image and a mask with exact 0s, exact 1s and soft values in between."""
    g = torch.Generator().manual_seed(seed)
    photo = torch.rand(n, 3, h, w, generator=g)
    generated = torch.rand(n, 3, h, w, generator=g)
    blend = torch.rand(n, 1, h, w, generator=g)
    blend = torch.where(blend < 0.3, torch.zeros_like(blend), blend)
    blend = torch.where(blend > 0.8, torch.ones_like(blend), blend)
    blend[:, :, : h // 3] = 0  # a large region to keep, plus scattered zeros elsewhere
    return photo, generated, blend


def _disc(h: int, w: int, radius: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) <= radius**2).float().view(1, 1, h, w)


@pytest.mark.parametrize("method", STITCH_METHODS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_photo_unchanged_where_blend_is_zero(method: str, seed: int) -> None:
    photo, generated, blend = _images(seed=seed)
    out = stitch(photo, generated, blend, method=method)
    assert out.shape == photo.shape and out.dtype == photo.dtype
    outside = (blend == 0).expand_as(photo)
    assert outside.any() and (~outside).any()
    assert torch.equal(out[outside], photo[outside])


@pytest.mark.parametrize("method", STITCH_METHODS)
def test_photo_unchanged_in_float64_and_with_options(method: str) -> None:
    photo, generated, blend = (t.double() for t in _images(n=1, h=33, w=17, seed=5))
    opts = {"hard": {"threshold": 0.9}, "feather": {"radius": 3}, "laplacian": {"levels": 4}}.get(method, {})
    out = stitch(photo, generated, blend, method=method, **opts)
    outside = (blend == 0).expand_as(photo)
    assert out.dtype == torch.float64
    assert torch.equal(out[outside], photo[outside])


def test_fice_is_the_formula_exactly() -> None:
    photo, generated, blend = _images()
    expected = blend * generated + (1 - blend) * photo
    assert torch.equal(stitch(photo, generated, blend, method="fice"), expected)


def test_hard_threshold() -> None:
    photo, generated, blend = _images()
    out = stitch(photo, generated, blend, method="hard")
    take = (blend >= 0.5).expand_as(photo)
    assert torch.equal(out[take], generated[take]) and torch.equal(out[~take], photo[~take])
    blend_edge = torch.full_like(blend, 0.5)
    assert torch.equal(stitch(photo, generated, blend_edge, method="hard"), generated)
    out = stitch(photo, generated, blend_edge, method="hard", threshold=0.6)
    assert torch.equal(out, photo)
    with pytest.raises(ValueError, match="threshold"):
        stitch(photo, generated, blend, method="hard", threshold=0.0)


def test_feather_stays_inside_and_is_monotone() -> None:
    h = w = 64
    small, large = _disc(h, w, 14), _disc(h, w, 22)
    for radius in (1, 3, 4):
        weight_small, weight_large = feather_mask(small, radius), feather_mask(large, radius)
        assert torch.equal(weight_small[small == 0], torch.zeros_like(weight_small[small == 0]))
        assert bool((weight_small <= weight_large).all())  # monotone in the mask
        assert bool(((weight_small >= 0) & (weight_small <= 1)).all())
        core = weight_small[_disc(h, w, 14 - 3 * radius) > 0]  # square erosion + blur reach r*2*sqrt(2) < 3r
        torch.testing.assert_close(core, torch.ones_like(core), atol=1e-6, rtol=0)  # the core is fully generated
    # Along a ray from the centre outwards the weight never increases.
    row = feather_mask(large, 4)[0, 0, h // 2, w // 2 :]
    assert bool((row[1:] <= row[:-1]).all())
    assert large[0, 0, h // 2, w // 2 + 22] == 1 and large[0, 0, h // 2, w // 2 + 23] == 0
    assert row[20:].max() < 0.1 and not row[23:].any()  # faded out before the disc's last pixel: no seam
    assert 0 < row[18] < 1  # the soft ramp lies inside the disc


def test_feather_radius_zero_is_the_mask_and_border_is_not_eroded() -> None:
    photo, generated, blend = _images()
    assert torch.equal(
        stitch(photo, generated, blend, method="feather", radius=0), stitch(photo, generated, blend, method="fice")
    )
    ones = torch.ones(1, 1, 16, 16)
    torch.testing.assert_close(feather_mask(ones, 3), ones, atol=1e-6, rtol=0)


def test_feather_soft_seam_between_images() -> None:
    blend = _disc(64, 64, 20)
    photo, generated = torch.zeros(1, 3, 64, 64), torch.ones(1, 3, 64, 64)
    out = stitch(photo, generated, blend, method="feather", radius=4)
    values = out[0, 0, 32, 32:]
    assert values[0] == 1 and values[-1] == 0
    assert ((values > 0) & (values < 1)).sum() >= 3  # a gradual edge, not a hard cut
    with pytest.raises(ValueError, match="radius"):
        stitch(photo, generated, blend, method="feather", radius=-1)


def test_laplacian_constant_masks() -> None:
    photo, generated, _ = _images(h=64, w=64)
    zeros = torch.zeros(2, 1, 64, 64)
    assert torch.equal(stitch(photo, generated, zeros, method="laplacian"), photo)
    out = stitch(photo, generated, torch.ones_like(zeros), method="laplacian")
    torch.testing.assert_close(out, generated, atol=1e-5, rtol=0)


def test_laplacian_blends_low_frequencies_smoothly() -> None:
    # Left half generated (1.0), right half photo (0.0), mask soft at 0.5 on the right so nothing is forced.
    photo, generated = torch.zeros(1, 3, 64, 64), torch.ones(1, 3, 64, 64)
    blend = torch.full((1, 1, 64, 64), 0.5)
    blend[..., :32] = 1.0
    out = stitch(photo, generated, blend, method="laplacian", levels=5)
    profile = out[0, 0, 32]
    torch.testing.assert_close(profile[:4], torch.ones(4), atol=2e-3, rtol=0)
    torch.testing.assert_close(profile[-2:], torch.full((2,), 0.5), atol=2e-2, rtol=0)
    steps = profile[1:] - profile[:-1]
    assert bool((steps <= 1e-6).all())  # a monotone transition from 1 to 0.5 ...
    assert steps.min() > -0.02  # ... spread over many pixels, where the per-pixel formula jumps by 0.5
    assert (stitch(photo, generated, blend, method="fice")[0, 0, 32, 31:33] == torch.tensor([1.0, 0.5])).all()


def test_pyramid_round_trip_and_sizes() -> None:
    x = torch.rand(2, 3, 37, 50, generator=torch.Generator().manual_seed(3))
    for levels in (1, 2, 4):
        pyramid = laplacian_pyramid(x, levels)
        assert len(pyramid) == levels
        torch.testing.assert_close(reconstruct_pyramid(pyramid), x, atol=1e-6, rtol=0)
    sizes = [tuple(g.shape[-2:]) for g in gaussian_pyramid(x, 4)]
    assert sizes == [(37, 50), (19, 25), (10, 13), (5, 7)]
    constant = gaussian_pyramid(torch.full((1, 1, 32, 32), 0.75), 4)
    assert all(torch.equal(level, torch.full_like(level, 0.75)) for level in constant)
    sides = [(256, 256), (32, 48), (8, 8), (4, 4)]
    assert [default_levels(h, w) for h, w in sides] == [6, 3, 1, 1]
    with pytest.raises(ValueError, match="levels"):
        gaussian_pyramid(x, 0)


def test_methods_run_on_cuda_when_available() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device; the CPU tests cover the same code")
    photo, generated, blend = _images()
    for method in STITCH_METHODS:
        out = stitch(photo.cuda(), generated.cuda(), blend.cuda(), method=method)
        outside = (blend == 0).expand_as(photo)
        assert torch.equal(out.cpu()[outside], photo[outside])
        torch.testing.assert_close(out.cpu(), stitch(photo, generated, blend, method=method), atol=1e-5, rtol=0)


def test_bad_input_raises_value_error() -> None:
    photo, generated, blend = _images()
    with pytest.raises(ValueError, match=r"unknown method 'poisson'.*'fice', 'hard', 'feather', 'laplacian'"):
        stitch(photo, generated, blend, method="poisson")
    with pytest.raises(ValueError, match="photo"):
        stitch(photo[:, :2], generated, blend)
    with pytest.raises(ValueError, match="generated"):
        stitch(photo, generated[..., :-1], blend)
    with pytest.raises(ValueError, match="blend"):
        stitch(photo, generated, blend.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match="blend"):
        stitch(photo, generated, blend[0])
    with pytest.raises(ValueError, match="float"):
        stitch((photo * 255).to(torch.uint8), generated, blend)
    with pytest.raises(ValueError, match="dtype"):
        stitch(photo, generated.double(), blend)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stitch(photo, generated, blend * 2)
    with pytest.raises(ValueError, match="torch.Tensor"):
        stitch(photo.numpy(), generated, blend)
    with pytest.raises(ValueError, match="no option"):
        stitch(photo, generated, blend, method="fice", radius=3)
    with pytest.raises(ValueError, match="levels"):
        stitch(photo, generated, blend, method="laplacian", levels=0)


# ---------------------------------------------------------------------------------------------------
# Large photos: the feather's cost grows with log(radius), its result stays the exact computation's.


def _feather_reference(blend: torch.Tensor, radius: int) -> torch.Tensor:
    """feather_mask as first written: erosion by one (2r+1)^2 max_pool2d, Gaussian by direct convolution."""
    import torch.nn.functional as F

    eroded = -F.max_pool2d(-blend, 2 * radius + 1, stride=1, padding=radius)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / (radius / 2)) ** 2)
    taps = (taps / taps.sum()).to(blend.dtype)
    x = F.conv2d(F.pad(eroded, (radius, radius, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), taps.view(1, 1, -1, 1))
    return x.clamp(0, 1) * (blend > 0).to(blend.dtype)


@pytest.mark.parametrize("px", [1, 8, 9, 16, 40, 63])
@pytest.mark.parametrize("shape", [(37, 150), (150, 37), (5, 90)])
def test_dilate_and_erode_equal_the_full_window_max_at_every_radius(px: int, shape: tuple[int, int]) -> None:
    import torch.nn.functional as F

    from ficekit.mask_ops import dilate, erode

    g = torch.Generator().manual_seed(px)
    mask = torch.rand(2, 1, *shape, generator=g)
    mask = torch.where(mask < 0.4, torch.zeros_like(mask), mask)  # exact zeros, as blend masks have
    assert torch.equal(dilate(mask, px), F.max_pool2d(mask, 2 * px + 1, stride=1, padding=px))
    assert torch.equal(erode(mask, px), -F.max_pool2d(-mask, 2 * px + 1, stride=1, padding=px))


def test_feather_of_a_large_photo_uses_no_full_size_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 4000x4000 the default radius is 62: one 125x125 max_pool2d per pixel took 298 s. The morphology now
    runs in O(log r) passes and the long Gaussian by FFT, matching the direct computation to float rounding."""
    import torch.nn.functional as F

    blend = torch.clamp(_disc(256, 200, 70) * 1.5 - 0.25 * torch.rand(1, 1, 256, 200), 0, 1)
    radius = 40  # the default radius of a 2560 px photo
    expected = _feather_reference(blend, radius)
    windows: list[int] = []
    real_max_pool = F.max_pool2d

    def recording_max_pool(x, kernel_size, *args, **kwargs):
        windows.append(kernel_size if isinstance(kernel_size, int) else max(kernel_size))
        return real_max_pool(x, kernel_size, *args, **kwargs)

    monkeypatch.setattr(F, "max_pool2d", recording_max_pool)
    weight = feather_mask(blend, radius)
    assert max(windows, default=0) <= 17  # no (2r+1)^2 window
    torch.testing.assert_close(weight, expected, atol=2e-6, rtol=0)
    assert torch.equal(weight[blend == 0], torch.zeros_like(weight[blend == 0]))


def test_small_photos_feather_exactly_as_before() -> None:
    blend = _images(n=1, h=256, w=192, seed=4)[2]
    assert torch.equal(feather_mask(blend, 4), _feather_reference(blend, 4))  # 256 px: default radius 4
    assert torch.equal(feather_mask(blend, 15), _feather_reference(blend, 15))  # up to ~1000 px: bit for bit
