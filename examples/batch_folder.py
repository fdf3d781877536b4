"""Edit every photo of a folder with one instruction, with a progress bar; results keep the file names.

    python examples/batch_folder.py --input-dir photos/ --text "red polka dot dress" --out edited/

A photo that cannot be read, or that is outside the bundle's world, is reported and skipped; the rest go on.
"""

import argparse
from pathlib import Path

from tqdm.auto import tqdm

from ficekit import FicePipeline, ImageReadError, OutOfDomainError
from ficekit.imageio import list_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input-dir", type=Path, help="folder of photos (default: the bundle's examples)")
    parser.add_argument("--text", default="red t-shirt")
    parser.add_argument("--bundle", default="demo")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("batch-out"))
    args = parser.parse_args()

    pipe = FicePipeline.from_bundle(args.bundle)
    paths = list_images(args.input_dir) if args.input_dir else pipe.bundle.example_images
    args.out.mkdir(parents=True, exist_ok=True)
    skipped = []
    for path in tqdm(paths, desc="editing", unit="photo"):
        try:
            # One photo per call keeps memory flat; pass a list to optimise several photos together instead.
            result = pipe.edit(path, args.text, output_type="pil", iterations=args.iterations, progress=False)
        except (ImageReadError, OutOfDomainError) as e:
            skipped.append(f"{path}: {e}")
            continue
        result.images[0].save(args.out / f"{Path(path).stem}_edited.png")
    print(f"edited {len(paths) - len(skipped)} photo(s) into {args.out}")
    for line in skipped:
        print(f"skipped {line}")


if __name__ == "__main__":
    main()
