"""Odd and hostile image files and concurrent writers: each is read with its real content or refused in one line.

16-bit and float greyscale keep their range, EXIF orientation is applied, photos above MAX_PIXELS and
decompression bombs are refused from their header, --image and --input-dir accept the same suffixes, and two
processes writing into one folder never take the same output name.
"""

from __future__ import annotations

import multiprocessing
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ficekit import imageio
from ficekit.imageio import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    ImageReadError,
    check_pixel_limit,
    claim_path,
    list_images,
    read_image,
    read_images_tolerant,
    release_path,
    unique_path,
    write_atomic,
    write_png,
)

# ----------------------------------------------------------------------------- sample types


def test_16_bit_greyscale_png_and_tiff_keep_their_range(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 32768, 65535]] * 8, dtype=np.uint16).repeat(2, axis=1)  # 8 x 8
    for name in ("grey16.png", "grey16.tif"):
        Image.fromarray(values).save(tmp_path / name)
        assert Image.open(tmp_path / name).mode.startswith("I;16")  # what the files open as
        image = read_image(tmp_path / name)
        assert image.shape == (3, 8, 8) and image.dtype == torch.float32
        expected = torch.from_numpy(values.astype(np.float32) / 65535).expand(3, -1, -1)
        torch.testing.assert_close(image, expected, atol=1e-7, rtol=0)  # not all white


def test_float_tiff_in_unit_range_is_taken_as_is(tmp_path: Path) -> None:
    values = np.linspace(0, 1, 80, dtype=np.float32).reshape(8, 10)
    Image.fromarray(values).save(tmp_path / "float.tif")
    assert Image.open(tmp_path / "float.tif").mode == "F"
    image = read_image(tmp_path / "float.tif")
    assert torch.equal(image, torch.from_numpy(values).expand(3, -1, -1))  # not all black


@pytest.mark.parametrize("values, message", [(np.full((8, 8), 2.5), r"values in \[2.5, 2.5\]"),
                                             (np.full((8, 8), np.nan), "inf or nan")])  # fmt: skip
def test_float_tiff_outside_unit_range_is_refused(tmp_path: Path, values: np.ndarray, message: str) -> None:
    Image.fromarray(values.astype(np.float32)).save(tmp_path / "hdr.tif")
    with pytest.raises(ImageReadError, match=message):
        read_image(tmp_path / "hdr.tif")


def test_32_bit_integer_tiff_is_scaled_by_its_range(tmp_path: Path) -> None:
    values = np.full((8, 8), 2**30, dtype=np.int32)
    Image.fromarray(values).save(tmp_path / "int32.tif")
    assert Image.open(tmp_path / "int32.tif").mode == "I"
    torch.testing.assert_close(read_image(tmp_path / "int32.tif"), torch.full((3, 8, 8), 2**30 / (2**31 - 1)))
    Image.fromarray(-values).save(tmp_path / "negative.tif")
    with pytest.raises(ImageReadError, match="negative"):
        read_image(tmp_path / "negative.tif")


def test_exif_orientation_6_comes_back_upright(tmp_path: Path) -> None:
    # Stored 40 wide x 20 tall: top half red, bottom half blue. Orientation 6 = shown rotated 90 degrees
    # clockwise, so a viewer shows it 20 wide x 40 tall with the stored top (red) on the right.
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:10] = (255, 0, 0)
    stored[10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=100, exif=exif)
    image = read_image(tmp_path / "phone.jpg")
    assert image.shape == (3, 40, 20)
    right, left = image[:, :, 12:].mean(dim=(1, 2)), image[:, :, :8].mean(dim=(1, 2))
    torch.testing.assert_close(right, torch.tensor([1.0, 0, 0]), atol=0.03, rtol=0)
    torch.testing.assert_close(left, torch.tensor([0.0, 0, 1]), atol=0.03, rtol=0)


# ----------------------------------------------------------------------------- size limits


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height in its header and holds no pixel data (a few dozen bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(
    "width, height, size",
    [(8000, 6000, "8000x6000 (48.0 megapixels)"),  # above MAX_PIXELS, below Pillow's limits
     (10000, 10000, "10000x10000 (100.0 megapixels)"),  # between Pillow's warning and its error
     (14000, 14000, "196 megapixels"),  # a decompression bomb for Pillow
     (100000, 100000, "10000 megapixels")],  # a tiny file claiming 10^10 pixels
)  # fmt: skip
def test_oversized_headers_are_refused_before_decoding(tmp_path: Path, width: int, height: int, size: str) -> None:
    path = _png_header_only(tmp_path / f"big{width}.png", width, height)
    assert path.stat().st_size < 100
    with _no_warnings(), pytest.raises(ImageReadError) as caught:
        read_image(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and size in message
    assert f"at most {MAX_PIXELS / 1e6:g} megapixels" in message


class _no_warnings:
    """Fails the test if a warning (e.g. Pillow's DecompressionBombWarning) escapes the block."""

    def __enter__(self) -> None:
        import warnings

        self._catcher = warnings.catch_warnings(record=True)
        self._seen = self._catcher.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        self._catcher.__exit__(*exc)
        assert not self._seen, [str(w.message) for w in self._seen]


def test_check_pixel_limit_for_tensors() -> None:
    check_pixel_limit(4000, 10000, "photo")  # exactly 40 MP is allowed
    with pytest.raises(ImageReadError, match=r"photo is 10001x4000 \(40.0 megapixels\).*MAX_PIXELS"):
        check_pixel_limit(4000, 10001, "photo")


# ----------------------------------------------------------------------------- one list of formats


def test_image_image_and_input_dir_accept_the_same_files(tmp_path: Path) -> None:
    colour = (200, 30, 60)
    for suffix in IMAGE_SUFFIXES:
        Image.new("RGB", (12, 10), colour).save(tmp_path / f"photo{suffix}")
    Image.new("RGB", (12, 10), colour).save(tmp_path / "photo.ppm")  # Pillow reads it; ficekit does not list it
    Image.new("RGB", (12, 10), colour).save(tmp_path / "._photo.png")  # a macOS companion file: hidden
    listed = list_images(tmp_path)
    assert sorted(p.suffix for p in listed) == sorted(IMAGE_SUFFIXES) and ".gif" in IMAGE_SUFFIXES
    for path in listed:
        assert read_image(path).shape == (3, 10, 12), path
    with pytest.raises(ImageReadError, match=r"unsupported image type '\.ppm'; ficekit reads .*\.gif"):
        read_image(tmp_path / "photo.ppm")


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    assert torch.equal(read_image(tmp_path / "anim.gif"), torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand(3, 16, 16))


def test_read_images_tolerant_reads_the_rest_and_names_the_others(tmp_path: Path) -> None:
    Image.new("RGB", (10, 10), (0, 255, 0)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_text("not an image")
    big = _png_header_only(tmp_path / "c.png", 9000, 9000)
    Image.new("RGB", (10, 10), (0, 0, 255)).save(tmp_path / "d.png")
    photos, skipped = read_images_tolerant(list_images(tmp_path))
    assert [p.name for p, _ in photos] == ["a.png", "d.png"]
    assert torch.equal(photos[1][1][:, 0, 0], torch.tensor([0.0, 0, 1]))
    assert [p.name for p, _ in skipped] == ["b.jpg", "c.png"]
    assert "cannot read image" in skipped[0][1] and str(big) in skipped[1][1] and "megapixels" in skipped[1][1]


# ----------------------------------------------------------------------------- output names


def _write_many(folder: str, worker: int, count: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    for i in range(count):
        image = torch.full((3, 8, 8), (worker * count + i) / 255)  # each output unique by content
        barrier.wait(timeout=60)  # both processes pick a name at the same instant
        write_png(image, unique_path(Path(folder) / "result.png"))


@pytest.mark.skipif(sys.platform == "win32", reason="fork start method")
def test_two_processes_writing_one_folder_never_overwrite(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_write_many, args=(str(tmp_path), w, 40, barrier)) for w in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    files = sorted(tmp_path.iterdir())
    assert len(files) == 80 and not [f for f in files if f.name.startswith(".")]
    values = sorted(round(read_image(f)[0, 0, 0].item() * 255) for f in files)
    assert values == list(range(80))  # every write kept, none overwritten


def test_claimed_names_are_filled_or_given_back(tmp_path: Path) -> None:
    first = claim_path(tmp_path / "out" / "a.png")
    second = claim_path(tmp_path / "out" / "a.png")
    assert (first.name, second.name) == ("a.png", "a-1.png")
    assert first.is_file() and first.stat().st_size == 0  # the placeholder holds the name
    write_png(torch.zeros(3, 8, 8), first)  # fills its own claim
    assert read_image(first).shape == (3, 8, 8)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_png(torch.zeros(3, 8, 8), first)  # filled: no longer claimed
    other = tmp_path / "out" / "b.png"
    other.write_bytes(b"someone else's file")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_atomic(other, b"x")
    assert other.read_bytes() == b"someone else's file"
    release_path(second)
    assert not second.exists()
    third = claim_path(tmp_path / "out" / "c.png")
    with pytest.raises(ValueError):
        write_png(torch.zeros(2, 8, 8), third)  # not an image: the claim is given back, no empty file left
    assert not third.exists()
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files


def test_unwritten_claims_are_removed_at_exit(tmp_path: Path) -> None:
    claimed = claim_path(tmp_path / "result.png")
    assert claimed.exists()
    imageio.release_unwritten()  # what atexit runs
    assert not claimed.exists()
