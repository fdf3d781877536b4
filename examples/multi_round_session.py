"""Edit one photo in rounds of instructions, as in a conversation: each round changes the garment it remembers.

    python examples/multi_round_session.py "red t-shirt" "add white stripes" "long sleeves" undo

A follow-up warm-starts from the previous round (a fraction of the first round's time) and is held to the
ORIGINAL photo outside the garment, so round 5 is no blurrier than round 1. "undo", "redo", "reset" work too.
"""

import argparse
from pathlib import Path

from ficekit import FicePipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("instructions", nargs="*", default=["red t-shirt", "add white stripes"])
    parser.add_argument("--bundle", default="demo")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("session-out"))
    args = parser.parse_args()

    pipe = FicePipeline.from_bundle(args.bundle)
    overrides = {} if args.iterations is None else {"iterations": args.iterations, "followup_iterations": args.iterations}
    session = pipe.session(pipe.bundle.example_images[0], **overrides)
    for text in args.instructions:
        session.apply(text)  # a Round, or the round now current after undo/redo
        current = session.current
        if current is None:
            print(f"{text!r:24} -> back to the photo")
            continue
        print(f"{text!r:24} -> {str(session.state)!r} ({current.seconds:.1f} s, {current.change.message})")
    files = session.save(args.out)  # every round's result, grid and masks, and a report.json
    print(f"wrote {sum(len(group.files) for group in files)} files into {args.out}")


if __name__ == "__main__":
    main()
