"""Colour matching onto the exemplar collage: the rank-for-rank map on known pictures (what moves, what stays),
its checks, and its place in an edit (after the optimisation, before stitching; off for FICE)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ficekit.colour_match import colour_axes, match_colours
from ficekit.settings import EditSettings


def stripes(low: float, high: float, offset: int = 0, size: int = 8) -> torch.Tensor:
    """[1, 3, size, size] grey horizontal stripes two rows wide, `low` and `high` bright, shifted by `offset`."""
    rows = ((torch.arange(size) + offset) // 2) % 2 == 0
    return torch.where(rows, high, low)[None, None, :, None].expand(1, 3, size, size).clone()


def test_a_blurred_drawing_takes_the_references_colours_and_keeps_its_places():
    blurred = stripes(0.4, 0.6)  # the generator's stripes, low contrast
    crisp_elsewhere = stripes(0.0, 1.0, offset=1)  # the collage's, one row lower
    everywhere = torch.ones(1, 1, 8, 8)
    assert torch.allclose(match_colours(blurred, crisp_elsewhere, everywhere), stripes(0.0, 1.0), atol=1e-6)


def test_main_axis_gets_the_references_values_in_the_images_order_and_the_rest_its_mean_and_spread():
    generator = torch.Generator().manual_seed(0)
    red, white = torch.tensor([0.8, 0.1, 0.2]), torch.tensor([0.95, 0.95, 0.9])
    rows = (torch.arange(6) // 2) % 2 == 0
    reference = torch.where(rows[None, :, None], red[:, None, None], white[:, None, None]).expand(3, 6, 6)[None]
    reference = reference + 0.02 * torch.randn(1, 3, 6, 6, generator=generator)
    image = torch.rand(1, 3, 6, 6, generator=generator)  # the generator's muddle
    region = torch.zeros(1, 1, 6, 6)
    region[:, :, 1:5, 1:5] = 1
    inside = region[0, 0] > 0.5
    out = match_colours(image, reference, region)
    axes = colour_axes(reference[0][:, inside])
    assert torch.allclose(axes @ axes.T, torch.eye(3), atol=1e-5)
    main = (red - white) / (red - white).norm()
    assert abs(float(axes[0] @ main)) > 0.99  # the main axis runs from red to white
    along, wanted, before = axes @ out[0][:, inside], axes @ reference[0][:, inside], axes @ image[0][:, inside]
    assert torch.allclose(along[0].sort().values, wanted[0].sort().values, atol=1e-5)
    assert torch.equal(along[0].argsort(), before[0].argsort())  # light stays lighter than dark
    assert torch.allclose(along[1:].mean(dim=1), wanted[1:].mean(dim=1), atol=1e-5)
    assert torch.allclose(along[1:].std(dim=1), wanted[1:].std(dim=1), atol=1e-5)
    assert torch.equal(out[0][:, ~inside], image[0][:, ~inside])  # outside the region nothing moves
    assert torch.equal(match_colours(image, reference, torch.zeros(1, 1, 6, 6)), image)  # empty region


def test_one_reference_serves_a_batch_and_bad_shapes_are_named():
    image = torch.cat([stripes(0.4, 0.6), stripes(0.3, 0.5)])
    out = match_colours(image, stripes(0.0, 1.0), torch.ones(2, 1, 8, 8))
    assert torch.allclose(out, torch.cat([stripes(0.0, 1.0), stripes(0.0, 1.0)]), atol=1e-6)
    with pytest.raises(ValueError, match="reference: expected"):
        match_colours(image, torch.zeros(3, 3, 8, 8), torch.ones(2, 1, 8, 8))
    with pytest.raises(ValueError, match="region: expected"):
        match_colours(image, stripes(0.0, 1.0), torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match="image: expected"):
        match_colours(torch.zeros(3, 8, 8), stripes(0.0, 1.0), torch.ones(1, 1, 8, 8))


def test_setting_is_checked_and_off_by_default():
    assert EditSettings().colour_match == "off"
    with pytest.raises(ValueError, match="colour_match must be one of"):
        EditSettings(colour_match="exemplar").validate()


def test_demo_edit_matches_colours_after_the_optimisation_and_off_is_g_of_w(demo_pipe):
    from PIL import Image

    from ficekit.collage import text_collage

    pipe, text = demo_pipe, "grey striped tank top"
    assert pipe.settings().colour_match == "collage"  # the demo's default; FICE's bundle leaves it off
    photo = Image.open(pipe.bundle.example_images[0]).convert("RGB").resize((64, 64), Image.BILINEAR)
    kwargs = dict(iterations=2, progress=False, seed=0, check_domain=False)
    off = pipe.edit(photo, text, colour_match="off", **kwargs)
    on = pipe.edit(photo, text, **kwargs)
    assert torch.equal(on.generated, off.generated)  # the same G(w); only the picture stitched from it differs
    blend = on.blend_full[0][0]
    assert torch.equal(on.images[0][:, blend == 0], off.images[0][:, blend == 0])  # the photo is untouched
    bare = on.masks.bare if on.masks.bare is not None else torch.zeros_like(on.masks.keep)
    region = (1 - on.masks.keep) * (1 - bare)
    painted = match_colours(on.generated, text_collage(pipe.clip, pipe.gallery, text, (64, 64)), region)
    pixels = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)
    _, framings = pipe.frame([pixels])
    expected, _ = pipe.finish([pixels], framings, painted, on.masks, on.settings)
    assert torch.allclose(on.images[0], expected[0], atol=1e-6)  # what is stitched is the matched G(w)
    assert (on.images[0] - off.images[0]).abs().max() > 0.1
