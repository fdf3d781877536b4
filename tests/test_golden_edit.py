"""Golden values of one whole demo edit: a change that alters what a user gets shows up here.

Fixed photo, text, seed and 3 iterations on the shipped demo bundle, eager path, one CPU thread. The expected
numbers were recorded from this code; when a deliberate change moves them (a retrained demo bundle, a new
default), re-record them and say why in the commit message.
"""

from __future__ import annotations

import pytest
import torch

from ficekit import FicePipeline

EXPECTED_TOTAL_LOSS = [2.697905, 2.650324, 2.302989, 2.392613]  # per step (iterations + 1 steps)
EXPECTED_INSIDE_MEAN = [0.687397, 0.279752, 0.293889]  # result RGB mean where the blend mask is > 0.5
EXPECTED_INSIDE_STD = 0.241976
EXPECTED_WS_MEAN, EXPECTED_WS_ABS = 0.200834, 0.408309
EXPECTED_BLEND_SUM = 4991.5557  # the blend mask's mass at the photo's size


@pytest.fixture(scope="module")
def result():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pipe = FicePipeline.from_bundle("demo", device="cpu")
    out = pipe.edit(pipe.bundle.example_images[0], "red t-shirt", iterations=3, seed=0, progress=False,
                    check_domain=False)
    torch.set_num_threads(threads)
    return pipe, out


def test_loss_curve_and_latent(result):
    _, r = result
    assert r.history["total"] == pytest.approx(EXPECTED_TOTAL_LOSS, abs=2e-4)
    assert float(r.ws.mean()) == pytest.approx(EXPECTED_WS_MEAN, abs=2e-4)
    assert float(r.ws.abs().mean()) == pytest.approx(EXPECTED_WS_ABS, abs=2e-4)


def test_result_inside_and_outside_the_mask(result):
    pipe, r = result
    from ficekit.imageio import read_image

    photo = read_image(pipe.bundle.example_images[0])
    image, blend = r.images[0], r.blend_full[0]
    assert float(blend.sum()) == pytest.approx(EXPECTED_BLEND_SUM, abs=0.5)
    outside = (blend == 0).expand(3, -1, -1)
    assert outside.any() and torch.equal(image[outside], photo[outside])  # the photo, bit for bit
    inside = (blend > 0.5).expand(3, -1, -1)
    means = [float(image[c][inside[c]].mean()) for c in range(3)]
    assert means == pytest.approx(EXPECTED_INSIDE_MEAN, abs=2e-3)
    assert float(image[inside].std()) == pytest.approx(EXPECTED_INSIDE_STD, abs=2e-3)
