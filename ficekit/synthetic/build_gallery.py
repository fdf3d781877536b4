"""Build a bundle's texture gallery (ficekit.texture) from renders of its synthetic world.

    python -m ficekit.synthetic.build_gallery --bundle checkpoints/demo --n 1500 --texture-weight 0.3

Renders people from the training seed range (never the held-out ones), keeps each one's edited garment (the
top or dress an edit case would change: no jacket over it, at least 16 pixels), scores every render with the
bundle's CLIP and stores CLIP features with the garment's texture statistics, measured inside the renderer's
garment mask, and each garment's render seed and slot (so ficekit.collage can redraw its picture). Writes
gallery.pt into the bundle folder and records it in bundle.json (sha256, provenance and, with --texture-weight
or --collage-weight, the default weight of the texture or collage term); an existing gallery is kept unless
--overwrite.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ficekit.bundle import BUNDLE_FILE, _parse, load_bundle, sha256_file
from ficekit.checkpoint_io import atomic_write
from ficekit.eval.synthetic import edited_slot
from ficekit.progress import progress_bar
from ficekit.synthetic.dataset import HELD_OUT_SEED_START
from ficekit.synthetic.harden_clip import bundle_world
from ficekit.synthetic.render import render
from ficekit.texture import TextureGallery, texture_statistics

GALLERY_FILE = "gallery.pt"


@torch.no_grad()
def build_gallery(
    clip: torch.nn.Module, size: int, n: int, world: str, seed: int = 0, progress: bool = True
) -> TextureGallery:
    """A gallery of `n` training-range renders at `size` px of `world`: CLIP features and garment statistics."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    images, masks, seeds, slots = [], [], [], []
    bar = progress_bar(total=n, desc="rendering gallery", disable=not progress)
    while len(images) < n:
        person = int(rng.integers(0, HELD_OUT_SEED_START))
        photo = render(person, size=size, world=world)
        slot = edited_slot(photo)
        if slot is None:
            continue
        images.append(photo.to_tensor())
        masks.append(torch.from_numpy(photo.mask(slot))[None].float())
        seeds.append(person)
        slots.append(slot)
        bar.update(1)
    bar.close()
    x, m = torch.stack(images), torch.stack(masks)
    device = next(clip.parameters()).device
    features = torch.cat([clip.encode_image(x[i : i + 100].to(device)).cpu() for i in range(0, n, 100)])
    means, covariances = texture_statistics(x, m)
    renders = {"world": world, "size": size, "people": seeds, "slots": slots}  # redraws the pictures (collage)
    return TextureGallery(features, means, covariances, source=f"world {world}, {n} renders, seed {seed}",
                          renders=renders)


def add_gallery(bundle_dir: Path, gallery: TextureGallery, record: dict, texture_weight: float | None,
                overwrite: bool, collage_weight: float | None = None) -> None:  # fmt: skip
    """Write gallery.pt into `bundle_dir` and point bundle.json's 'gallery' record at it (atomically)."""
    path = bundle_dir / GALLERY_FILE
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    atomic_write(path, lambda tmp: gallery.save(tmp))
    data = json.loads((bundle_dir / BUNDLE_FILE).read_text(encoding="utf-8"))
    data["models"]["gallery"] = {"file": GALLERY_FILE, "format": "texture_gallery", "kwargs": {},
                                 "sha256": sha256_file(path)}  # fmt: skip
    data.setdefault("provenance", {}).setdefault("training", {})["gallery"] = record
    for term, weight in (("texture", texture_weight), ("collage", collage_weight)):
        if weight is not None:
            defaults = data.setdefault("defaults", {})
            defaults["weights"] = {**defaults.get("weights", {}), term: weight}
    _parse(json.loads(json.dumps(data)), bundle_dir)
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(bundle_dir / BUNDLE_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    load_bundle(bundle_dir).verify("gallery")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: build and add the texture gallery of a bundle folder."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder (gallery.pt is written there)")
    parser.add_argument("--n", type=int, default=1500, help="renders in the gallery (default 1500)")
    parser.add_argument("--seed", type=int, default=0, help="which training-range people (default 0)")
    parser.add_argument("--texture-weight", type=float, default=None, help="also set the bundle's default weight")
    parser.add_argument("--collage-weight", type=float, default=None,
                        help="also set the bundle's default weight of the collage term (ficekit.collage)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing gallery.pt")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        bundle = load_bundle(args.bundle)
        clip = bundle.load("clip", "cpu")
        generator = bundle.load("generator", "cpu")
        start = time.perf_counter()
        world = bundle_world(bundle)
        gallery = build_gallery(clip, int(generator.img_resolution), args.n, world, args.seed, not args.quiet)
        record = {"renders": args.n, "seed": args.seed, "world": world,
                  "minutes": round((time.perf_counter() - start) / 60, 2)}  # fmt: skip
        add_gallery(Path(args.bundle), gallery, record, args.texture_weight, args.overwrite, args.collage_weight)
    except (ValueError, FileExistsError, OSError) as error:
        parser.exit(2, f"build_gallery: error: {error}\n")
    print(f"wrote {Path(args.bundle) / GALLERY_FILE}: {len(gallery)} garments ({record['minutes']} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
