"""Command line: `python -m stylegan2_ops build [--verbose]` compiles the CUDA kernels ahead of time.

Examples:
    python -m stylegan2_ops build
    TORCH_CUDA_ARCH_LIST="8.6;9.0" python -m stylegan2_ops build --verbose
"""

from __future__ import annotations

import argparse
import logging
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stylegan2_ops",
        description=__doc__.split("\n", 1)[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    build = sub.add_parser(
        "build",
        help="build (or reuse) the CUDA extension and print where it is",
        description="Build the bias_act/upfirdn2d CUDA extension now (normally built on first use). "
        "Honours TORCH_CUDA_ARCH_LIST (default: the visible GPUs, or 9.0+PTX), TORCH_EXTENSIONS_DIR "
        "and CUDA_HOME.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    build.add_argument("--verbose", action="store_true", help="show the compiler output and build steps")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 = built, 1 = could not build)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    from . import _build

    try:
        plan = _build.plan_build()
        module = _build.build(verbose=args.verbose, plan=plan)
    except _build.BuildError as e:
        print(f"stylegan2_ops: could not build the CUDA extension:\n{e}", file=sys.stderr)
        return 1
    print(f"built {plan.name} (bias_act, upfirdn2d) for TORCH_CUDA_ARCH_LIST={plan.arch_list}")
    print(f"library: {module.__file__}")
    print(f"build folder: {plan.build_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
