"""Render a person of the synthetic fashion world with exact labels: image, parsing, DensePose, captions.

`render(seed)` samples the attributes for `seed` (world.render_attributes) and draws them;
`render(seed, attributes=edited)` draws an edited record instead and keeps everything the edit does
not touch pixel-identical (drawing is a pure function of the attributes and the size; the seed then
only picks the captions' phrasing).

CLI (writes PNGs and a captions.json to look at):
    python -m ficekit.synthetic.render --seed 0 --size 256 --out /tmp/synthetic --n 16
    python -m ficekit.synthetic.render --world v2 --size 64 --out /tmp/synthetic-v2 --n 16
`python -m ficekit.synthetic` runs the same CLI without runpy's RuntimeWarning (which it prints because
the package imports this module, for `ficekit.synthetic.render`, before running it as a script).
"""

from __future__ import annotations

import argparse
import colorsys
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ficekit.synthetic.captions import make_captions
from ficekit.synthetic.draw import draw
from ficekit.synthetic.world import (
    DEFAULT_WORLD,
    PARSING_LABELS,
    SLOT_LABELS,
    WORLD_VERSIONS,
    Attributes,
    render_attributes,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEFAULT_SUPERSAMPLE = 3  # samples per pixel side before box-averaging (anti-aliasing)
PARSING_COLOURS: dict[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),
    "head": (250, 200, 160),
    "hair": (110, 60, 20),
    "upper_garment": (230, 40, 40),
    "lower_garment": (40, 80, 230),
    "dress": (200, 40, 200),
    "outerwear": (40, 180, 60),
    "arms": (250, 150, 90),
    "hands": (250, 230, 60),
    "legs": (200, 120, 60),
    "shoes": (120, 120, 120),
}


@dataclass(frozen=True, eq=False)
class DensePoseMaps:
    """Dense body-surface labels. I: [H,W] uint8 part (0 = none, 1-24 DensePose parts, see body.py).

    U, V: [H,W] float32 in [0,1], the position within the part: along a limb V runs from the joint
    nearer the torso (0) to the far one (1) and U across it from the image-left edge (0) to the
    image-right edge (1); over the torso U runs image left to right and V neck to crotch; on each head
    half U runs from the centre line (0) outward (1) and V top (0) to chin (1). U = V = 0 where I = 0.
    """

    I: np.ndarray  # noqa: E741 - the DensePose name
    U: np.ndarray
    V: np.ndarray


@dataclass(frozen=True, eq=False)
class Sample:
    """One rendered person. image: [H,W,3] uint8 RGB; parsing: [H,W] uint8 with PARSING_LABELS values."""

    image: np.ndarray
    parsing: np.ndarray
    densepose: DensePoseMaps
    attributes: Attributes
    captions: list[str] = field(default_factory=list)
    seed: int = 0

    def to_tensor(self) -> torch.Tensor:
        """The image as a float tensor [3,H,W] in [0,1] (ficekit's image convention, batch dim omitted)."""
        import torch

        return torch.from_numpy(self.image).permute(2, 0, 1).float().div_(255.0)

    def mask(self, name: str) -> np.ndarray:
        """[H,W] bool mask of a parsing label name, or of a garment slot ('upper', 'lower', 'dress', 'outerwear')."""
        label = SLOT_LABELS.get(name, name)
        if label not in PARSING_LABELS:
            raise ValueError(f"name: expected a parsing label {tuple(PARSING_LABELS)} or a slot {tuple(SLOT_LABELS)}, got {name!r}")
        return self.parsing == PARSING_LABELS[label]


def render(seed: int, size: int = 128, attributes: Attributes | None = None, *, world: str | None = None,
           supersample: int = DEFAULT_SUPERSAMPLE, n_captions: int = 6) -> Sample:
    """Draw the person for `seed` (or `attributes`, when given) at `size` x `size` pixels.

    Args:
        seed: non-negative int; picks the attributes (unless given) and the captions' phrasing.
        size: output side in pixels (>= 16).
        attributes: a record to draw instead of `render_attributes(seed, world)`, e.g. an edited one.
        world: a WORLD_VERSIONS entry, the framing; None = the attributes' own, else DEFAULT_WORLD ('v1').
        supersample: samples per pixel side; the image is their box average, the label maps take
            the sample at each pixel's centre (use an odd number so that sample is the exact centre).
        n_captions: how many captions, each from a different template (1-8).
    Returns:
        Sample with image, parsing, densepose (I, U, V), attributes and captions.
    """
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size: expected an int >= 16, got {size!r}")
    if not isinstance(supersample, (int, np.integer)) or supersample < 1:
        raise ValueError(f"supersample: expected an int >= 1, got {supersample!r}")
    if attributes is None:
        attributes = render_attributes(seed, DEFAULT_WORLD if world is None else world)
    elif world is not None and world != attributes.world:
        raise ValueError(f"world: {world!r} contradicts the given attributes' world {attributes.world!r}")
    elif not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    attributes.validate()
    canvas = draw(attributes, int(size), int(supersample))
    image, parsing, part, u, v = canvas.finish()
    off = part == 0
    u[off] = 0.0
    v[off] = 0.0
    return Sample(image=image, parsing=parsing, densepose=DensePoseMaps(I=part, U=u, V=v), attributes=attributes,
                  captions=make_captions(attributes, seed, n_captions), seed=int(seed))


def colourise_parsing(parsing: np.ndarray) -> np.ndarray:
    """[H,W] parsing map -> [H,W,3] uint8 picture, one fixed colour per label (PARSING_COLOURS)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    for name, index in PARSING_LABELS.items():
        table[index] = PARSING_COLOURS[name]
    return table[parsing]


def colourise_parts(parts: np.ndarray) -> np.ndarray:
    """[H,W] DensePose I map -> [H,W,3] uint8 picture: black background, 24 hues around the colour wheel."""
    table = np.zeros((256, 3), dtype=np.uint8)
    for i in range(1, 25):
        table[i] = [round(255 * c) for c in colorsys.hsv_to_rgb(((i * 7) % 24) / 24.0, 0.75, 0.95)]
    return table[parts]


def _sheet(images: list[np.ndarray], columns: int = 8) -> np.ndarray:
    rows = -(-len(images) // columns)
    h, w = images[0].shape[:2]
    out = np.zeros((rows * h, min(columns, len(images)) * w, 3), dtype=np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: render seeds seed..seed+n-1 and write image, parsing and I-map PNGs plus captions.json."""
    from PIL import Image

    parser = argparse.ArgumentParser(
        prog="python -m ficekit.synthetic.render",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Example: python -m ficekit.synthetic.render --seed 0 --size 256 --out /tmp/synthetic --n 16",
    )
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--n", type=int, default=16, help="number of consecutive seeds to render")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--world", choices=WORLD_VERSIONS, default=DEFAULT_WORLD, help="world version (framing)")
    parser.add_argument("--supersample", type=int, default=DEFAULT_SUPERSAMPLE, help="anti-aliasing samples per pixel side")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    args = parser.parse_args(argv)
    if args.n < 1 or args.seed < 0:
        parser.error("--n must be >= 1 and --seed >= 0")
    args.out.mkdir(parents=True, exist_ok=True)
    records, triples = {}, []
    for seed in range(args.seed, args.seed + args.n):
        sample = render(seed, args.size, world=args.world, supersample=args.supersample)
        pictures = (sample.image, colourise_parsing(sample.parsing), colourise_parts(sample.densepose.I))
        for suffix, picture in zip(("", "_parsing", "_densepose"), pictures, strict=True):
            Image.fromarray(picture).save(args.out / f"{seed:06d}{suffix}.png")
        triples.append(np.concatenate(pictures, axis=1))
        records[str(seed)] = {"captions": sample.captions, "attributes": sample.attributes.to_dict()}
    (args.out / "captions.json").write_text(json.dumps(records, indent=1))
    Image.fromarray(_sheet(triples, columns=4)).save(args.out / "sheet.png")
    if not args.quiet:
        print(f"wrote {args.n} samples ({args.size} px) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
