"""python -m ficekit.synthetic.train — train every demo model on the synthetic world and write the bundle.

Trains, in order: the StyleGAN2 generator (+ discriminator), the e4e encoder (on the generator's samples
and rendered photos), a small CLIP (image-caption pairs), a small DensePose (rendered I/U/V) and a small
parser (with the FICE-style 3-class segmenter as a view of it). Writes each model file and a bundle.json
with provenance (seeds, steps, seconds, final metrics) into --out. Each trainer runs alone with --only.

Examples:
  python -m ficekit.synthetic.train --out checkpoints/demo --minutes 60
  python -m ficekit.synthetic.train --out checkpoints/demo --only clip,parser --minutes 10 --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ficekit.bundle import BUNDLE_FILE, Bundle, EditDefaults, ModelSpec, load_bundle, sha256_file, write_bundle
from ficekit.checkpoint_io import load_torch_file
from ficekit.synthetic.dataset import held_out_seeds
from ficekit.synthetic.render import render
from ficekit.synthetic.training import TrainReport

log = logging.getLogger(__name__)

STAGES = ("gan", "e4e", "clip", "densepose", "parser")
# Share of the time budget each stage gets when all run; the GAN dominates the demo's quality.
TIME_SHARES = {"gan": 0.55, "e4e": 0.2, "clip": 0.1, "densepose": 0.075, "parser": 0.075}
STEP_BACKSTOP = 1_000_000  # stages end by their time budget; this only bounds a runaway loop
EXAMPLE_SIZE = 128  # example photos are rendered larger than the generator; the editor fits them
# Demo defaults: FICE's weights, garment auto-masking and feathered stitching (the ficekit extensions).
DEMO_DEFAULTS = EditDefaults(iterations=200, mask="auto", stitch="feather")


def _stage_runner(stage: str) -> Callable[..., TrainReport | list[TrainReport]]:
    """The trainer function of a stage, imported only when it runs."""
    if stage == "gan":
        from ficekit.synthetic.train_gan import train_gan

        return train_gan
    if stage == "e4e":
        from ficekit.synthetic.train_e4e import train_e4e

        return lambda out_dir, **kw: train_e4e(out_dir, out_dir / "generator.pt", **kw)
    if stage == "clip":
        from ficekit.synthetic.train_clip import train_clip

        return train_clip
    if stage == "densepose":
        from ficekit.synthetic.train_densepose import train_densepose

        return train_densepose
    from ficekit.synthetic.train_parser import train_parser

    return train_parser


def _write_examples(out_dir: Path, n: int = 2) -> list[str]:
    """Held-out renders as the bundle's example photos (never seen in training)."""
    from PIL import Image

    names = []
    for i, seed in enumerate(held_out_seeds(n)):
        name = f"examples/person{i}.png"
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            Image.fromarray(render(seed, size=EXAMPLE_SIZE).image).save(path)
        names.append(name)
    return names


def _existing(out_dir: Path) -> tuple[dict[str, ModelSpec], dict[str, Any]]:
    """Model records and training provenance already in `out_dir`, to retrain only some roles: a bundle's,
    or, before any bundle.json exists, a generator.pt the GAN stage wrote (its embedded training record)."""
    if (out_dir / BUNDLE_FILE).exists():
        bundle = load_bundle(out_dir)
        return dict(bundle.models), dict(bundle.provenance.get("training", {}))
    generator = out_dir / "generator.pt"
    if not generator.exists():
        return {}, {}
    record = load_torch_file(generator, "generator checkpoint").get("training", {})
    return {"generator": ModelSpec("generator.pt", "fice")}, {"generator": record}


def train_bundle(
    out_dir: str | Path,
    stages: Sequence[str] = STAGES,
    minutes: float = 60.0,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    stage_kwargs: dict[str, dict[str, Any]] | None = None,
    threads: int | None = None,
) -> Bundle:
    """Train `stages` within about `minutes` of wall-clock time and write `out_dir`/bundle.json.

    The time budget is split by TIME_SHARES among the stages that run and ends each stage (the step cap
    is only a backstop unless stage_kwargs[stage]['steps'] sets one). `threads` sets torch's CPU threads
    for the run (on a busy machine 1 thread trains several times faster than oversubscribed cores).
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    if minutes <= 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models, training = _existing(out)
    if "e4e" in stages and "gan" not in stages and "generator" not in models:
        raise ValueError(f"training e4e needs a generator: {out} has none; include the 'gan' stage")
    share_total = sum(TIME_SHARES[s] for s in stages)
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        _run_stages(out, stages, minutes, share_total, models, training, device, seed, progress, stage_kwargs)
    finally:
        torch.set_num_threads(previous_threads)
    provenance = {
        "kind": "demo models trained by ficekit on its synthetic fashion world",
        "created_by": "python -m ficekit.synthetic.train",
        "seed": seed,
        "device": str(device),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - started, 1),
        "training": training,
    }
    examples = _write_examples(out)
    return write_bundle(out, models, DEMO_DEFAULTS, provenance, examples, name="demo", overwrite=True)


def _run_stages(
    out: Path,
    stages: Sequence[str],
    minutes: float,
    share_total: float,
    models: dict[str, ModelSpec],
    training: dict[str, Any],
    device: str,
    seed: int,
    progress: bool,
    stage_kwargs: dict[str, dict[str, Any]] | None,
) -> None:
    """Run the stages in STAGES order, recording each trained model's record and provenance."""
    for stage in STAGES:
        if stage not in stages:
            continue
        budget_s = 60.0 * minutes * TIME_SHARES[stage] / share_total
        kwargs = dict(steps=STEP_BACKSTOP, time_budget_s=budget_s, device=device, seed=seed, progress=progress)
        kwargs.update((stage_kwargs or {}).get(stage, {}))
        log.info("training %s for up to %.1f min", stage, budget_s / 60)
        reports = _stage_runner(stage)(out, **kwargs)
        for report in reports if isinstance(reports, list) else [reports]:
            models[report.role] = dataclasses.replace(report.spec, sha256=sha256_file(out / report.spec.file))
            training[report.role] = report.provenance()
            log.info("%s: %d steps in %.0f s, %s", report.role, report.steps, report.seconds, report.metrics)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ficekit.synthetic.train", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write (e.g. checkpoints/demo)")
    parser.add_argument("--only", default=",".join(STAGES), help=f"comma-separated stages (default: all of {','.join(STAGES)})")
    parser.add_argument("--minutes", type=float, default=60.0, help="total wall-clock budget (default: 60)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    try:
        bundle = train_bundle(
            args.out, stages, args.minutes, args.device, args.seed, progress=not args.quiet, threads=args.threads
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"ficekit.synthetic.train: error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"wrote {bundle.root / BUNDLE_FILE} ({', '.join(sorted(bundle.models))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
