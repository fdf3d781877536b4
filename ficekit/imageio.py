"""Reading and writing image files: RGB [0,1] tensors in, PNGs out (atomically, never overwriting)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .checkpoint_io import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An input image is missing, unreadable, or not an image."""


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as a float tensor [3, H, W] in [0, 1], RGB.

    Greyscale, palette and CMYK images are converted to RGB; transparent images are composited on white
    (the usual studio background of fashion photos).
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"image not found: {p}")
    if not p.is_file():
        raise ImageReadError(f"not an image file: {p}")
    try:
        with Image.open(p) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba)
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot read image {p}: {e}") from e
    if rgb.width < 8 or rgb.height < 8:
        raise ImageReadError(f"image {p} is {rgb.width}x{rgb.height}; at least 8x8 pixels are needed")
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside `folder`, sorted by name; error if there are none."""
    d = Path(folder)
    if not d.is_dir():
        raise ImageReadError(f"input folder not found: {d}")
    files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageReadError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {d}")
    return files


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] or [1, H, W] float in [0, 1] -> H x W x 3 uint8 (clamped, rounded)."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"to_uint8: expected [3, H, W] or [1, H, W], got {list(image.shape)}")
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def unique_path(path: str | os.PathLike) -> Path:
    """`path` if it does not exist yet, else the first free `stem-N.suffix` beside it."""
    p = Path(path)
    n = 1
    candidate = p
    while candidate.exists():
        candidate = p.with_name(f"{p.stem}-{n}{p.suffix}")
        n += 1
    return candidate


def write_atomic(path: Path, data: bytes) -> Path:
    """Write bytes to a new file atomically (temp file + rename); refuses to overwrite an existing file."""
    if path.exists():
        raise FileExistsError(f"refusing to overwrite {path}")
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def png_bytes(image: torch.Tensor) -> bytes:
    """A [3|1, H, W] tensor in [0, 1] encoded as PNG."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save a [3|1, H, W] tensor in [0, 1] as a PNG, atomically; never overwrites (raises FileExistsError)."""
    return write_atomic(Path(path), png_bytes(image))


def replace_png(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save a PNG atomically over an earlier output of the same job (benchmark and evaluation reruns)."""
    data = png_bytes(image)
    return atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def comparison_grid(columns: list[torch.Tensor], pad: int = 4) -> torch.Tensor:
    """Side-by-side strip of equally tall [3|1, H, W] images (e.g. photo | mask | generated | result)."""
    height = columns[0].shape[-2]
    tiles = []
    for column in columns:
        if column.shape[-2] != height:
            raise ValueError("comparison_grid: all columns must have the same height")
        tile = column.detach().float().cpu().clamp(0, 1)
        tiles.append(tile.expand(3, -1, -1) if tile.shape[0] == 1 else tile)
        tiles.append(torch.ones(3, height, pad))
    return torch.cat(tiles[:-1], dim=2)
