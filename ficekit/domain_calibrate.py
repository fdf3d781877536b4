"""python -m ficekit.domain_calibrate — (re)compute a bundle's domain record, and measure how well it separates.

Calibrates the out-of-domain score (ficekit.domain, 'zmax/1') on in-domain photos: a folder of photos like
those the bundle's models were trained on, or, for the demo world, held-out renders. Prints the record as
JSON; --write stores it in the bundle's bundle.json (every other key is left as it is). --evaluate N then
measures the record: acceptance of N held-out renders (seed block --evaluate-seed; block 0 is the synthetic
benchmark's) and refusal rates of hard negatives: real photos and faces shipped with scikit-image, renders
pasted on textured backgrounds, crops, rotations, photos of text, and noise (scikit-image is needed for the
real photos and the textures: pip install scikit-image).

Examples:
  python -m ficekit.domain_calibrate --bundle demo --renders 1000 --seed 5 --write
  python -m ficekit.domain_calibrate --bundle ~/my-bundle --images ~/in-domain-photos --write \\
      --description "studio photos of one person, upper body" --way-on "crop the photo to one person"
  python -m ficekit.domain_calibrate --bundle demo --evaluate 300
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ficekit.bundle import load_bundle, write_domain
from ficekit.domain import (
    DEFAULT_MARGIN,
    DEFAULT_QUANTILE,
    DEMO_WAY_ON,
    DomainRecord,
    calibrate,
    demo_description,
    render_photos,
    score_photos,
)
from ficekit.framing import fit_to_square

log = logging.getLogger(__name__)

SKIMAGE_PHOTOS = (
    "astronaut.png", "coffee.png", "chelsea.png", "camera.png", "rocket.jpg", "horse.png", "motorcycle_left.png",
    "coins.png", "moon.png", "clock_motion.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "cell.png",
)  # fmt: skip
SKIMAGE_TEXTURES = ("brick.png", "grass.png", "gravel.png")
TEXT_WORDS = (
    "the quick brown fox jumps over a lazy dog garment photo invoice total page chapter receipt menu price"
).split()


# ---------------------------------------------------------------------------------------------------
# Hard negatives: photos that are not of the demo world, each family built reproducibly from a seed.


def skimage_data() -> Path:
    """The folder of scikit-image's shipped sample images (ValueError saying how to install it if missing)."""
    try:
        import skimage
    except ImportError as e:
        raise ValueError("the real-photo negatives need scikit-image: pip install scikit-image") from e
    return Path(skimage.__file__).parent / "data"


def _read_rgb(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _fit(image: torch.Tensor, resolution: int) -> torch.Tensor:
    return fit_to_square(image[None], resolution)[0][0]


def _random_crop(image: torch.Tensor, rng: np.random.Generator, size: int, lo: float, hi: float) -> torch.Tensor:
    """A random square crop of `image` whose side is lo..hi of the shorter side, resized to size x size."""
    _, h, w = image.shape
    side = max(2, int(min(h, w) * rng.uniform(lo, hi)))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = image[None, :, top : top + side, left : left + side]
    mode = {"mode": "area"} if side > size else {"mode": "bilinear", "align_corners": False}
    return F.interpolate(crop, size=(size, size), **mode)[0]


def real_photos(resolution: int) -> torch.Tensor:
    """scikit-image's sample photographs (a portrait, a cat, a cup, a camera man, ...), fitted square."""
    folder = skimage_data()
    return torch.stack([_fit(_read_rgb(folder / name), resolution) for name in SKIMAGE_PHOTOS])


def faces(resolution: int, n: int) -> torch.Tensor:
    """Up to 200 greyscale face portraits of scikit-image's LFW subset (25 x 25 px, enlarged)."""
    array = np.load(skimage_data() / "lfw_subset.npy")[:n]
    grey = torch.from_numpy(array.astype(np.float32))[:, None].repeat(1, 3, 1, 1)
    return F.interpolate(grey, size=(resolution, resolution), mode="bilinear", align_corners=False).clamp(0, 1)


def pasted_on_texture(
    resolution: int, seeds: Sequence[int], rng: np.random.Generator, world: str | None = None
) -> torch.Tensor:
    """Renders of `world` (None = v1) whose background is replaced by a texture (brick, grass, gravel) or a crop
    of a real photo."""
    from ficekit.synthetic import render

    folder = skimage_data()
    textures = [_read_rgb(folder / name) for name in SKIMAGE_TEXTURES + SKIMAGE_PHOTOS[:7]]
    out = []
    for i, seed in enumerate(seeds):
        sample = render(int(seed), size=resolution, world=world)
        person = torch.from_numpy(sample.parsing != 0).float()[None]
        texture = _random_crop(textures[i % len(textures)], rng, resolution, 0.3, 1.0)
        out.append(sample.to_tensor() * person + texture * (1 - person))
    return torch.stack(out)


def crops(resolution: int, seeds: Sequence[int], rng: np.random.Generator, world: str | None = None) -> torch.Tensor:
    """Random square crops (25-60 % of the side) of renders of `world`, enlarged: part of a person, or background."""
    from ficekit.synthetic import render

    return torch.stack([_random_crop(render(int(s), size=2 * resolution, world=world).to_tensor(), rng, resolution, 0.25, 0.6)
                        for s in seeds])  # fmt: skip


def rotations(
    resolution: int, seeds: Sequence[int], angles: Sequence[float], world: str | None = None
) -> torch.Tensor:
    """Renders of `world` rotated by `angles` in turn (multiples of 90 exactly; others bilinearly, corners in the
    background's top-left colour)."""
    from PIL import Image

    from ficekit.synthetic import render

    out = []
    for i, seed in enumerate(seeds):
        image, angle = render(int(seed), size=resolution, world=world).image, angles[i % len(angles)]
        if angle % 90 == 0:
            rotated = np.rot90(image, k=int(angle // 90) % 4)
        else:
            corner = tuple(int(c) for c in image[0, 0])
            rotated = np.asarray(Image.fromarray(image).rotate(angle, Image.BILINEAR, fillcolor=corner))
        out.append(torch.from_numpy(np.array(rotated)).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def text_photos(resolution: int, n: int, rng: np.random.Generator) -> torch.Tensor:
    """Lines of words in PIL's default font, random sizes and colours, on mostly light plain backgrounds."""
    from PIL import Image, ImageDraw, ImageFont

    out, side = [], 4 * resolution
    for _ in range(n):
        light = rng.random() < 0.7
        background = tuple(int(v) for v in rng.integers(150 if light else 0, 256, 3))
        image = Image.new("RGB", (side, side), background)
        draw = ImageDraw.Draw(image)
        size = int(rng.integers(side // 12, side // 4))
        font = ImageFont.load_default(size=size)
        ink = tuple(int(v) for v in rng.integers(0, 100, 3))
        y = int(rng.integers(0, side // 6))
        while y < side:
            line = " ".join(rng.choice(TEXT_WORDS, 4))
            draw.text((int(rng.integers(-side // 4, side // 8)), y), line, fill=ink, font=font)
            y += int(size * 1.3)
        array = np.asarray(image, dtype=np.float32) / 255
        out.append(_fit(torch.from_numpy(array.copy()).permute(2, 0, 1), resolution))
    return torch.stack(out)


def noise(resolution: int, n: int, rng: np.random.Generator) -> torch.Tensor:
    """Four kinds in turn: uniform, Gaussian around grey, smooth (bicubic from 2-8 px), sparse specks on grey."""
    out = []
    for i in range(n):
        shape = (3, resolution, resolution)
        if i % 4 == 0:
            x = torch.from_numpy(rng.random(shape))
        elif i % 4 == 1:
            x = (0.5 + 0.2 * torch.from_numpy(rng.standard_normal(shape))).clamp(0, 1)
        elif i % 4 == 2:
            coarse = torch.from_numpy(rng.random((1, 3, *[int(rng.integers(2, 9))] * 2)))
            x = F.interpolate(coarse, size=shape[1:], mode="bicubic", align_corners=False)[0].clamp(0, 1)
        else:
            x = torch.full(shape, float(rng.random()), dtype=torch.float64)
            specks = torch.from_numpy(rng.random(shape[1:]) < 0.1)
            x[:, specks] = torch.from_numpy(rng.random((3, int(specks.sum()))))
        out.append(x.float())
    return torch.stack(out)


def hard_negatives(resolution: int, n: int, seed: int = 0, world: str | None = None) -> dict[str, torch.Tensor]:
    """Every negative family, `n` photos each (fewer for the fixed real-photo sets), reproducible from `seed`.
    Renders (of `world`; None = v1) come from the held-out seed block 90 + seed, disjoint from calibration's and
    evaluation's usual blocks."""
    from ficekit.synthetic.dataset import held_out_seeds

    rng = np.random.default_rng(seed)
    seeds = held_out_seeds(4 * n, seed=90 + seed)
    return {
        "skimage photos": real_photos(resolution),
        "skimage LFW faces": faces(resolution, n),
        "renders on textures": pasted_on_texture(resolution, seeds[:n], rng, world),
        "crops of renders": crops(resolution, seeds[n : 2 * n], rng, world),
        "renders rotated 90/180/270": rotations(resolution, seeds[2 * n : 3 * n], (90, 180, 270), world),
        "renders rotated 15-45 deg": rotations(resolution, seeds[3 * n :], (15, -15, 30, -30, 45, -45), world),
        "photos of text": text_photos(resolution, n, rng),
        "noise": noise(resolution, n, rng),
    }


# ---------------------------------------------------------------------------------------------------
# Command line.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ficekit.domain_calibrate",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        epilog="\n".join(__doc__.split("\n")[-5:]) if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bundle", default="demo", help="'demo', 'fice' or a bundle folder (default: demo)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", type=Path, help="folder of in-domain photos to calibrate on")
    source.add_argument("--renders", type=int, help="calibrate on this many held-out renders of the synthetic world")
    parser.add_argument("--seed", type=int, default=5, help="held-out seed block of --renders (default: 5)")
    parser.add_argument("--description", help="one line on what the models know (default: the bundle's record's)")
    parser.add_argument("--way-on", help="what to do with a refused photo (default: the bundle's record's)")
    parser.add_argument(
        "--quantile", type=float, default=DEFAULT_QUANTILE, help="in-domain quantile (default: %(default)s)"
    )
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="added to it (default: %(default)s)")
    parser.add_argument("--write", action="store_true", help="store the record in the bundle's bundle.json")
    parser.add_argument(
        "--evaluate", type=int, metavar="N", help="measure the record on N held-out renders and negatives"
    )
    parser.add_argument("--evaluate-seed", type=int, default=0, help="held-out seed block of --evaluate (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    return parser


def _read_folder(folder: Path, resolution: int) -> tuple[torch.Tensor, list[str]]:
    from ficekit.imageio import list_images, read_image

    paths = list_images(folder)
    return torch.stack([_fit(read_image(p), resolution) for p in paths]), [p.name for p in paths]


def _description(args: argparse.Namespace, previous: DomainRecord | None, world: str | None) -> tuple[str, str]:
    if args.description:
        description = args.description
    elif previous is not None:
        description = previous.description
    elif args.renders:
        description = demo_description(world)
    else:
        raise ValueError("--description is needed: the bundle has no domain record to take it from")
    if args.way_on is not None:
        way_on = args.way_on
    elif previous is not None:
        way_on = previous.way_on
    else:
        way_on = DEMO_WAY_ON if args.renders else ""
    return description, way_on


def evaluate(pipe: object, record: DomainRecord, n: int, seed: int, world: str | None) -> list[tuple[str, int, float]]:
    """(family, photos, share accepted) for `n` held-out renders of seed block `seed` and every negative family."""
    resolution = int(pipe.resolution)  # type: ignore[attr-defined]
    families = {f"held-out renders (block {seed})": render_photos(n, seed, resolution, world)}
    families.update(hard_negatives(resolution, n, seed, world))
    rows = []
    for name, photos in families.items():
        scores = score_photos(pipe, photos, record)
        rows.append((name, len(scores), sum(s.accepted for s in scores) / len(scores)))
        log.info("%s: %d photos, %.1f %% accepted", name, len(scores), 100 * rows[-1][2])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: calibrate and print (and --write) a domain record, and/or --evaluate one."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.renders is None and args.images is None and args.evaluate is None:
        _parser().error("give --images DIR or --renders N to calibrate, and/or --evaluate N")
    if args.write and args.renders is None and args.images is None:
        _parser().error("--write needs a calibration (--images or --renders)")
    for name in ("renders", "evaluate"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            _parser().error(f"--{name} must be >= 1, got {getattr(args, name)}")
    from ficekit.pipeline import FicePipeline
    from ficekit.synthetic.world import bundle_world

    try:
        bundle = load_bundle(args.bundle)
        world = bundle_world(bundle)
        torch.manual_seed(0)
        pipe = FicePipeline(bundle, device=args.device)
        record = bundle.domain
        if args.renders is not None or args.images is not None:
            started = time.perf_counter()
            description, way_on = _description(args, bundle.domain, world)
            if args.renders is not None:
                photos = render_photos(args.renders, args.seed, pipe.resolution, world)
            else:
                photos, _ = _read_folder(args.images, pipe.resolution)
            command = shlex.join(
                ["python", "-m", "ficekit.domain_calibrate", *(sys.argv[1:] if argv is None else argv)]
            )
            record = calibrate(pipe, photos, description, way_on, args.quantile, args.margin, command)
            log.info("calibrated on %d photos in %.1f s", photos.shape[0], time.perf_counter() - started)
            print(json.dumps(record.to_dict(), indent=2))
            if args.write:
                write_domain(args.bundle, record)
                print(f"wrote the domain record into {bundle.root / 'bundle.json'}")
        if args.evaluate is not None:
            if record is None:
                raise ValueError(f"bundle {bundle.name!r} has no domain record to evaluate; calibrate one first")
            rows = evaluate(pipe, record, args.evaluate, args.evaluate_seed, world)
            print(f"\nrecord: {record.score}, accepted range [{record.low:.3g}, {record.high:.3g}]\n")
            print("| photos | n | accepted | refused |\n|---|---|---|---|")
            for name, count, accepted in rows:
                print(f"| {name} | {count} | {100 * accepted:.1f} % | {100 * (1 - accepted):.1f} % |")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
