"""python -m ficekit.eval.synthetic — end-to-end edit quality on held-out renders of the synthetic world.

Each case is a held-out render (a seed never used in training) and a target for its top or dress: a new
colour, a new pattern, or both, phrased as an instruction that names the whole target ("red striped
t-shirt"). ficekit edits the photo under several configurations and independent judges score the result:

  colour_success        the garment's dominant palette colour is the target (judges.colour_matches)
  pattern_success       a CNN trained only on renderer crops (judges.PatternJudge) sees the target pattern
  psnr_outside_mask_db  PSNR outside the edit mask: the true garment region (renderer labels) grown by
                        one pixel; an exact copy (infinite PSNR) counts as PSNR_CAP_DB in the mean
  head_psnr_db          PSNR over the head and hair (same cap)
  pose_part_iou         DensePose part IoU between photo and result (the bundle's DensePose on both)
  seconds_per_edit      wall-clock seconds of one edit (perception, inversion, optimisation, stitching)

Colour and pattern are judged on every case (a colour-only edit must keep the pattern and vice versa).
The 'ideal' row judges the renderer's own drawing of the target: the judges' ceiling.

Examples:
  python -m ficekit.eval.synthetic --n 24 --json benchmarks/results/synthetic.json
  python -m ficekit.eval.synthetic --n 2 --iterations 5 --configs fice,auto+feather
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ficekit.eval.judges import JUDGED_SLOTS, PatternJudge, colour_matches, palette_votes
from ficekit.eval.metrics import part_iou, psnr
from ficekit.mask_ops import dilate
from ficekit.synthetic.captions import GARMENT_WORDS, PATTERN_WORDS, colour_words
from ficekit.synthetic.dataset import held_out_seeds
from ficekit.synthetic.render import Sample, render
from ficekit.synthetic.world import PALETTE, PATTERNS, Garment, contrasting_colours

logger = logging.getLogger(__name__)

PSNR_CAP_DB = 100.0  # an exactly preserved region counts as this in the means (PSNR would be infinite)
EDIT_KINDS = ("colour", "pattern", "both")
# Configurations compared: FICE's recipe (its masks, stitch and plain CLIP term), auto-masking with each
# stitcher, the latent regularisers, and the CLIP term without random views; unnamed settings are the bundle's.
CONFIGS: dict[str, dict[str, Any]] = {
    "fice": {"mask": "fice", "stitch": "fice", "regularizer": "w_delta", "clip_augment": 0},
    "auto+fice-stitch": {"mask": "auto", "stitch": "fice", "regularizer": "w_delta"},
    "auto+hard": {"mask": "auto", "stitch": "hard", "regularizer": "w_delta"},
    "auto+feather": {"mask": "auto", "stitch": "feather", "regularizer": "w_delta"},
    "auto+laplacian": {"mask": "auto", "stitch": "laplacian", "regularizer": "w_delta"},
    "auto+feather+w_mean": {"mask": "auto", "stitch": "feather", "regularizer": "w_mean"},
    "auto+feather+pn": {"mask": "auto", "stitch": "feather", "regularizer": "pn"},
    "auto+feather+none": {"mask": "auto", "stitch": "feather", "regularizer": "none"},
    "auto+feather+noaug": {"mask": "auto", "stitch": "feather", "regularizer": "w_delta", "clip_augment": 0},
}
METRICS = ("colour_success", "pattern_success", "psnr_outside_mask_db", "head_psnr_db", "pose_part_iou", "seconds_per_edit")


@dataclass(frozen=True)
class EditCase:
    """One benchmark case: a held-out photo, the garment slot to edit, the target garment and its instruction."""

    seed: int
    slot: str  # 'upper' or 'dress'
    kind: str  # 'colour', 'pattern' or 'both'
    photo: Sample
    target: Garment
    ideal: Sample  # the renderer's drawing of the target (everything else pixel-identical)
    text: str

    def garment_mask(self) -> torch.Tensor:
        """[H, W] bool: the edited garment's pixels in the photo."""
        return torch.from_numpy(self.photo.mask(self.slot))


def instruction_for(garment: Garment) -> str:
    """The instruction naming a whole target garment: '<colour> <pattern> <garment>' ('red striped t-shirt')."""
    pattern = next(w for w in PATTERN_WORDS[garment.pattern] if w) if garment.pattern != "plain" else "plain"
    return f"{colour_words(garment.colour)[0]} {pattern} {GARMENT_WORDS[garment.kind][0]}"


def _target(garment: Garment, kind: str, rng: np.random.Generator) -> Garment:
    colour, pattern, secondary = garment.colour, garment.pattern, garment.secondary
    if kind in ("colour", "both"):
        colour = str(rng.choice([c for c in PALETTE if c != garment.colour]))
    if kind in ("pattern", "both"):
        pattern = str(rng.choice([p for p in PATTERNS if p != garment.pattern]))
    if pattern == "plain":
        secondary = None
    elif secondary is None or secondary not in contrasting_colours(colour):
        secondary = str(rng.choice(contrasting_colours(colour)))
    return dataclasses.replace(garment, colour=colour, pattern=pattern, secondary=secondary)


def make_cases(n: int, size: int, seed: int = 0) -> list[EditCase]:
    """`n` cases from held-out renders at `size` px without a jacket; edit kinds cycle colour, pattern, both."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    cases: list[EditCase] = []
    for photo_seed in held_out_seeds(20 * n + 20, seed=seed):
        photo = render(photo_seed, size=size)
        garments = photo.attributes.garments()
        slots = [s for s in JUDGED_SLOTS if s in garments]
        if "outerwear" in garments or not slots or int(photo.mask(slots[0]).sum()) < 16:
            continue
        slot, kind = slots[0], EDIT_KINDS[len(cases) % len(EDIT_KINDS)]
        target = _target(garments[slot], kind, rng)
        ideal = render(photo_seed, size=size, attributes=photo.attributes.with_garment(slot, **_changes(target)))
        cases.append(EditCase(photo_seed, slot, kind, photo, target, ideal, instruction_for(target)))
        if len(cases) == n:
            return cases
    raise RuntimeError(f"found only {len(cases)} held-out renders without a jacket for {n} cases")


def _changes(g: Garment) -> dict[str, Any]:
    return {"colour": g.colour, "pattern": g.pattern, "secondary": g.secondary}


def _grown(mask: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    """[H, W] bool mask grown by `pixels` (the anti-aliased rim around a garment's label pixels)."""
    return dilate(mask[None, None].float(), pixels)[0, 0] > 0


def _capped_psnr(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor) -> float:
    value = float(psnr(a[None], b[None], region[None, None].float())[0])
    return min(value, PSNR_CAP_DB)


class _Scorer:
    """Scores results of the cases with the judges and, when the bundle has one, its DensePose."""

    def __init__(self, judge: PatternJudge, densepose: Any, device: torch.device) -> None:
        self.judge = judge
        self.densepose = densepose
        self.device = device
        self._photo_parts: dict[int, torch.Tensor] = {}

    def _parts(self, image: torch.Tensor) -> torch.Tensor:
        from ficekit.masking import densepose_part_maps

        x = image[None].to(self.device)
        with torch.no_grad():
            probs = densepose_part_maps(self.densepose(x), tuple(x.shape[-2:]), num_images=1)
        return probs.argmax(dim=1).cpu()  # [1, H, W]

    def score(self, case: EditCase, result: torch.Tensor) -> dict[str, float]:
        garment = case.garment_mask()
        patterned = case.target.pattern != "plain"
        votes = palette_votes(result, garment, mixes=patterned)
        scores = {
            "colour_success": float(colour_matches(votes, case.target.colour, patterned)),
            "pattern_success": float(self.judge.predict(result[None], garment[None])[0] == case.target.pattern),
            "psnr_outside_mask_db": _capped_psnr(result, case.photo.to_tensor(), ~_grown(garment)),
            "head_psnr_db": _capped_psnr(result, case.photo.to_tensor(), torch.from_numpy(case.photo.mask("head") | case.photo.mask("hair"))),
            "pose_part_iou": math.nan,
        }
        if self.densepose is not None:
            if case.seed not in self._photo_parts:
                self._photo_parts[case.seed] = self._parts(case.photo.to_tensor())
            scores["pose_part_iou"] = float(part_iou(self._photo_parts[case.seed], self._parts(result))[0])
        return scores


def _summary(rows: list[dict[str, float]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in METRICS:
        values = [r[key] for r in rows if key in r and not math.isnan(r[key])]
        out[key] = float(np.mean(values)) if values else None
    return out


def run_benchmark(
    bundle: str = "demo",
    n: int = 24,
    seed: int = 0,
    iterations: int | None = None,
    configs: Sequence[str] = tuple(CONFIGS),
    device: str = "auto",
    progress: bool = True,
    judge_cache: str | None = None,
    grid_path: str | Path | None = None,
) -> dict[str, Any]:
    """Run every configuration on `n` cases and return the report (what --json writes)."""
    from ficekit.pipeline import FicePipeline

    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    pipe = FicePipeline.from_bundle(bundle, device=device)
    size = pipe.resolution
    cases = make_cases(n, size, seed)
    judge = PatternJudge.trained(size, cache_dir=judge_cache, progress=progress)
    scorer = _Scorer(judge, pipe.densepose, pipe.device)
    iterations = pipe.settings().iterations if iterations is None else iterations

    per_case: dict[str, list[dict[str, Any]]] = {"ideal": []}
    for case in cases:
        per_case["ideal"].append(scorer.score(case, case.ideal.to_tensor()) | {"seconds_per_edit": math.nan})
    results: dict[str, list[torch.Tensor]] = {}
    for name in configs:
        overrides = dict(CONFIGS[name], iterations=iterations, seed=seed, batch_size=1)
        if overrides["mask"] == "fice" and pipe.segmenter is None:
            logger.warning("skipping %s: bundle %s has no segmenter", name, pipe.bundle.name)
            continue
        rows, images = [], []
        for case in cases:
            start = time.perf_counter()
            result = pipe.edit(case.photo.to_tensor(), case.text, progress=False, **overrides).images[0]
            seconds = time.perf_counter() - start
            rows.append(scorer.score(case, result) | {"seconds_per_edit": seconds})
            images.append(result)
            logger.info("%s seed %d %r: %s", name, case.seed, case.text, {k: round(v, 3) for k, v in rows[-1].items()})
        per_case[name] = rows
        results[name] = images
        if progress:
            print(f"  {name}: {_format_row(_summary(rows))}", file=sys.stderr)

    report = {
        "bundle": str(pipe.bundle.root),
        "n": n,
        "seed": seed,
        "iterations": iterations,
        "device": str(pipe.device),
        "resolution": size,
        "psnr_cap_db": PSNR_CAP_DB,
        "pattern_judge_held_out_accuracy": judge.accuracy,
        "configs": {name: {"settings": CONFIGS.get(name, {"renderer": True}), **_summary(rows)} for name, rows in per_case.items()},
        "cases": [
            {"seed": c.seed, "slot": c.slot, "kind": c.kind, "text": c.text,
             "scores": {name: rows[i] for name, rows in per_case.items()}}
            for i, c in enumerate(cases)
        ],
    }  # fmt: skip
    if grid_path is not None:
        write_grid(grid_path, cases, results)
    return report


def write_grid(path: str | Path, cases: Sequence[EditCase], results: dict[str, list[torch.Tensor]]) -> None:
    """A PNG with one row per case: photo | ideal edit | each configuration's result (nearest-upscaled x3).

    Like the --json report, it replaces an earlier benchmark output at the same path (atomically).
    """
    from ficekit.imageio import replace_png

    rows = []
    for i, case in enumerate(cases):
        tiles = [case.photo.to_tensor(), case.ideal.to_tensor()] + [images[i] for images in results.values()]
        rows.append(torch.cat(tiles, dim=2))
    grid = torch.cat(rows, dim=1)
    replace_png(F.interpolate(grid[None], scale_factor=3, mode="nearest")[0], Path(path))


def _format_row(summary: dict[str, float | None]) -> str:
    def fmt(key: str) -> str:
        v = summary.get(key)
        if v is None:
            return "-"
        return f"{100 * v:.0f}%" if key.endswith("success") else f"{v:.2f}" if key != "seconds_per_edit" else f"{v:.1f}"

    return "  ".join(f"{k}={fmt(k)}" for k in METRICS)


def format_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: one row per configuration."""
    header = "| configuration | colour success | pattern success | PSNR outside mask (dB) | head PSNR (dB) | pose IoU | s / edit |"
    lines = [header, "|" + "---|" * 7]
    for name, row in report["configs"].items():
        cells = []
        for key in METRICS:
            v = row.get(key)
            if v is None:
                cells.append("–")
            elif key.endswith("success"):
                cells.append(f"{100 * v:.0f} %")
            elif key == "seconds_per_edit":
                cells.append(f"{v:.1f}")
            else:
                cells.append(f"{v:.2f}" if key == "pose_part_iou" else f"{v:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null (JSON has neither); containers are walked."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ficekit.eval.synthetic", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--n", type=int, default=24, help="edit cases (default: 24)")
    parser.add_argument("--seed", type=int, default=0, help="picks the held-out photos and targets (default: 0)")
    parser.add_argument("--bundle", default="demo", help="bundle name or folder (default: demo)")
    parser.add_argument("--iterations", type=int, default=None, help="optimisation steps (default: the bundle's)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configurations (default: all)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--grid", type=Path, default=None, help="write a PNG grid of the results here")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.n < 1 or (args.iterations is not None and args.iterations < 0):
        print("ficekit.eval.synthetic: error: --n must be >= 1 and --iterations >= 0", file=sys.stderr)
        return 2
    from ficekit.checkpoint_io import CheckpointError

    try:
        report = run_benchmark(
            args.bundle, args.n, args.seed, args.iterations, [c.strip() for c in args.configs.split(",") if c.strip()],
            args.device, progress=not args.quiet, grid_path=args.grid,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"ficekit.eval.synthetic: error: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.json is not None:
        from ficekit.checkpoint_io import atomic_write

        args.json.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(_json_safe(report), indent=2, allow_nan=False)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
