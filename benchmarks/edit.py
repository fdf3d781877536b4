"""Editing speed: iterations per second and seconds per edited image, with the time split per model.

Runs the whole `FicePipeline.edit` (perception, e4e, the W+ loop, stitching) on a bundle's example photo.
Bundles: 'demo' (the shipped one, when present), any bundle folder, or random-weight bundles in real
formats: '--preset tiny' or '--preset fice' (FICE-size models: 256-px StyleGAN2, R50 DensePose, DeepLabV3,
CLIP RN50x4, e4e IR-SE-50). On a CPU the FICE-size loop is slow; time a few iterations and read the
extrapolated seconds per 500-iteration edit.

    python benchmarks/edit.py --preset fice --iterations 20 --device cuda
    python benchmarks/edit.py --bundle demo
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch

from ficekit.bundle import load_bundle
from ficekit.imageio import read_image
from ficekit.pipeline import FicePipeline
from ficekit.random_bundle import write_random_bundle

# Optimiser-time keys of EditResult.timings, by the model they belong to.
SPLIT = {
    "generator": "optimize.generator",
    "clip": "optimize.clip",
    "densepose": "optimize.shape",
    "segmenter": "optimize.head_shape",
    "backward+adam": "optimize.backward",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--bundle", help="bundle name or folder (default: demo)")
    src.add_argument("--preset", choices=["tiny", "fice"], help="random-weight bundle of this size instead")
    parser.add_argument("--iterations", type=int, default=None, help="optimisation steps (default: the bundle's)")
    parser.add_argument("--batch", type=int, default=1, help="photos edited together")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/edit.json"), help="where to write")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.preset:
            bundle = write_random_bundle(Path(tmp) / args.preset, preset=args.preset, seed=0)
        else:
            bundle = load_bundle(args.bundle or "demo")
        pipe = FicePipeline.from_bundle(bundle, device=args.device, timing=True)
        photo = read_image(bundle.example_images[0])
        photos = [photo] * args.batch
        iterations = args.iterations or bundle.defaults.iterations
        pipe.edit(photos, "striped cotton shirt", iterations=1, progress=False)  # warm-up (builds, caches)
        result = pipe.edit(photos, "striped cotton shirt", iterations=iterations, progress=False)

    t = result.timings
    steps = iterations + 1
    per_step = t["optimize"] / steps
    full_edit = t["total"] - t["optimize"] + per_step * (bundle.defaults.iterations + 1)
    split = {name: t.get(key, 0.0) / steps for name, key in SPLIT.items()}
    report = {
        "benchmark": "FicePipeline.edit, per edit of a batch",
        "bundle": args.preset and f"random:{args.preset}" or bundle.name,
        "device": torch.cuda.get_device_name() if pipe.device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "batch": args.batch,
        "iterations_timed": iterations,
        "iterations_per_second": steps / t["optimize"],
        "seconds_per_image_timed": t["total"] / args.batch,
        "seconds_per_image_at_default_iterations": full_edit / args.batch,
        "default_iterations": bundle.defaults.iterations,
        "seconds_per_iteration_by_model": split,
        "seconds_setup": {k: t[k] for k in ("perception", "encoder", "stitch")},
    }
    print(f"bundle {report['bundle']} on {report['device']}, batch {args.batch}, {iterations} iterations timed")
    print(f"{'iterations/s':<34}{report['iterations_per_second']:>10.2f}")
    print(f"{'s / image (timed run)':<34}{report['seconds_per_image_timed']:>10.2f}")
    print(f"{f's / image at {bundle.defaults.iterations} iterations':<34}{full_edit / args.batch:>10.2f}")
    for name, seconds in split.items():
        print(f"  {name + ' s / iteration':<32}{seconds:>10.4f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
