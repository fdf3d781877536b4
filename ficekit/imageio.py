"""Reading and writing image files: RGB [0,1] tensors in, PNGs out (atomically, never overwriting).

Reading. `read_image` accepts the files `list_images` lists (IMAGE_SUFFIXES, decoded only by the matching
Pillow plugins), refuses photos above MAX_PIXELS from their header before decoding a pixel (so a
decompression bomb costs nothing), applies the EXIF orientation (a phone photo comes back upright, as
every viewer shows it) and keeps the real range of every sample type:

    8-bit (L, P, RGB, CMYK, ...)   value / 255
    16-bit greyscale (I;16*)       value / 65535
    32-bit integer greyscale (I)   value / 65535 for 16-bit files (PNG, or TIFF with 16 bits per sample),
                                   value / (2**31 - 1) otherwise; negative values are refused
    32-bit float greyscale (F)     taken as is: it must already lie in [0, 1] (ficekit's image range);
                                   values outside it, inf or nan are refused rather than guessed at

Writing. Output names are claimed atomically: `claim_path` creates the first free name's empty placeholder
with O_CREAT|O_EXCL, so two processes writing into one folder never pick the same name, and `write_atomic`
then fills the claimed file via a temporary file and os.replace (a reader never sees half a PNG). A
placeholder this process claimed but never filled is removed when the write fails or the process exits.
"""

from __future__ import annotations

import atexit
import io
import os
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .checkpoint_io import atomic_write

# One list for --image and --input-dir: a file is readable exactly when list_images would list it.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
# The Pillow plugins allowed to decode them (JPEG also opens phones' multi-picture MPO files; GIF: first frame);
# a file whose bytes belong to another format (EPS, which runs Ghostscript; PSD; ...) is refused.
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF")

# Largest photo read or edited: 40 megapixels (e.g. 7296x5472, 8K video frames at 33 MP). It covers phone
# photos (12-24 MP at default settings) and most cameras; full-sensor 48-200 MP phone shots and 45-61 MP
# bodies must be downscaled first. The edit itself runs at the generator's resolution, so more pixels only
# cost time and memory in framing and stitching (an RGB float image alone is 12 bytes per pixel: 480 MB
# here, and an edit holds several); Pillow's own decompression-bomb limit is 89 MP.
MAX_PIXELS = 40_000_000
MIN_SIDE = 8  # smallest height and width read

_EXIF_ORIENTATION = 0x0112


class ImageReadError(ValueError):
    """An input image is missing, unreadable, not an image, or too large."""


def check_pixel_limit(height: int, width: int, name: str) -> None:
    """Raise ImageReadError naming `name`, its size and MAX_PIXELS when height x width exceeds the limit."""
    if height * width > MAX_PIXELS:
        raise ImageReadError(
            f"{name} is {width}x{height} ({height * width / 1e6:.1f} megapixels); ficekit edits photos of at most "
            f"{MAX_PIXELS / 1e6:g} megapixels (MAX_PIXELS): downscale it first"
        )


def _open(path: Path) -> Image.Image:
    """Image.open restricted to the plugins of IMAGE_SUFFIXES; a header beyond MAX_PIXELS is refused here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS is the lower limit
        try:
            img = Image.open(path, formats=_PIL_FORMATS)
        except Image.DecompressionBombError as e:  # the header claims more than twice Pillow's limit
            claimed = str(e).split("(", 1)[-1].split(" pixels", 1)[0]
            size = f"{int(claimed) / 1e6:.0f} megapixels" if claimed.isdigit() else "too many pixels"
            raise ImageReadError(
                f"{path} claims {size} in its header; ficekit edits photos of at most {MAX_PIXELS / 1e6:g} "
                "megapixels (MAX_PIXELS): downscale it first"
            ) from e
    try:
        check_pixel_limit(img.height, img.width, str(path))
    except ImageReadError:
        img.close()
        raise
    return img


def _bits_per_sample(img: Image.Image) -> int:
    """Bits per sample of a mode-I image's file: 16 for PNG and 16-bit TIFF, else 32."""
    if img.format == "PNG":
        return 16
    bits = getattr(img, "tag_v2", {}).get(258, (32,))
    return int(bits[0] if isinstance(bits, tuple) else bits)


def _to_rgb_array(img: Image.Image, path: Path) -> np.ndarray:
    """H x W x 3 float32 in [0, 1] from any supported mode, keeping the real range of 16-bit and float data."""
    mode = img.mode
    if mode.startswith("I;16"):
        grey = np.asarray(img).astype(np.float32) / 65535
    elif mode == "I":
        values = np.asarray(img)
        if values.size and values.min() < 0:
            raise ImageReadError(f"image {path} has negative 32-bit integer samples; ficekit reads unsigned images")
        scale = 65535 if _bits_per_sample(img) <= 16 else 2**31 - 1
        grey = (values.astype(np.float64) / scale).astype(np.float32)
    elif mode == "F":
        grey = np.asarray(img, dtype=np.float32)
        if not np.isfinite(grey).all():
            raise ImageReadError(f"float image {path} holds inf or nan samples")
        if grey.size and (grey.min() < 0 or grey.max() > 1):
            raise ImageReadError(
                f"float image {path} has values in [{grey.min():g}, {grey.max():g}]; ficekit reads float images "
                "as [0, 1] (save it as 8- or 16-bit, or scale it to [0, 1])"
            )
    else:
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")  # transparent images go on white, the usual studio background
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255
    return np.repeat(grey[..., None], 3, axis=2)


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as a float32 tensor [3, H, W] in [0, 1], RGB, upright (see the module docstring).

    Greyscale, palette and CMYK images are converted to RGB; transparent images are composited on white
    (the usual studio background of fashion photos); an animated GIF gives its first frame.
    Raises:
        ImageReadError: missing, not a file, unsupported suffix, unreadable, above MAX_PIXELS, below 8x8.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"image not found: {p}")
    if not p.is_file():
        raise ImageReadError(f"not an image file: {p}")
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        kind = p.suffix or "(no suffix)"
        raise ImageReadError(f"{p}: unsupported image type {kind!r}; ficekit reads {', '.join(IMAGE_SUFFIXES)}")
    try:
        with _open(p) as img:
            img.load()
            if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                img = ImageOps.exif_transpose(img)
            array = _to_rgb_array(img, p)
    except ImageReadError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise many types on broken files; name the file
        raise ImageReadError(f"cannot read image {p}: {type(e).__name__}: {e}") from e
    height, width = array.shape[:2]
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ImageReadError(f"image {p} is {width}x{height}; at least {MIN_SIDE}x{MIN_SIDE} pixels are needed")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def read_images_tolerant(
    paths: Iterable[str | os.PathLike],
) -> tuple[list[tuple[Path, torch.Tensor]], list[tuple[Path, str]]]:
    """Read every file that can be read; the others are returned with the reason, for a batch that edits the
    rest and reports them (e.g. --input-dir). Returns ([(path, image)], [(path, reason)]), both in input order."""
    photos: list[tuple[Path, torch.Tensor]] = []
    skipped: list[tuple[Path, str]] = []
    for path in map(Path, paths):
        try:
            photos.append((path, read_image(path)))
        except ImageReadError as e:
            skipped.append((path, str(e)))
    return photos, skipped


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files (IMAGE_SUFFIXES) directly inside `folder`, sorted by name; hidden files (names starting
    with '.', e.g. macOS '._photo.jpg' companions) are not listed. Error if there are none."""
    d = Path(folder)
    if not d.is_dir():
        raise ImageReadError(f"input folder not found: {d}")
    files = sorted(
        f for f in d.iterdir() if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES
    )
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


# ---------------------------------------------------------------------------------------------------
# Claimed output names.

_claims_lock = threading.Lock()
_claimed: set[str] = set()  # placeholders this process created and has not filled yet (absolute paths)


def _key(path: Path) -> str:
    return os.path.abspath(path)


def _try_claim(path: Path) -> bool:
    """Create `path` empty and exclusively; False if it exists already (whoever made it)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    os.close(fd)
    with _claims_lock:
        _claimed.add(_key(path))
    return True


def claim_path(path: str | os.PathLike) -> Path:
    """Claim `path`, or the first free `stem-N.suffix` beside it, by creating its empty placeholder exclusively
    (O_CREAT|O_EXCL), and return it. No other process or thread can claim the same name; fill it with
    write_atomic / write_png, or give it back with release_path. Creates the parent folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = p, 1
    while not _try_claim(candidate):
        candidate = p.with_name(f"{p.stem}-{n}{p.suffix}")
        n += 1
    return candidate


unique_path = claim_path  # the former name: it now claims the name instead of only checking it


def release_path(path: str | os.PathLike) -> None:
    """Give back a name claimed by this process and not written: its empty placeholder is removed."""
    p = Path(path)
    with _claims_lock:
        if _key(p) not in _claimed:
            return
        _claimed.discard(_key(p))
    try:
        if p.stat().st_size == 0:
            p.unlink()
    except FileNotFoundError:
        pass


@atexit.register
def release_unwritten() -> None:
    """Remove every placeholder this process claimed and never wrote (runs at exit, so a failed edit leaves
    no empty files behind)."""
    with _claims_lock:
        pending = list(_claimed)
    for name in pending:
        release_path(name)


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to `path` atomically (temp file + os.replace). `path` must be a name this process claimed
    (claim_path) or a free name, which is then claimed exclusively; anything else raises FileExistsError."""
    p = Path(path)
    with _claims_lock:
        claimed = _key(p) in _claimed
    if not claimed:
        p.parent.mkdir(parents=True, exist_ok=True)
        if not _try_claim(p):
            raise FileExistsError(f"refusing to overwrite {p}")
    try:
        atomic_write(p, lambda tmp: tmp.write_bytes(data))
    except BaseException:
        release_path(p)
        raise
    with _claims_lock:
        _claimed.discard(_key(p))
    return p


def png_bytes(image: torch.Tensor) -> bytes:
    """A [3|1, H, W] tensor in [0, 1] encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save a [3|1, H, W] tensor in [0, 1] as a PNG, atomically, into a claimed or free name; never overwrites
    another file (raises FileExistsError)."""
    try:
        data = png_bytes(image)
    except BaseException:
        release_path(path)
        raise
    return write_atomic(path, data)


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
