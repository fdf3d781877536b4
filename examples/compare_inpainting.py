"""ficekit against diffusion inpainting on exactly the same masks (the baseline comparison FICE is used for).

    pip install -e ".[diffusion]"
    python examples/compare_inpainting.py --model path/to/stable-diffusion-inpainting --text "red t-shirt"

Both methods repaint the same blend mask (FicePipeline.edit_masks), with the same framing and stitching, so
they differ only in how they fill it. Writes a side-by-side strip: photo | mask | ficekit | inpainting.
"""

import argparse
from pathlib import Path

from ficekit import FicePipeline
from ficekit.baselines.inpaint import InpaintBaseline
from ficekit.eval.metrics import psnr
from ficekit.imageio import comparison_grid, read_image, write_png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a local diffusers inpainting folder (or a cached hub id)")
    parser.add_argument("--text", default="red t-shirt")
    parser.add_argument("--bundle", default="demo")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--steps", type=int, default=25, help="diffusion steps")
    parser.add_argument("--out", type=Path, default=Path("compare-out"))
    args = parser.parse_args()

    pipe = FicePipeline.from_bundle(args.bundle)
    photo = read_image(pipe.bundle.example_images[0])
    mask = pipe.edit_masks(photo, args.text)[0]  # [1, H, W], 1 = repainted

    ours = pipe.edit(photo, args.text, iterations=args.iterations, progress=False).images[0]
    baseline = InpaintBaseline.from_pretrained(args.model, device="auto", num_inference_steps=args.steps)
    theirs = baseline.inpaint([photo], [mask], args.text, seed=0, progress=False)[0]

    outside = (mask == 0).float()[None]  # [1, 1, H, W]
    for name, image in (("ficekit", ours), ("inpainting", theirs)):
        print(f"{name}: PSNR outside the mask {float(psnr(image[None], photo[None], outside)):.1f} dB")
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_png(comparison_grid([photo, mask, ours, theirs]), args.out / "comparison.png")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
