"""python -m ficekit.app — edit the garment in a photo from a local web page (gradio).

Examples:
  python -m ficekit.app                                   # demo bundle, http://127.0.0.1:7860
  python -m ficekit.app --bundle fice --device cuda --port 8080
  python -m ficekit.app --iterations 40 --host 0.0.0.0     # reachable from other machines: mind who can

Upload a photo or pick one of the bundle's examples, type an instruction ("red t-shirt"), then follow-ups
("add white stripes", "long sleeves"); each round starts from the last. Every browser tab has its own
session. Needs the optional extra: pip install 'ficekit[app]'.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys

from ficekit.cli import fail

GRADIO_MAJOR = 6  # the page uses gradio 6's API (launch(css=...), Image(buttons=...))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ficekit.app", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--bundle", default="demo", help="model bundle: 'demo', 'fice', or a folder with bundle.json (default: demo)")
    add("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    add("--port", type=int, default=7860, help="port to listen on (default: 7860)")
    add("--iterations", type=int, help="optimisation steps of a first round (default: the bundle's)")
    add("--followup-iterations", type=int, metavar="N",
        help="optimisation steps of a follow-up round (default: the bundle's, or a third of --iterations)")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    add("--preview-every", type=int, default=5, metavar="N", help="live preview every N steps (default: 5)")
    add("--quiet", action="store_true", help="print nothing but errors")
    return p


_fail = functools.partial(fail, 'ficekit.app')  # one line on stderr, exit code 2


def main(argv: list[str] | None = None) -> int:
    """Parse options, load the bundle's models once, and serve the page until Ctrl-C."""
    args = build_parser().parse_args(argv)
    if not 0 < args.port < 65536:
        return _fail(f"--port must be 1..65535, got {args.port}")
    if args.preview_every < 1:
        return _fail(f"--preview-every must be >= 1, got {args.preview_every}")
    # Before gradio is imported: no usage statistics and no version check leave this machine.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        return _fail("the web page needs gradio: pip install 'ficekit[app]'")
    if int(gradio.__version__.split(".")[0]) < GRADIO_MAJOR:
        return _fail(f"the web page needs gradio {GRADIO_MAJOR} or newer, found {gradio.__version__}: "
                     "pip install -U 'ficekit[app]'")
    from ..bundle import load_bundle
    from ..pipeline import FicePipeline
    from ..settings import edit_settings
    from .page import build_page, serve

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests to the page
    overrides = {"iterations": args.iterations, "followup_iterations": args.followup_iterations}
    try:
        bundle = load_bundle(args.bundle)
        settings = edit_settings(bundle.defaults, **overrides)  # impossible options fail before any model loads
        pipe = FicePipeline.from_bundle(bundle, device=args.device)
    except (ValueError, FileNotFoundError) as e:  # bundle, checkpoint and option errors name their cause
        return _fail(str(e))
    about = (
        f"Bundle **{pipe.bundle.name}** on {pipe.device}: {settings.iterations} optimisation steps for a first "
        f"instruction, {settings.rounds_iterations} for each follow-up."
    )
    page = build_page(
        lambda photo, name: pipe.session(photo, name=name, **overrides), pipe.bundle.example_images, about,
        args.preview_every,
    )
    try:
        serve(page, host=args.host, port=args.port, quiet=args.quiet)
    except OSError as e:  # the port is taken or the address cannot be bound
        return _fail(f"cannot serve on {args.host}:{args.port}: {e}")
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
