"""python -m ficekit.eval.rounds — two-round edits on held-out renders: warm-started session vs the alternatives.

Each case is a held-out render of the synthetic world and two instructions built from the renderer's vocabulary:
a first one naming the whole target garment ("blue plain t-shirt") and a follow-up changing one attribute of it
("make it navy", "add white polka dots", "checks instead", "make it plain"). The plans cycle colour then pattern,
pattern then colour, colour then colour. Three strategies edit every case, and the judges of
`ficekit.eval.synthetic` score each round against the renderer's target for that round:

  session      EditSession: round 2 warm-starts from round 1's W+ (the bundle's followup_iterations) and aims
               CLIP at the composed description of the new garment state; preservation targets stay the photo's
  naive_chain  round 2 re-inverts round 1's stitched result and edits it with the raw follow-up text at a first
               round's iterations (what edit_rounds did before sessions); round 1 is the session's own round 1,
               so the two strategies differ only in how the follow-up is made
  composed     one edit of the photo with the composed description of the final state (str(session.state))

success = the final result has the target colour AND the target pattern. Success rates carry 95 % bootstrap
intervals over cases, and `session - naive_chain` / `session - composed` paired differences carry theirs.

Examples:
  python -m ficekit.eval.rounds --n 24 --json benchmarks/results/rounds.json
  python -m ficekit.eval.synthetic --rounds 2 --n 2 --iterations 2 --followup-iterations 1
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

from ficekit.eval.judges import JUDGED_SLOTS, PatternJudge
from ficekit.eval.synthetic import (
    EditCase,
    Scorer,
    bootstrap_ci,
    garment_fields,
    instruction_for,
    json_safe,
    pattern_judge,
    target_for,
)
from ficekit.synthetic.captions import colour_words
from ficekit.synthetic.dataset import held_out_seeds
from ficekit.synthetic.render import Sample, render
from ficekit.synthetic.world import DEFAULT_WORLD, PALETTE, PATTERNS, Garment, bundle_world, contrasting_colours

logger = logging.getLogger(__name__)

PLANS: tuple[tuple[str, str], ...] = (("colour", "pattern"), ("pattern", "colour"), ("colour", "colour"))
STRATEGIES = ("session", "naive_chain", "composed")
# How a follow-up names each pattern of the world (the parser's words; the stripes name their direction, as the
# first round's instruction_for does: the world's captions call both orientations 'striped').
PATTERN_NOUNS: dict[str, str] = {
    "stripes_h": "horizontal stripes", "stripes_v": "vertical stripes", "dots": "polka dots", "checks": "checks",
}
SCORE_KEYS = ("colour_success", "pattern_success", "success", "psnr_outside_mask_db", "head_psnr_db", "pose_part_iou")
RATE_KEYS = ("colour_success", "pattern_success", "success")


@dataclass(frozen=True)
class RoundsCase:
    """A held-out photo edited in two rounds: the target garment and instruction of each round, and the
    renderer's drawing of each target (the judges score round k against targets[k])."""

    seed: int
    slot: str  # 'upper' or 'dress'
    plan: tuple[str, str]  # the attribute each round changes
    photo: Sample
    targets: tuple[Garment, Garment]
    ideals: tuple[Sample, Sample]
    texts: tuple[str, str]  # the first instruction (the whole garment) and the follow-up (one change)

    def judged(self, k: int, text: str | None = None) -> EditCase:
        """Round k's target as a single-edit case, for the synthetic benchmark's scorer."""
        kind = self.plan[k] if k == 0 else "+".join(self.plan)
        return EditCase(self.seed, self.slot, kind, self.photo, self.targets[k], self.ideals[k], text or self.texts[k])


def follow_up(garment: Garment, kind: str, rng: np.random.Generator) -> tuple[Garment, str]:
    """A follow-up changing `kind` ('colour' or 'pattern') of `garment`, and its text in the parser's words.

    A new colour of a patterned garment is one its pattern colour still contrasts with (the follow-up does not
    name the pattern colour, so it must stay valid); a new pattern keeps the pattern colour when it contrasts.
    """
    if kind == "colour":
        options = [c for c in PALETTE if c != garment.colour]
        if garment.secondary is not None:
            options = [c for c in options if c != garment.secondary and garment.secondary in contrasting_colours(c)]
        colour = str(rng.choice(options))
        return dataclasses.replace(garment, colour=colour), f"make it {colour_words(colour)[0]}"
    if kind != "pattern":
        raise ValueError(f"follow_up: kind must be 'colour' or 'pattern', got {kind!r}")
    pattern = str(rng.choice([p for p in PATTERNS if p != garment.pattern]))
    if pattern == "plain":
        return dataclasses.replace(garment, pattern="plain", secondary=None), "make it plain"
    secondary = garment.secondary
    if secondary is None or secondary not in contrasting_colours(garment.colour):
        secondary = str(rng.choice(contrasting_colours(garment.colour)))
    words = f"{colour_words(secondary)[0]} {PATTERN_NOUNS[pattern]}"
    text = f"add {words}" if garment.pattern == "plain" else f"{words} instead"
    return dataclasses.replace(garment, pattern=pattern, secondary=secondary), text


def make_round_cases(n: int, size: int, seed: int = 0, world: str = DEFAULT_WORLD) -> list[RoundsCase]:
    """`n` two-round cases from held-out renders of `world` at `size` px without a jacket; the plans cycle
    through PLANS."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    cases: list[RoundsCase] = []
    for photo_seed in held_out_seeds(20 * n + 20, seed=seed):
        photo = render(photo_seed, size=size, world=world)
        garments = photo.attributes.garments()
        slots = [s for s in JUDGED_SLOTS if s in garments]
        if "outerwear" in garments or not slots or int(photo.mask(slots[0]).sum()) < 16:
            continue
        slot, plan = slots[0], PLANS[len(cases) % len(PLANS)]
        first = target_for(garments[slot], plan[0], rng)
        final, follow_up_text = follow_up(first, plan[1], rng)
        ideals = tuple(
            render(photo_seed, size=size, world=world,
                   attributes=photo.attributes.with_garment(slot, **garment_fields(g)))
            for g in (first, final)
        )
        cases.append(RoundsCase(photo_seed, slot, plan, photo, (first, final), ideals, (instruction_for(first), follow_up_text)))
        if len(cases) == n:
            return cases
    raise RuntimeError(f"found only {len(cases)} held-out renders without a jacket for {n} cases")


class _JudgeOnFirstUse:
    """The pattern judge, loaded (or trained) when a result is first scored, so edits start at once."""

    def __init__(self, size: int, cache_dir: str | Path | None, progress: bool, world: str = DEFAULT_WORLD) -> None:
        self.size, self.cache_dir, self.progress, self.world = size, cache_dir, progress, world
        self._judge: PatternJudge | None = None

    @property
    def judge(self) -> PatternJudge:
        """The judge itself (loaded or trained now if need be)."""
        if self._judge is None:
            self._judge = pattern_judge(self.size, self.cache_dir, self.progress, self.world)
        return self._judge

    @property
    def accuracy(self) -> float | None:
        """The judge's held-out accuracy; None until it is loaded."""
        return None if self._judge is None else self._judge.accuracy

    def predict(self, images: torch.Tensor, masks: torch.Tensor) -> list[str]:
        """Pattern names of the masked garments (PatternJudge.predict)."""
        return self.judge.predict(images, masks)


def _score(scorer: Scorer, case: EditCase, result: torch.Tensor, seconds: float) -> dict[str, float]:
    scores = scorer.score(case, result)
    scores["success"] = float(scores["colour_success"] == 1.0 and scores["pattern_success"] == 1.0)
    return scores | {"seconds": seconds}


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run_case(pipe: Any, case: RoundsCase, scorer: Scorer, overrides: dict[str, Any]) -> dict[str, Any]:
    """Edit one case with the three strategies; per strategy, per round: the text, seconds and the judges' scores."""
    photo = case.photo.to_tensor()
    session = pipe.session(photo, **overrides)
    first, first_s = _timed(session.apply, case.texts[0])
    second, second_s = _timed(session.apply, case.texts[1])
    composed_text = str(session.state)
    naive, naive_s = _timed(pipe.edit, first.result.images[0], case.texts[1], progress=False, check_domain=False, **overrides)
    one_shot, one_shot_s = _timed(pipe.edit, photo, composed_text, progress=False, **overrides)
    first_scores = _score(scorer, case.judged(0), first.result.images[0], first_s)
    return {
        "seed": case.seed, "slot": case.slot, "plan": "+".join(case.plan), "texts": list(case.texts),
        "targets": [dataclasses.asdict(t) for t in case.targets],
        "strategies": {
            "session": [
                first_scores | {"text": first.text, "iterations": first.result.settings.iterations},
                _score(scorer, case.judged(1), second.result.images[0], second_s)
                | {"text": second.text, "iterations": second.result.settings.iterations},
            ],
            "naive_chain": [
                first_scores | {"text": first.text, "iterations": first.result.settings.iterations},
                _score(scorer, case.judged(1), naive.images[0], naive_s)
                | {"text": case.texts[1], "iterations": naive.settings.iterations},
            ],
            "composed": [
                _score(scorer, case.judged(1, composed_text), one_shot.images[0], one_shot_s)
                | {"text": composed_text, "iterations": one_shot.settings.iterations},
            ],
        },
    }  # fmt: skip


def summarise(cases: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Per strategy: the final round's mean scores (rates with 95 % bootstrap intervals) and mean seconds per
    round; the session's follow-up/first-round time ratio; paired success differences with their intervals."""
    out: dict[str, Any] = {}
    for name in STRATEGIES:
        finals = [c["strategies"][name][-1] for c in cases]
        row: dict[str, Any] = {}
        for key in SCORE_KEYS:
            values = [float(f[key]) for f in finals if f.get(key) is not None and not math.isnan(float(f[key]))]
            row[key] = float(np.mean(values)) if values else None
            if key in RATE_KEYS and values:
                row[f"{key}_ci95"] = list(bootstrap_ci(values, seed=seed))
        rounds = len(cases[0]["strategies"][name]) if cases else 0
        row["seconds_per_round"] = [float(np.mean([c["strategies"][name][k]["seconds"] for c in cases])) for k in range(rounds)]
        row["seconds_total"] = float(sum(row["seconds_per_round"]))
        out[name] = row
    firsts = np.array([c["strategies"]["session"][0]["seconds"] for c in cases])
    seconds = np.array([c["strategies"]["session"][1]["seconds"] for c in cases])
    differences = {}
    for other in ("naive_chain", "composed"):
        diff = [c["strategies"]["session"][-1]["success"] - c["strategies"][other][-1]["success"] for c in cases]
        differences[f"session-{other}"] = {"success": float(np.mean(diff)), "ci95": list(bootstrap_ci(diff, seed=seed))}
    return {
        "strategies": out,
        "session_followup_over_first_seconds": float(seconds.mean() / firsts.mean()) if cases else None,
        "success_differences": differences,
    }


def run_rounds(
    bundle: str = "demo",
    n: int = 24,
    seed: int = 0,
    iterations: int | None = None,
    followup_iterations: int | None = None,
    device: str = "auto",
    progress: bool = True,
    judge_cache: str | Path | None = None,
    json_path: str | Path | None = None,
) -> dict[str, Any]:
    """Run the two-round benchmark on `n` cases and return the report; with `json_path` the report is rewritten
    after every case, so a long run can be read while it goes."""
    from ficekit.pipeline import FicePipeline

    pipe = FicePipeline.from_bundle(bundle, device=device)
    world = bundle_world(pipe.bundle)
    cases = make_round_cases(n, pipe.resolution, seed, world)
    settings = pipe.settings(iterations=iterations, followup_iterations=followup_iterations)
    overrides = {"iterations": settings.iterations, "followup_iterations": settings.rounds_iterations, "seed": seed,
                 "batch_size": 1}  # fmt: skip
    scorer = Scorer(_JudgeOnFirstUse(pipe.resolution, judge_cache, progress, world), pipe.densepose, pipe.device)  # type: ignore[arg-type]
    done: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    for k, case in enumerate(cases, start=1):
        done.append(run_case(pipe, case, scorer, overrides))
        report = {
            "bundle": str(pipe.bundle.root), "n": n, "cases_done": len(done), "seed": seed,
            "iterations": settings.iterations, "followup_iterations": settings.rounds_iterations,
            "world": world, "device": str(pipe.device), "torch_threads": torch.get_num_threads(), "resolution": pipe.resolution,
            "pattern_judge_held_out_accuracy": scorer.judge.accuracy,
            **summarise(done, seed), "cases": done,
        }  # fmt: skip
        if progress:
            s = done[-1]["strategies"]
            print(f"  case {k}/{n} seed {case.seed} {case.texts}: " + "  ".join(
                f"{name}={'ok' if s[name][-1]['success'] else 'miss'} ({sum(r['seconds'] for r in s[name]):.1f} s)"
                for name in STRATEGIES), file=sys.stderr, flush=True)  # fmt: skip
        if json_path is not None:
            write_json(json_path, report)
    return report


def write_json(path: str | Path, report: dict[str, Any]) -> None:
    """Write the report atomically (NaN as null)."""
    from ficekit.checkpoint_io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_safe(report), indent=2, allow_nan=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _pct(rate: float | None, ci: Sequence[float] | None = None) -> str:
    if rate is None:
        return "–"
    return f"{100 * rate:.0f} %" + (f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else "")


def format_table(report: dict[str, Any]) -> str:
    """The report as Markdown: one row per strategy (final-round scores, 95 % intervals), then the time ratio and
    the paired differences."""
    lines = [
        "| strategy | success [95 % CI] | colour success | pattern success | PSNR outside mask (dB) | pose IoU | "
        "s round 1 | s round 2 | s total |",
        "|" + "---|" * 9,
    ]
    for name, row in report["strategies"].items():
        per_round = row["seconds_per_round"] + [math.nan] * (2 - len(row["seconds_per_round"]))
        cells = [
            _pct(row["success"], row.get("success_ci95")),
            _pct(row["colour_success"], row.get("colour_success_ci95")),
            _pct(row["pattern_success"], row.get("pattern_success_ci95")),
            "–" if row["psnr_outside_mask_db"] is None else f"{row['psnr_outside_mask_db']:.1f}",
            "–" if row["pose_part_iou"] is None else f"{row['pose_part_iou']:.2f}",
            *("–" if math.isnan(s) else f"{s:.1f}" for s in per_round),
            f"{row['seconds_total']:.1f}",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ratio = report.get("session_followup_over_first_seconds")
    lines.append("")
    lines.append(f"session follow-up / first-round seconds: {'–' if ratio is None else f'{ratio:.2f}'}")
    for name, d in report["success_differences"].items():
        lines.append(f"success {name}: {100 * d['success']:+.0f} points [{100 * d['ci95'][0]:+.0f}, {100 * d['ci95'][1]:+.0f}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ficekit.eval.rounds", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--n", type=int, default=24, help="two-round cases (default: 24)")
    parser.add_argument("--seed", type=int, default=0, help="picks the held-out photos and targets (default: 0)")
    parser.add_argument("--bundle", default="demo", help="bundle name or folder (default: demo)")
    parser.add_argument("--iterations", type=int, default=None, help="steps of a first round (default: the bundle's)")
    parser.add_argument("--followup-iterations", type=int, default=None,
                        help="steps of the session's follow-up round (default: the bundle's)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON here (after every case)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    return run_from_args(args)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed options, print the table; 2 on bad options or a broken bundle."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    prog = "ficekit.eval.rounds"
    if args.n < 1:
        print(f"{prog}: error: --n must be >= 1, got {args.n}", file=sys.stderr)
        return 2
    for name in ("iterations", "followup_iterations"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"{prog}: error: --{name.replace('_', '-')} must be >= 1, got {value}", file=sys.stderr)
            return 2
    from ficekit.checkpoint_io import CheckpointError

    try:
        report = run_rounds(
            args.bundle, args.n, args.seed, args.iterations, args.followup_iterations, args.device,
            progress=not args.quiet, json_path=args.json,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
