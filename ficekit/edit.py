"""python -m ficekit.edit — edit the garment in photos from a text description (FICE, GAN inversion).

Examples:
  python -m ficekit.edit --text "striped cotton shirt"
  python -m ficekit.edit --text "red polka dot dress" --image me.jpg --mask auto --stitch laplacian
  python -m ficekit.edit --text "blue jeans" --input-dir photos/ --bundle fice --device cuda --out results/
  python -m ficekit.edit --text "striped shirt" --weights clip=1,img=30,shape=10 --regularizer w_mean

Without --image/--input-dir the bundle's example photo is edited. Photos of any size or aspect are
padded to a square (repeating their border pixels), resized to the generator's resolution, edited, and
mapped back to their own size; outside the blend mask the photo is returned unchanged.
Writes, per photo, <name>_result.png, <name>_grid.png (photo | mask | generated | result),
<name>_mask_{edit,keep,blend}.png, and one report.json (settings, bundle, loss history, timings).
Existing files are never overwritten: a new name is chosen.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from .checkpoint_io import CheckpointError
from .imageio import ImageReadError, comparison_grid, list_images, read_image, unique_path, write_atomic, write_png

EXIT_USAGE = 2


def parse_weights(spec: str) -> dict[str, float]:
    """'clip=1,img=30' -> {'clip': 1.0, 'img': 30.0}; ValueError on malformed entries."""
    weights = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--weights: expected name=value, got {item!r}")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--weights: {name.strip()!r} has a non-numeric value {value!r}") from None
    return weights


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ficekit.edit", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--text", required=True, help="the garment description or instruction, e.g. 'striped cotton shirt'")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", nargs="+", type=Path, metavar="PATH", help="photo(s) to edit")
    src.add_argument("--input-dir", type=Path, metavar="DIR", help="edit every image in this folder")
    add("--bundle", default="demo", help="model bundle: 'demo', 'fice', or a folder with bundle.json (default: demo)")
    add("--out", type=Path, default=Path("ficekit-out"), help="output folder (default: ficekit-out)")
    add("--iterations", type=int, help="optimisation steps (default: the bundle's, FICE: 500)")
    add("--lr", type=float, help="Adam learning rate (default: the bundle's, FICE: 0.05)")
    add("--weights", help="loss weights as name=value pairs, e.g. clip=1,img=30,shape=10,head_shape=1,w_delta=1")
    add("--regularizer", help="latent regulariser: w_delta (FICE), w_mean, pn, none (default: the bundle's)")
    add("--mask", choices=["auto", "fice"], help="masks: auto (garment auto-masking) or fice (default: the bundle's)")
    add("--category", choices=["upper", "lower", "full", "outerwear"], help="garment category (default: from the text)")
    add("--stitch", help="stitching: fice, hard, feather, laplacian (default: the bundle's)")
    add("--schedule", help="learning-rate schedule: constant, cosine, rampdown (default: the bundle's)")
    add("--clip-augment", type=int, metavar="N", help="CLIP scores N random views of G(w); 0 = FICE (default: the bundle's)")
    add("--seed", type=int, default=0, help="random seed for a repeatable run (default: 0)")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    add("--batch-size", type=int, default=4, help="photos optimised together (default: 4)")
    add("--quiet", action="store_true", help="no progress bar and no summary; errors only")
    return p


def _fail(message: str) -> int:
    print(f"ficekit.edit: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _inputs(args: argparse.Namespace, bundle: Any) -> list[Path]:
    if args.image:
        return list(args.image)
    if args.input_dir:
        return list_images(args.input_dir)
    if not bundle.example_images:
        raise ImageReadError(f"bundle {bundle.name!r} has no example image; pass --image or --input-dir")
    return list(bundle.example_images)


def run(args: argparse.Namespace) -> int:
    """Run one edit job from parsed arguments; returns the process exit code."""
    from .bundle import load_bundle
    from .pipeline import FicePipeline, edit_settings

    if not args.text.strip():
        return _fail("--text is empty; describe the garment, e.g. --text 'striped cotton shirt'")
    overrides = dict(
        iterations=args.iterations, lr=args.lr, regularizer=args.regularizer, mask=args.mask, stitch=args.stitch,
        clip_augment=args.clip_augment,
        schedule=args.schedule, seed=args.seed, category=args.category, batch_size=args.batch_size,
        weights=parse_weights(args.weights) if args.weights else None,
    )
    bundle = load_bundle(args.bundle)
    settings = edit_settings(bundle.defaults, **overrides)  # validate before any model loads
    paths = _inputs(args, bundle)
    photos = [read_image(p) for p in paths]
    pipe = FicePipeline.from_bundle(bundle, device=args.device)
    result = pipe.edit(photos, args.text, progress=not args.quiet, **dataclass_dict(settings))

    out = args.out
    written = []
    for i, path in enumerate(paths):
        stem = path.stem
        photo, final = photos[i], result.images[i]
        blend = result.blend_full[i]
        generated_full = _unfit_generated(result, i, photo)
        written.append(write_png(final, unique_path(out / f"{stem}_result.png")))
        grid = comparison_grid([photo, blend, generated_full.clamp(0, 1), final])
        written.append(write_png(grid, unique_path(out / f"{stem}_grid.png")))
        for name in ("edit", "keep", "blend"):
            mask = getattr(result.masks, name)[i]
            written.append(write_png(mask, unique_path(out / f"{stem}_mask_{name}.png")))
    report = {
        "text": args.text,
        "instruction": _jsonable(result.instruction),
        "bundle": {"name": bundle.name, "root": str(bundle.root)},
        "images": [str(p) for p in paths],
        "settings": _jsonable(result.settings),
        "device": str(pipe.device),
        "loss_history": result.history,
        "final_losses": {k: v[-1] for k, v in result.history.items() if v},
        "timings_seconds": result.timings,
        "outputs": [str(p) for p in written],
    }
    report_path = write_atomic(unique_path(out / "report.json"), json.dumps(report, indent=2).encode())
    if not args.quiet:
        print(f"edited {len(paths)} photo(s) with {args.text!r} in {result.timings['total']:.1f} s")
        for p in written[:: 5]:
            print(f"  {p}")
        print(f"  {report_path}")
    return 0


def dataclass_dict(settings: Any) -> dict[str, Any]:
    """EditSettings as keyword overrides (weights as a plain dict)."""
    import dataclasses

    d = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    d["weights"] = dict(d["weights"])
    return d


def _unfit_generated(result: Any, i: int, photo: torch.Tensor) -> torch.Tensor:
    from .framing import fit_to_square

    _, framing = fit_to_square(photo[None], result.generated.shape[-1])
    return framing.unfit(result.generated[i : i + 1])[0]


def _jsonable(obj: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, run, and turn user errors into exit code 2 with a one-line message."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.quiet:
        warnings.filterwarnings("ignore", category=UserWarning)
    try:
        return run(args)
    except (ImageReadError, CheckpointError, FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
        return _fail(e.args[0] if isinstance(e, KeyError) and e.args else str(e))


if __name__ == "__main__":
    sys.exit(main())
