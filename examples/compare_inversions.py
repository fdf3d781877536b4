"""Compare how well each inversion reproduces a photo before any edit: e4e (FICE), optimisation, PTI.

    python examples/compare_inversions.py --steps 100

An edit can only be as faithful as its inversion: PTI tunes a private copy of the generator until it renders
the photo (the bundle's generator is never changed), then edits in that copy (`--inversion pti` on the CLI).
"""

import argparse
from pathlib import Path

import torch

from ficekit import FicePipeline
from ficekit.eval.metrics import psnr
from ficekit.framing import fit_to_square
from ficekit.generator import synthesize_01
from ficekit.imageio import comparison_grid, read_image, write_png
from ficekit.inversion import invert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="demo")
    parser.add_argument("--steps", type=int, default=None, help="optimize/pti steps (default: the methods')")
    parser.add_argument("--out", type=Path, default=Path("inversion-out"))
    args = parser.parse_args()

    pipe = FicePipeline.from_bundle(args.bundle)
    photo = read_image(pipe.bundle.example_images[0])
    x, _ = fit_to_square(photo[None].to(pipe.device), pipe.resolution)  # the generator's square frame
    columns = [x[0].cpu()]
    for method in ("e4e", "optimize", "pti"):
        steps = None if method == "e4e" else args.steps  # e4e is one encoder pass
        inversion = invert(x, pipe.generator, pipe.encoder, method=method, steps=steps, progress=False)
        with torch.no_grad():
            reconstruction = synthesize_01(inversion.generator, inversion.ws).clamp(0, 1)
        print(f"{method:9} PSNR {float(psnr(reconstruction, x)[0]):5.1f} dB in {inversion.seconds:.1f} s")
        columns.append(reconstruction[0].cpu())
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {write_png(comparison_grid(columns), args.out / 'inversions.png')} (photo | e4e | optimize | pti)")


if __name__ == "__main__":
    main()
