"""python -m ficekit.eval.inversion — how faithfully each inversion method reconstructs held-out renders.

Each held-out render of the synthetic world (seeds never used in training) is inverted on its own (one photo
per call: PTI tunes one generator copy per photo) by each method, and G'(W+) is compared with the photo:

  psnr_db          PSNR of the reconstruction over the whole image
  garment_psnr_db  PSNR over the garments (the renderer's upper/lower/dress/outerwear labels)
  ssim             SSIM over the whole image
  lpips            LPIPS over the whole image, only with --lpips-backbone (also then used by optimize and pti)
  seconds          wall-clock seconds per photo of the inversion (e4e included); cpu_seconds: this
                   process's CPU time, the same on an idle machine and less inflated on a shared one
  locality_psnr_db pti only: PSNR between the tuned and the original generator's images of W+ codes one
                   locality distance from the pivot (towards random w, as PTI's regulariser samples them),
                   how much of the generator around the photo the tuning kept (the edit moves W+ there)

Examples:
  python -m ficekit.eval.inversion --n 24 --seed 0 --json benchmarks/results/inversion.json
  python -m ficekit.eval.inversion --n 4 --figure docs/images/inversion_comparison.png --json /tmp/inv.json
  python -m ficekit.eval.inversion --n 2 --methods e4e,pti --steps-pti 5 --json /tmp/inv.json --quiet
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ficekit.eval.metrics import psnr, ssim
from ficekit.inversion import DEFAULT_STEPS, INVERSION_METHODS, PIVOTS, invert

logger = logging.getLogger(__name__)

GARMENT_LABELS = ("upper_garment", "lower_garment", "dress", "outerwear")
METRICS = ("psnr_db", "garment_psnr_db", "ssim", "lpips", "seconds", "cpu_seconds", "locality_psnr_db")
LOCALITY_SAMPLES = 4  # W+ codes around each pivot that locality_psnr_db averages over
LOCALITY_SEED_OFFSET = 7_919_000  # its random w come from another stream than the tuning's regulariser (seed)
FIGURE_SCALE = 3  # nearest-neighbour upscaling of the figure's tiles


def _garment_mask(sample: Any) -> torch.Tensor:
    """[H, W] bool: every garment pixel of a render (its parsing labels)."""
    mask = np.zeros(sample.parsing.shape, dtype=bool)
    for label in GARMENT_LABELS:
        mask |= sample.mask(label)
    return torch.from_numpy(mask)


def held_out_photos(
    n: int, size: int, seed: int = 0, world: str | None = None
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """The first `n` held-out renders of `world` (None = v1) at `size` px: their seeds, images [n,3,size,size] and
    garment masks [n,1,...]."""
    from ficekit.synthetic.dataset import held_out_seeds
    from ficekit.synthetic.render import render

    seeds = held_out_seeds(n, seed=seed)
    samples = [render(s, size=size, world=world) for s in seeds]
    photos = torch.stack([s.to_tensor() for s in samples])
    masks = torch.stack([_garment_mask(s) for s in samples])[:, None].float()
    return seeds, photos, masks


def lpips_net_of(path: Path) -> str:
    """The LPIPS backbone ('alex', 'vgg', 'squeeze') whose torchvision file `path` is or holds; 'alex' if unknown."""
    from ficekit.eval.metrics import LPIPS_BACKBONE_FILES

    for net, name in LPIPS_BACKBONE_FILES.items():
        if path.name == name or (path.is_dir() and (path / name).is_file()):
            return net
    return "alex"


def _scores(reconstruction: torch.Tensor, photo: torch.Tensor, garment: torch.Tensor, lpips: Any) -> dict[str, Any]:
    """Metrics of one reconstruction [1,3,H,W] against its photo (garment PSNR None when there is no garment)."""
    return {
        "psnr_db": float(psnr(reconstruction, photo)[0]),
        "garment_psnr_db": float(psnr(reconstruction, photo, garment)[0]) if garment.sum() > 0 else None,
        "ssim": float(ssim(reconstruction, photo)[0]),
        "lpips": float(lpips(reconstruction, photo)[0]) if lpips is not None else None,
    }


def locality_psnr(G: Any, inv: Any, seed: int, samples: int = LOCALITY_SAMPLES) -> float:
    """Mean PSNR between inv.generator and G rendering W+ codes one PTI locality distance from the pivot."""
    from ficekit.generator import synthesize_01
    from ficekit.inversion.pti import LOCALITY_PSI, locality_distance, morph_towards

    rng = torch.Generator().manual_seed(int(seed) + LOCALITY_SEED_OFFSET)  # not the w the tuning was held at
    z = torch.randn([samples, G.z_dim], generator=rng).to(inv.ws.device)
    with torch.no_grad():
        w = G.mapping(z, None, truncation_psi=LOCALITY_PSI, skip_w_avg_update=True)
        codes = morph_towards(inv.ws[:1].expand_as(w), w, locality_distance(G))
        tuned, original = synthesize_01(inv.generator, codes), synthesize_01(G, codes)
    return float(psnr(tuned.clamp(0, 1), original.clamp(0, 1)).mean())


def _brief(row: dict[str, Any]) -> str:
    """'PSNR/garment PSNR dB' of one case, for the progress lines."""
    garment = "-" if row["garment_psnr_db"] is None else f"{row['garment_psnr_db']:.1f}"
    return f"{row['psnr_db']:.1f}/{garment} dB"


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """The row with infinite or NaN values as None (JSON has neither; an exact copy has infinite PSNR)."""
    return {k: v if v is None or math.isfinite(v) else None for k, v in row.items()}


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values (None when there is none)."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def run_benchmark(
    bundle: str = "demo",
    n: int = 24,
    seed: int = 0,
    methods: Sequence[str] = INVERSION_METHODS,
    steps: dict[str, int] | None = None,
    pivot: str = "e4e",
    lpips_backbone: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    figure_path: str | Path | None = None,
    figure_rows: int = 4,
) -> dict[str, Any]:
    """Invert `n` held-out renders with each method and return the report (what --json writes)."""
    from ficekit.bundle import load_bundle
    from ficekit.generator import synthesize_01
    from ficekit.pipeline import resolve_device
    from ficekit.synthetic.world import bundle_world

    steps = {m: DEFAULT_STEPS[m] for m in methods} | {m: k for m, k in (steps or {}).items() if m in methods}
    torch_device = resolve_device(device)
    loaded = load_bundle(bundle)
    G = loaded.load("generator", torch_device)
    encoder = loaded.load("encoder", torch_device)
    lpips = None
    if lpips_backbone is not None:
        from ficekit.eval.metrics import LpipsDistance

        lpips = LpipsDistance(lpips_backbone, net=lpips_net_of(Path(lpips_backbone)), device=torch_device)
    size = int(G.img_resolution)
    world = bundle_world(loaded)  # the renders are of the bundle's own world
    seeds, photos, garments = held_out_photos(n, size, seed, world)

    per_case: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    reconstructions: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    losses: dict[str, list[str]] = {}
    for i, photo_seed in enumerate(seeds):
        photo, garment = photos[i : i + 1], garments[i : i + 1]
        for method in methods:
            cpu_start = time.process_time()
            inv = invert(photo, G, encoder, method, steps[method], seed=seed, progress=False, lpips=lpips, pivot=pivot)
            cpu_seconds = time.process_time() - cpu_start
            with torch.no_grad():
                image = synthesize_01(inv.generator, inv.ws).clamp(0, 1).cpu()
            row = _scores(image, photo, garment, lpips) | {"seconds": inv.seconds, "cpu_seconds": cpu_seconds}
            row = _finite(row | {"locality_psnr_db": locality_psnr(G, inv, seed) if inv.tuned else None})
            per_case[method].append(row)
            losses[method] = list(inv.losses)
            if i < figure_rows:
                reconstructions[method].append(image[0])
            del inv
        if progress:
            done = "  ".join(f"{m} {_brief(per_case[m][-1])}" for m in methods)
            print(f"  photo {i + 1}/{n} (seed {photo_seed}): {done}", file=sys.stderr)

    summary = {m: {k: _mean([row[k] for row in rows]) for k in METRICS} for m, rows in per_case.items()}
    report = {
        "bundle": str(loaded.root), "n": n, "seed": seed, "device": str(torch_device), "resolution": size, "world": world,
        "threads": torch.get_num_threads(), "steps": steps, "pivot": pivot if "pti" in methods else None,
        "lpips_backbone": str(lpips_backbone) if lpips_backbone is not None else None,
        "losses": losses, "methods": summary,
        "cases": [{"seed": s, "scores": {m: per_case[m][i] for m in methods}} for i, s in enumerate(seeds)],
    }  # fmt: skip
    if figure_path is not None:
        write_figure(figure_path, photos[:figure_rows], reconstructions)
    return report


def write_figure(path: str | Path, photos: torch.Tensor, reconstructions: dict[str, list[torch.Tensor]]) -> Path:
    """A PNG with one row per photo: photo | each method's reconstruction, labelled, nearest-upscaled x3."""
    from PIL import Image, ImageDraw

    from ficekit.checkpoint_io import atomic_write

    columns = list(reconstructions.values())
    rows = [torch.cat([photo] + [images[i] for images in columns], dim=2) for i, photo in enumerate(photos)]
    grid = F.interpolate(torch.cat(rows, dim=1)[None], scale_factor=FIGURE_SCALE, mode="nearest")[0]
    tile = photos.shape[-1] * FIGURE_SCALE
    header = 18
    canvas = Image.new("RGB", (grid.shape[2], grid.shape[1] + header), "white")
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    canvas.paste(Image.fromarray(pixels), (0, header))
    draw = ImageDraw.Draw(canvas)
    for column, name in enumerate(["photo", *reconstructions]):
        draw.text((column * tile + 4, 3), name, fill="black")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, lambda tmp: canvas.save(tmp, format="PNG"))


def format_table(report: dict[str, Any]) -> str:
    """The report's per-method means as a Markdown table."""
    lines = [
        "| method | steps | PSNR (dB) | garment PSNR (dB) | SSIM | LPIPS | s / photo | CPU s / photo "
        "| locality PSNR (dB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    formats = {"psnr_db": ".2f", "garment_psnr_db": ".2f", "ssim": ".3f", "lpips": ".3f", "seconds": ".2f"}
    formats |= {"cpu_seconds": ".2f", "locality_psnr_db": ".2f"}
    for method, row in report["methods"].items():
        cells = ["–" if row.get(key) is None else format(row[key], fmt) for key, fmt in formats.items()]
        lines.append(f"| {method} | {report['steps'][method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ficekit.eval.inversion", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--n", type=int, default=24, help="held-out renders (default: 24)")
    parser.add_argument("--seed", type=int, default=0, help="picks the renders, seeds the inversions (default: 0)")
    parser.add_argument("--bundle", default="demo", help="bundle name or folder (default: demo)")
    parser.add_argument("--methods", default=",".join(INVERSION_METHODS), help="comma-separated methods (default: all)")
    parser.add_argument(
        "--steps-optimize",
        type=int,
        default=None,
        metavar="K",
        help=f"optimize steps (default: {DEFAULT_STEPS['optimize']})",
    )
    parser.add_argument(
        "--steps-pti", type=int, default=None, metavar="K", help=f"pti tuning steps (default: {DEFAULT_STEPS['pti']})"
    )
    parser.add_argument("--pivot", default="e4e", help=f"pti's pivot, one of {', '.join(PIVOTS)} (default: e4e)")
    parser.add_argument("--lpips-backbone", type=Path, default=None,
                        help="torchvision weights of the LPIPS backbone (alexnet-owt-7be5be79.pth or its folder); "
                             "adds the LPIPS metric and loss term (default: none, MSE only)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument("--json", type=Path, required=True, help="write the report as JSON here")
    parser.add_argument("--figure", type=Path, default=None, help="write photo | reconstructions (PNG) here")
    parser.add_argument("--figure-rows", type=int, default=4, help="photos in the figure (default: 4)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(argv)


def _check_args(args: argparse.Namespace) -> list[str]:
    """The methods to run; ValueError (one line) for any bad option, before any model is loaded."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in INVERSION_METHODS]
    if not methods or unknown:
        choices = ",".join(INVERSION_METHODS)
        raise ValueError(f"--methods: expected a comma-separated subset of {choices}, got {args.methods!r}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"--methods: names a method twice: {args.methods!r}")
    if args.n < 1:
        raise ValueError(f"--n: expected >= 1, got {args.n}")
    for name in ("steps_optimize", "steps_pti"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise ValueError(f"--{name.replace('_', '-')}: expected >= 0, got {value}")
    if args.pivot not in PIVOTS:
        raise ValueError(f"--pivot: expected one of {', '.join(PIVOTS)}, got {args.pivot!r}")
    if args.figure_rows < 1:
        raise ValueError(f"--figure-rows: expected >= 1, got {args.figure_rows}")
    if args.figure is not None and args.figure.suffix.lower() != ".png":
        raise ValueError(f"--figure: expected a .png path, got {str(args.figure)!r}")
    if args.lpips_backbone is not None and not args.lpips_backbone.exists():
        raise ValueError(f"--lpips-backbone: {args.lpips_backbone} does not exist")
    return methods


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    prog = "ficekit.eval.inversion"
    try:
        methods = _check_args(args)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    from ficekit.checkpoint_io import CheckpointError, atomic_write

    steps = {m: k for m, k in (("optimize", args.steps_optimize), ("pti", args.steps_pti)) if k is not None}
    try:
        report = run_benchmark(
            args.bundle, args.n, args.seed, methods, steps, args.pivot, args.lpips_backbone, args.device,
            progress=not args.quiet, figure_path=args.figure, figure_rows=args.figure_rows,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, allow_nan=False)
    atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
