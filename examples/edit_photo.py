"""Edit the garment in one photo from Python: PIL image in, PIL image out, plus the masks and a report.

    python examples/edit_photo.py --image me.jpg --text "striped cotton shirt"
    python examples/edit_photo.py                      # the demo bundle's first example person

Uses the offline demo bundle by default; pass --bundle fice after `python -m ficekit.download fice` for real photos.
"""

import argparse
import json
from pathlib import Path

from PIL import Image

from ficekit import FicePipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, help="your photo (default: the bundle's first example)")
    parser.add_argument("--text", default="striped cotton shirt")
    parser.add_argument("--bundle", default="demo")
    parser.add_argument("--iterations", type=int, default=None, help="default: the bundle's")
    parser.add_argument("--out", type=Path, default=Path("example-out"))
    args = parser.parse_args()

    pipe = FicePipeline.from_bundle(args.bundle, device="auto")  # loads every model of the bundle once
    photo = Image.open(args.image or pipe.bundle.example_images[0])

    # One call: check the photo, mask the garment, invert, optimise W+ under CLIP + preservation terms, stitch.
    result = pipe.edit(photo, args.text, output_type="pil", seed=0, iterations=args.iterations)

    args.out.mkdir(parents=True, exist_ok=True)
    result.images[0].save(args.out / "result.png")  # same size as the photo; outside the mask it IS the photo
    mask = Image.fromarray((result.blend_full[0][0].numpy() * 255).astype("uint8"))
    mask.save(args.out / "mask.png")  # white = repainted
    report = {
        "text": args.text,
        "garment": result.instructions[0].garment,
        "category": result.instructions[0].category,
        "final_losses": {name: values[-1] for name, values in result.history.items()},
        "seconds": result.timings["total"],
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'result.png'} and {args.out / 'mask.png'} in {report['seconds']:.1f} s")


if __name__ == "__main__":
    main()
