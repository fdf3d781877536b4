"""Photos as the Python API accepts them, and results as the caller asked for them.

In: a PIL image, a path, a [3,H,W] or [N,3,H,W] float tensor in [0,1], an HWC uint8 numpy array, or a list of
these. Out (`output_type`): 'pt' float tensors [3,H,W], 'pil' PIL images, 'np' float32 HWC arrays in [0,1]
(the diffusers conventions). Every photo is checked here, before any model runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import imageio

OUTPUT_TYPES = ("pt", "pil", "np")


def _pil_to_tensor(image: Any) -> torch.Tensor:
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode not in ("RGB",):
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def _array_to_tensor(array: np.ndarray, name: str) -> torch.Tensor:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"{name}: expected an HxWx3 (or HxWx4) array, got shape {tuple(array.shape)}")
    array = array[:, :, :3]
    if array.dtype == np.uint8:
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255
    if np.issubdtype(array.dtype, np.floating):
        return torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1)
    raise ValueError(f"{name}: expected a uint8 or float array, got {array.dtype}")


def _one(item: Any, name: str) -> list[tuple[torch.Tensor, str]]:
    """One input item -> [(tensor [3,H,W], display name)] (a 4-D tensor gives several)."""
    if isinstance(item, str | os.PathLike):
        path = Path(item)
        return [(imageio.read_image(path), str(path))]
    if isinstance(item, torch.Tensor):
        if item.ndim == 3:
            return [(item, name)]
        if item.ndim == 4:
            return [(photo, f"{name}[{i}]") for i, photo in enumerate(item)]
        raise ValueError(f"{name}: expected a [3,H,W] or [N,3,H,W] tensor, got shape {list(item.shape)}")
    if isinstance(item, np.ndarray):
        return [(_array_to_tensor(item, name), name)]
    if type(item).__module__.startswith("PIL"):
        return [(_pil_to_tensor(item), name)]
    raise ValueError(f"{name}: expected a PIL image, a path, a tensor or a numpy array, got {type(item).__name__}")


def as_photos(images: Any, names: Sequence[str] | None = None) -> tuple[list[torch.Tensor], list[str]]:
    """Photos as float tensors [3,H,W] in [0,1] on the CPU, and a name for each (its path, or 'images[i]').

    Raises ValueError naming the photo for a wrong shape, dtype, range, non-finite pixels, or too many pixels.
    """
    if isinstance(images, list | tuple):
        items = list(images)
    else:
        items = [images]
    if not items:
        raise ValueError("no images to edit")
    photos: list[tuple[torch.Tensor, str]] = []
    for i, item in enumerate(items):
        photos.extend(_one(item, "images" if not isinstance(images, list | tuple) else f"images[{i}]"))
    if names is not None:
        if len(names) != len(photos):
            raise ValueError(f"names: got {len(names)} for {len(photos)} photos")
        photos = [(p, str(n)) for (p, _), n in zip(photos, names, strict=True)]
    out = []
    for photo, name in photos:
        out.append(check_photo(photo, name))
    return out, [name for _, name in photos]


def check_photo(photo: torch.Tensor, name: str) -> torch.Tensor:
    """`photo` as float32 [3,H,W] on the CPU after checking shape, dtype, finiteness, range and size."""
    if photo.ndim != 3 or photo.shape[0] != 3:
        raise ValueError(f"{name}: expected a [3, H, W] RGB image, got shape {list(photo.shape)}")
    if not photo.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor in [0, 1], got {photo.dtype}")
    height, width = int(photo.shape[1]), int(photo.shape[2])
    if height < 1 or width < 1:
        raise ValueError(f"{name}: the image is empty ({height}x{width})")
    imageio.check_pixel_limit(height, width, name)
    photo = photo.detach().float().cpu()
    if not bool(torch.isfinite(photo).all()):
        bad = int((~torch.isfinite(photo)).sum())
        raise ValueError(f"{name}: {bad} pixel value(s) are NaN or infinite; expected finite values in [0, 1]")
    low, high = float(photo.min()), float(photo.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"{name}: values must lie in [0, 1] (got {low:.3f}..{high:.3f})")
    return photo.clamp(0, 1)


def input_paths(images: Sequence[Path] | None, input_dir: Path | None, bundle: Any) -> list[Path]:
    """The photos a command edits: --image paths, every image of --input-dir, or the bundle's examples."""
    if images:
        return list(images)
    if input_dir:
        return imageio.list_images(input_dir)
    if not bundle.example_images:
        raise imageio.ImageReadError(f"bundle {bundle.name!r} has no example image; pass --image or --input-dir")
    return list(bundle.example_images)


def read_photos(paths: Sequence[Path], tolerant: bool) -> tuple[list[Path], list[torch.Tensor], list[tuple[Path, str]]]:
    """Read every photo: (paths read, photos, skipped (path, reason)). With `tolerant` (a folder) an unreadable
    photo is skipped and reported instead of ending the run; with none readable, ImageReadError."""
    if not tolerant:
        return [Path(p) for p in paths], [imageio.read_image(p) for p in paths], []
    read, skipped = imageio.read_images_tolerant(paths)
    if not read:
        raise imageio.ImageReadError("no readable image: " + "; ".join(reason for _, reason in skipped))
    return [path for path, _ in read], [photo for _, photo in read], skipped


def convert_output(images: list[torch.Tensor], output_type: str) -> list[Any]:
    """Result tensors [3,H,W] in [0,1] as 'pt' (unchanged), 'pil' or 'np' (float32 HWC)."""
    if output_type == "pt":
        return images
    if output_type == "np":
        return [image.permute(1, 2, 0).numpy().astype(np.float32) for image in images]
    if output_type == "pil":
        return [to_pil(image) for image in images]
    raise ValueError(f"output_type must be one of {list(OUTPUT_TYPES)}, got {output_type!r}")


def to_pil(image: torch.Tensor) -> Any:
    """A [3|1,H,W] image in [0,1] as an RGB PIL image."""
    from PIL import Image

    return Image.fromarray(imageio.to_uint8(image))


def check_output_type(output_type: str) -> str:
    """`output_type` if it is one of OUTPUT_TYPES, else a ValueError naming the choices."""
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {list(OUTPUT_TYPES)}, got {output_type!r}")
    return output_type
