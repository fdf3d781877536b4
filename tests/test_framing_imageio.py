"""Fitting photos to the generator's square and back; reading and writing image files."""

import pytest
import torch
from PIL import Image

from ficekit.framing import fit_to_square
from ficekit.imageio import (
    ImageReadError,
    comparison_grid,
    list_images,
    read_image,
    unique_path,
    write_png,
)


@pytest.mark.parametrize("height, width", [(64, 64), (80, 48), (48, 80), (37, 53)])
def test_fit_then_unfit_returns_to_the_photo_frame(height, width):
    photo = torch.rand(1, 3, height, width)
    fitted, framing = fit_to_square(photo, 32)
    assert fitted.shape == (1, 3, 32, 32)
    back = framing.unfit(fitted)
    assert back.shape == (1, 3, height, width)
    # A smooth image survives the round trip closely; the padding is gone.
    smooth = torch.linspace(0, 1, width).expand(1, 3, height, width).contiguous()
    fitted, framing = fit_to_square(smooth, 256)
    torch.testing.assert_close(framing.unfit(fitted), smooth, atol=0.02, rtol=0)


def test_padding_is_symmetric_and_replicates_the_border():
    photo = torch.zeros(1, 3, 40, 20)
    photo[..., :, 0] = 1.0  # left column white
    fitted, framing = fit_to_square(photo, 40)
    assert (framing.side, framing.top, framing.left) == (40, 0, 10)
    assert torch.equal(fitted[..., :, :10], torch.ones(1, 3, 40, 10))  # replicated white border
    assert torch.equal(fitted[..., :, 10:30], photo)  # no resize needed at 40 px


def test_unfit_checks_the_resolution():
    _, framing = fit_to_square(torch.rand(1, 3, 20, 30), 16)
    with pytest.raises(ValueError, match="dimension 2 is 8, expected 16"):
        framing.unfit(torch.rand(1, 3, 8, 8))


def test_read_image_modes(tmp_path):
    Image.new("RGB", (10, 12), (255, 0, 0)).save(tmp_path / "rgb.png")
    Image.new("L", (10, 12), 128).save(tmp_path / "grey.png")
    Image.new("RGBA", (10, 12), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    rgb = read_image(tmp_path / "rgb.png")
    assert rgb.shape == (3, 12, 10) and torch.equal(rgb[:, 0, 0], torch.tensor([1.0, 0, 0]))
    grey = read_image(tmp_path / "grey.png")
    assert torch.allclose(grey, torch.full_like(grey, 128 / 255))
    assert torch.equal(read_image(tmp_path / "clear.png"), torch.ones(3, 12, 10))  # on white


def test_read_image_errors(tmp_path):
    with pytest.raises(ImageReadError, match="image not found"):
        read_image(tmp_path / "missing.jpg")
    (tmp_path / "fake.jpg").write_text("not an image")
    with pytest.raises(ImageReadError, match="cannot read image"):
        read_image(tmp_path / "fake.jpg")
    Image.new("RGB", (4, 4)).save(tmp_path / "tiny.png")
    with pytest.raises(ImageReadError, match="at least 8x8"):
        read_image(tmp_path / "tiny.png")
    with pytest.raises(ImageReadError, match="no images"):
        list_images(_empty(tmp_path))


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_write_png_round_trip_and_never_overwrites(tmp_path):
    image = torch.rand(3, 9, 11)
    path = write_png(image, tmp_path / "out" / "a.png")
    assert (read_image(path) - image).abs().max() <= 0.5 / 255 + 1e-6
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_png(image, path)
    assert unique_path(path).name == "a-1.png"
    assert not list(path.parent.glob(".*tmp*"))  # no temp files left behind


def test_comparison_grid():
    grid = comparison_grid([torch.rand(3, 8, 8), torch.rand(1, 8, 8), torch.rand(3, 8, 5)], pad=2)
    assert grid.shape == (3, 8, 8 + 2 + 8 + 2 + 5)
    with pytest.raises(ValueError, match="same height"):
        comparison_grid([torch.rand(3, 8, 8), torch.rand(3, 9, 8)])


def test_replace_png_overwrites_atomically_where_write_png_refuses(tmp_path):
    from ficekit.imageio import read_image, replace_png, write_png

    path = tmp_path / "out.png"
    write_png(torch.zeros(3, 8, 8), path)
    with pytest.raises(FileExistsError):
        write_png(torch.ones(3, 8, 8), path)
    replace_png(torch.ones(3, 8, 8), path)
    assert torch.equal(read_image(path), torch.ones(3, 8, 8))
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary file left behind
