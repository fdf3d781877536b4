"""python -m ficekit.eval.sweep — latent regulariser x weight sweeps, with bootstrap intervals and a trade-off plot.

Every case is edited once per (regulariser, weight), everything else at the bundle's defaults, and scored:

  synthetic mode (--bundle, --n, --seed): the synthetic benchmark's held-out cases and judges
    (ficekit.eval.synthetic): colour_success, pattern_success, edit_success (their mean: the share of the two
    judged attributes that came out right), psnr_outside_mask_db, head_psnr_db, pose_part_iou, and
    generated_psnr_outside_mask_db, the PSNR of G(w) itself outside the true garment (grown by one pixel):
    what the latent kept before stitching pastes the photo back.
  photo mode (--images DIR --texts FILE, as python -m ficekit.eval.run reads them): the eval runner's scores
    (ficekit.eval.scoring): clip_score by the judge CLIP, psnr/ssim (and lpips with --lpips-backbone) outside
    the blend mask, pose_part_iou, and generated_psnr_outside_mask (G(w) against the framed photo where the
    blend mask is 0).
  both: w_distance_init = ‖W+ − W+_init‖ over all rows and dims (how far the optimisation moved the
    inversion), w_mahalanobis = the mean over W+ rows of the Mahalanobis distance to the W distribution
    (ficekit.regularizers.Mahalanobis statistics; a sampled w is at about √w_dim), and seconds.
PSNRs are capped at 100 dB (an exact copy would be infinite), as in the synthetic benchmark.

OUT/results.csv gets one row per case x regulariser x weight, appended (flushed, fsynced) as each edit
finishes; a rerun skips the rows already there (resume) and refuses a folder made with other settings
(OUT/run.json). 'none' ignores its weight: its edit runs once per case and is recorded at every weight.
OUT/summary.md: per regulariser and weight the mean of every metric with a 95 % percentile-bootstrap
interval over cases (seeded), and for every pair of regularisers at the same weight a paired sign-flip
permutation test on the same cases (exact up to 16 cases, else 20000 seeded random flips; two-sided,
uncorrected) of the plotted metrics; OUT/summary.csv the same intervals as data. OUT/tradeoff.png
(matplotlib, pip install "ficekit[plot]"): edit success (synthetic) or CLIP score (photo) against the PSNR of
G(w) outside the garment, one curve per regulariser across weights, with the intervals as error bars.

Under torchrun each rank edits every WORLD_SIZE-th pending group into OUT/results.rank<R>.csv and, after a
barrier, rank 0 merges them into results.csv and writes the summary and plot. Regularisers registered with
ficekit.regularizers.register_regularizer take part like the built-in ones (--import MODULE registers them).

Examples:
  python -m ficekit.eval.sweep --regularizers w_delta,l2_init,mahalanobis,none --weights 0.1,1,10 \\
      --bundle demo --n 48 --iterations 100 --out sweep/
  python -m ficekit.eval.sweep --regularizers w_delta,none --weights 1 --images photos/ --texts texts.txt --out sweep/
  torchrun --nproc_per_node 4 -m ficekit.eval.sweep --regularizers w_delta,pn --weights 1,10 --out sweep/
"""

from __future__ import annotations

import argparse
import csv
import functools
import importlib
import io
import itertools
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ficekit.checkpoint_io import atomic_write
from ficekit.cli import fail
from ficekit.eval import results
from ficekit.eval.jobs import EvalError, Job, read_jobs
from ficekit.eval.results import append_row, check_run_record, format_value, metric_columns
from ficekit.regularizers import REGULARIZERS, Mahalanobis, NoRegularizer

if TYPE_CHECKING:
    from ficekit.pipeline import EditResult, FicePipeline

__all__ = [
    "SweepError",
    "SweepSpec",
    "bootstrap_ci",
    "paired_sign_flip_test",
    "parse_regularizers",
    "parse_weights",
    "run_sweep",
    "summarise",
    "main",
]

log = logging.getLogger(__name__)

PSNR_CAP_DB = 100.0  # as ficekit.eval.synthetic: an exactly kept region counts as this in the means
KEY_COLUMNS = ("case", "text", "regularizer", "weight")
SYNTHETIC_METRICS = (
    "edit_success", "colour_success", "pattern_success", "psnr_outside_mask_db", "generated_psnr_outside_mask_db",
    "head_psnr_db", "pose_part_iou", "w_distance_init", "w_mahalanobis", "seconds",
)  # fmt: skip
# ficekit.eval.scoring.Scorer's per-edit scores (photo mode) and the latent ones both modes add.
PHOTO_SCORES = ("psnr_outside_mask", "ssim_outside_mask", "lpips_outside_mask", "clip_score", "pose_part_iou")
LATENT_METRICS = ("generated_psnr_outside_mask", "w_distance_init", "w_mahalanobis")
# The trade-off plot and the paired tests: (preservation on x, edit strength on y) per mode.
TRADEOFF_AXES = {
    "synthetic": ("generated_psnr_outside_mask_db", "edit_success"),
    "photo": ("generated_psnr_outside_mask", "clip_score"),
}
BOOTSTRAP_RESAMPLES = 2000
PERMUTATION_RESAMPLES = 20000
EXACT_PERMUTATION_MAX_N = 16  # up to 2**16 sign patterns are enumerated; more cases are sampled


class SweepError(EvalError):
    """A user-facing problem with a sweep's options or output folder (exit code 2 on the command line)."""


# ---------------------------------------------------------------------------------------------------
# Options.


def parse_regularizers(text: str | Sequence[str]) -> tuple[str, ...]:
    """Registered regulariser names from 'a,b,c' (or a list), in order, without repeats; SweepError otherwise."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise SweepError("--regularizers is empty; name at least one, e.g. w_delta,none")
    unknown = [n for n in names if n not in REGULARIZERS]
    if unknown:
        raise SweepError(f"unknown regularizer(s) {unknown}; known: {sorted(REGULARIZERS)}")
    return tuple(dict.fromkeys(names))


def parse_weights(text: str | Sequence[float | str]) -> tuple[float, ...]:
    """Finite weights >= 0 from '0.1,1,10' (or a list), in order, without repeats; SweepError otherwise."""
    items = [str(w).strip() for w in (text.split(",") if isinstance(text, str) else text)]
    items = [w for w in items if w]
    if not items:
        raise SweepError("--weights is empty; give at least one, e.g. 0.1,1,10")
    weights = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise SweepError(f"--weights: {item!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise SweepError(f"--weights: every weight must be a finite number >= 0, got {item}")
        weights.append(value)
    return tuple(dict.fromkeys(weights))


def weight_label(weight: float) -> str:
    """A weight as results.csv writes it: the shortest round-tripping form ('0.1', '1', '10')."""
    return repr(float(weight)).removesuffix(".0")


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep edits: regularisers x weights, each with the same optimisation steps and seed."""

    regularizers: tuple[str, ...]
    weights: tuple[float, ...]
    iterations: int | None = None  # optimisation steps; None = the bundle's
    seed: int = 0  # seed of every edit (and of the synthetic cases)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regularizers", parse_regularizers(self.regularizers))
        object.__setattr__(self, "weights", parse_weights(self.weights))
        if self.iterations is not None and (isinstance(self.iterations, bool) or self.iterations < 1):
            raise SweepError(f"--iterations must be >= 1, got {self.iterations}")


# ---------------------------------------------------------------------------------------------------
# Statistics.


def bootstrap_ci(
    values: Sequence[float],
    level: float = 0.95,  # coverage of the interval
    resamples: int = BOOTSTRAP_RESAMPLES,  # bootstrap resamples of the cases
    seed: int = 0,  # seed of the resampling (numpy Generator), so a summary is reproducible
) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its percentile-bootstrap interval (resample the values with replacement,
    take the (1 − level)/2 and (1 + level)/2 quantiles of the resampled means; the synthetic benchmark's
    bootstrap_ci). NaNs are dropped; no values gives three NaNs (a metric a configuration did not measure)."""
    from ficekit.eval.synthetic import bootstrap_ci as percentile_interval

    finite = [float(v) for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan, math.nan
    low, high = percentile_interval(finite, level=level, resamples=resamples, seed=seed)
    return float(np.mean(finite)), low, high


def paired_sign_flip_test(
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = PERMUTATION_RESAMPLES,  # random sign patterns when there are too many to enumerate
    seed: int = 0,  # seed of those patterns
) -> tuple[float, float]:
    """(mean of a − b, two-sided p) of the paired sign-flip permutation test: under 'no difference' each
    case's difference is as likely negated, so p = share of sign patterns whose |mean| is at least the
    observed one. Exact (all 2**n patterns) for n <= 16, else (1 + hits) / (1 + resamples). Pairs with a NaN
    are dropped; p is NaN without pairs."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired test: a and b must have the same length, got {x.size} and {y.size}")
    d = (x - y)[~(np.isnan(x) | np.isnan(y))]
    if d.size == 0:
        return math.nan, math.nan
    observed = abs(d.mean())
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max()))
    if d.size <= EXACT_PERMUTATION_MAX_N:
        signs = 1 - 2 * ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1)
        return float(d.mean()), float((np.abs(signs @ d / d.size) >= observed - tolerance).mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(resamples, d.size))
    hits = int((np.abs(signs @ d / d.size) >= observed - tolerance).sum())
    return float(d.mean()), (1 + hits) / (1 + resamples)


# ---------------------------------------------------------------------------------------------------
# results.csv: one row per case x regulariser x weight.


def _row_key(row: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(row[k] for k in KEY_COLUMNS)


SWEEP_HINT = "use another --out (this folder holds another sweep's results)"


def all_rows(out: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """Rows of results.csv and every rank file, first of each (case, text, regulariser, weight), sorted."""
    try:
        return results.all_rows(out, columns, name="results", keys=KEY_COLUMNS, hint=SWEEP_HINT)
    except EvalError as e:
        raise SweepError(str(e)) from None


def merge_rows(out: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """Rewrite results.csv as the sorted union of itself and the rank files, then remove the rank files."""
    try:
        return results.merge_rows(out, columns, name="results", keys=KEY_COLUMNS, hint=SWEEP_HINT)
    except EvalError as e:
        raise SweepError(str(e)) from None


# ---------------------------------------------------------------------------------------------------
# Cases and their scores.


@dataclass(frozen=True)
class SweepCase:
    """One photo and instruction of a sweep: `key` names it in results.csv; `payload` is the mode's own case."""

    key: str
    text: str
    payload: Any


def _capped(value: float | None) -> float | None:
    return None if value is None else min(float(value), PSNR_CAP_DB)


@torch.no_grad()
def latent_scores(
    pipe: FicePipeline, photo: torch.Tensor, result: EditResult, keep: torch.Tensor
) -> dict[str, float | None]:
    """How far the edit moved W+ from the photo's inversion, and what G(w) kept where the photo must be kept.

    photo [3,H,W] in [0,1]; keep [1,R,R] bool at the generator's resolution (framed like the photo); G(w) is
    clamped to [0, 1] as the edit's result is.
    """
    from ficekit.eval.metrics import psnr

    x, _ = pipe.frame([photo])
    ws_init = result.ws_init.float().cpu()  # the edit's starting W+ (its inversion of the photo)
    ws = result.ws.float().cpu()
    mahalanobis = Mahalanobis.from_generator(pipe.generator)  # cached per generator
    generated = result.generated[:1].float().cpu()
    kept = bool(keep.any())
    return {
        "generated_psnr_outside_mask": (
            _capped(float(psnr(generated.clamp(0, 1), x.cpu(), keep[None].float())[0])) if kept else None
        ),
        "w_distance_init": float((ws - ws_init).norm()),
        "w_mahalanobis": float(mahalanobis.squared_distance(ws.to(mahalanobis.mean.device)).sqrt().mean()),
    }


class SyntheticScorer:
    """Scores an edit of a synthetic case with the synthetic benchmark's judges, plus the latent scores."""

    def __init__(self, pipe: FicePipeline, judge_cache: str | os.PathLike | None, progress: bool) -> None:
        # The benchmark's judge and scorer are reused as they are, so a sweep and the benchmark judge alike.
        from ficekit.eval.synthetic import Scorer, pattern_judge
        from ficekit.synthetic.world import bundle_world

        self.pipe = pipe
        judge = pattern_judge(pipe.resolution, cache_dir=judge_cache, progress=progress, world=bundle_world(pipe.bundle))
        self.scorer = Scorer(judge, pipe.densepose, pipe.device)

    def score(self, case: SweepCase, result: EditResult) -> dict[str, float | None]:
        from ficekit.mask_ops import dilate

        bench = case.payload
        scores: dict[str, float | None] = dict(self.scorer.score(bench, result.images[0]))
        scores["edit_success"] = (scores["colour_success"] + scores["pattern_success"]) / 2
        garment = dilate(bench.garment_mask()[None, None].float(), 1)[0] > 0  # [1,H,W]: the garment and its rim
        latent = latent_scores(self.pipe, bench.photo.to_tensor(), result, ~garment)
        scores["generated_psnr_outside_mask_db"] = latent.pop("generated_psnr_outside_mask")
        return scores | latent


class PhotoScorer:
    """Scores an edit of a photo with the eval runner's scorer (judge CLIP, masked PSNR/SSIM/LPIPS, pose)."""

    def __init__(self, pipe: FicePipeline, judge_clip: str | None, lpips_backbone: str | os.PathLike | None) -> None:
        from ficekit.eval.methods import MethodContext
        from ficekit.eval.scoring import build_scorer

        self.pipe = pipe
        self.scorer = build_scorer(MethodContext(pipe.bundle.root, pipe.device, _pipeline=pipe), judge_clip, lpips_backbone)

    def score(self, case: SweepCase, result: EditResult) -> dict[str, float | None]:
        from ficekit.eval.methods import checked_output

        photo = case.payload
        job = Job(case.key, case.text)
        image, mask = checked_output(f"{result.settings.regularizer}", job, photo, result.images[0], result.blend_full[0])
        scores = self.scorer.score(case.key, photo, image, mask, case.text)
        scores["psnr_outside_mask"] = _capped(scores.get("psnr_outside_mask"))
        keep = result.masks.blend[0] <= 0  # [1,R,R] in the framed square the generator draws
        return scores | latent_scores(self.pipe, photo, result, keep)


def photo_columns(judge_clip: str | None, lpips_backbone: str | os.PathLike | None) -> list[str]:
    """The metric columns of a photo-mode sweep: the eval runner's per-edit scores (in its order), then the
    latent ones; per-photo columns of the runner (its domain score) are the same for every configuration."""
    run_columns = metric_columns(lpips=lpips_backbone is not None, clip=judge_clip is not None)
    return [c for c in run_columns if c in PHOTO_SCORES] + [*LATENT_METRICS, "seconds"]


# ---------------------------------------------------------------------------------------------------
# The sweep.


def _edit(pipe: FicePipeline, case: SweepCase, photo: torch.Tensor, spec: SweepSpec, regularizer: str, weight: float) -> EditResult:
    return pipe.edit(
        photo, case.text, progress=False, iterations=spec.iterations, seed=spec.seed, batch_size=1,
        regularizer=regularizer, weights={regularizer: weight},
    )  # fmt: skip


def _groups(
    cases: Sequence[SweepCase], spec: SweepSpec, done: set[tuple[str, ...]]
) -> list[tuple[SweepCase, str, float, list[float]]]:
    """Pending edits: (case, regulariser, weight edited, weights it is recorded at). 'none' is edited once per
    case (at its first pending weight) and recorded at every pending weight, as its weight changes nothing."""
    groups = []
    for case, regularizer in itertools.product(cases, spec.regularizers):
        pending = [w for w in spec.weights if (case.key, case.text, regularizer, weight_label(w)) not in done]
        if not pending:
            continue
        if regularizer == NoRegularizer.name:
            groups.append((case, regularizer, pending[0], pending))
        else:
            groups.extend((case, regularizer, w, [w]) for w in pending)
    return groups


def _photo_of(case: SweepCase) -> torch.Tensor:
    return case.payload if isinstance(case.payload, torch.Tensor) else case.payload.photo.to_tensor()


def _edit_groups(
    groups: Sequence[tuple[SweepCase, str, float, list[float]]],
    pipe: FicePipeline,
    scorer: SyntheticScorer | PhotoScorer,
    spec: SweepSpec,
    rows_path: Path,
    columns: Sequence[str],
    progress: bool,
    rank: int,
) -> None:
    from ficekit.progress import progress_bar

    desc = f"sweep rank {rank}" if rank else "sweep"
    for case, regularizer, weight, record_at in progress_bar(groups, desc=desc, unit="edit", position=rank, disable=not progress, dynamic_ncols=True):
        start = time.perf_counter()
        result = _edit(pipe, case, _photo_of(case), spec, regularizer, weight)
        if pipe.device.type == "cuda":
            torch.cuda.synchronize(pipe.device)
        seconds = time.perf_counter() - start
        scores = scorer.score(case, result) | {"seconds": seconds}
        for w in record_at:
            row = {"case": case.key, "text": case.text, "regularizer": regularizer, "weight": weight_label(w)}
            row.update({k: format_value(scores.get(k)) for k in columns if k not in KEY_COLUMNS})
            append_row(rows_path, columns, row)
        log.debug("%s %s at %s: %s", case.key, regularizer, weight_label(weight), scores)


def _synthetic_cases(pipe: FicePipeline, n: int, seed: int) -> list[SweepCase]:
    from ficekit.eval.synthetic import make_cases
    from ficekit.synthetic.world import bundle_world

    cases = make_cases(n, pipe.resolution, seed, world=bundle_world(pipe.bundle))
    return [SweepCase(str(c.seed), c.text, c) for c in cases]


def _photo_cases(images: Path, texts: str | os.PathLike) -> list[SweepCase]:
    from ficekit.imageio import read_image

    photos: dict[str, torch.Tensor] = {}
    cases = []
    for job in read_jobs(images, texts):
        if job.image not in photos:
            photos[job.image] = read_image(images / job.image)
        cases.append(SweepCase(job.image, job.text, photos[job.image]))
    return cases


def run_sweep(
    spec: SweepSpec,
    out_dir: str | os.PathLike,
    *,
    bundle: str | os.PathLike = "demo",  # ficekit bundle: 'demo', 'fice' or a folder
    n: int = 48,  # synthetic mode: number of held-out cases
    images: str | os.PathLike | None = None,  # photo mode: folder of photos (with `texts`)
    texts: str | os.PathLike | None = None,  # photo mode: instructions file or image,text CSV (see eval.jobs)
    device: str | torch.device = "auto",  # 'auto', 'cpu', 'cuda' (under torchrun: cuda:LOCAL_RANK)
    judge_clip: str | None = "bundle",  # photo mode: CLIP judging the edits ('bundle', another bundle, None)
    lpips_backbone: str | os.PathLike | None = None,  # photo mode: torchvision backbone weights for LPIPS
    judge_cache: str | os.PathLike | None = None,  # synthetic mode: pattern-judge cache folder
    progress: bool = True,  # tqdm bar per rank
    pipeline: FicePipeline | None = None,  # an already loaded pipeline of `bundle` (else loaded here)
) -> Path:
    """Edit every case with every regulariser at every weight, appending to OUT/results.csv, then write
    summary.md, summary.csv and tradeoff.png from all rows. Resumes from the rows already there. Returns the
    path of summary.md. Synthetic mode unless `images` and `texts` are given."""
    from ficekit.eval.world import World, rank_device

    photo_mode = images is not None or texts is not None
    if photo_mode and (images is None or texts is None):
        raise SweepError("photo mode needs both --images and --texts")
    if not photo_mode and (isinstance(n, bool) or n < 1):
        raise SweepError(f"--n must be >= 1, got {n}")
    mode = "photo" if photo_mode else "synthetic"
    out = Path(out_dir)
    if photo_mode:
        assert images is not None and texts is not None
        cases = _photo_cases(Path(images), texts)  # every photo read up front: a bad file fails before any model
        columns = [*KEY_COLUMNS, *photo_columns(judge_clip, lpips_backbone)]
    else:
        cases = []
        columns = [*KEY_COLUMNS, *SYNTHETIC_METRICS]
    world = World.from_env()
    torch_device = rank_device(device, world)
    record = {
        "mode": mode, "bundle": str(bundle), "iterations": spec.iterations, "seed": spec.seed,
        "n": None if photo_mode else n, "judge_clip": judge_clip if photo_mode else None,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    check_run_record(out, record, write=world.rank == 0)
    done = {_row_key(row) for row in all_rows(out, columns)}

    from ficekit.pipeline import FicePipeline

    pipe = pipeline if pipeline is not None else FicePipeline.from_bundle(bundle, device=torch_device)
    if not photo_mode:
        cases = _synthetic_cases(pipe, n, spec.seed)
    groups = _groups(cases, spec, done)
    mine = groups[world.rank :: world.size]
    rows_path = out / ("results.csv" if world.size == 1 else f"results.rank{world.rank}.csv")
    world = world.start(torch_device)
    try:
        world.barrier()  # every rank has read the finished rows before any rank appends new ones
        if mine:
            scorer = (
                PhotoScorer(pipe, judge_clip, lpips_backbone) if photo_mode else SyntheticScorer(pipe, judge_cache, progress)
            )
            _edit_groups(mine, pipe, scorer, spec, rows_path, columns, progress, world.rank)
        world.barrier()
        if world.rank == 0:
            rows = merge_rows(out, columns)
            settings = {
                "mode": mode, "bundle": str(bundle), "iterations": "bundle default" if spec.iterations is None else spec.iterations,
                "seed": spec.seed, "cases": len({(r["case"], r["text"]) for r in rows}),
            }  # fmt: skip
            write_summary(out, rows, spec, columns, mode, settings)
        world.barrier()
    finally:
        world.close()
    return out / "summary.md"


# ---------------------------------------------------------------------------------------------------
# summary.md, summary.csv and tradeoff.png.


@dataclass(frozen=True)
class Interval:
    """A metric's mean over the cases of one configuration, with its 95 % bootstrap interval."""

    n: int
    mean: float
    low: float
    high: float


def _values(rows: Sequence[Mapping[str, str]], metric: str) -> dict[tuple[str, str], float]:
    """(case, text) -> value of `metric` (NaN where empty)."""
    return {(r["case"], r["text"]): float(r[metric]) if r.get(metric, "") != "" else math.nan for r in rows}


def summarise(
    rows: Sequence[Mapping[str, str]], metrics: Sequence[str], seed: int = 0
) -> dict[tuple[str, str], dict[str, Interval]]:
    """(regulariser, weight label) -> metric -> mean and 95 % bootstrap interval over that configuration's cases."""
    configs: dict[tuple[str, str], list[Mapping[str, str]]] = {}
    for row in rows:
        configs.setdefault((row["regularizer"], row["weight"]), []).append(row)
    out: dict[tuple[str, str], dict[str, Interval]] = {}
    for config, config_rows in configs.items():
        out[config] = {}
        for metric in metrics:
            values = [v for v in _values(config_rows, metric).values() if not math.isnan(v)]
            out[config][metric] = Interval(len(values), *bootstrap_ci(values, seed=seed))
    return out


def paired_tests(
    rows: Sequence[Mapping[str, str]], regularizers: Sequence[str], metrics: Sequence[str], seed: int = 0
) -> list[dict[str, Any]]:
    """For every weight, pair of regularisers and metric: the sign-flip test on the cases both have."""
    by_config: dict[tuple[str, str], list[Mapping[str, str]]] = {}
    for row in rows:
        by_config.setdefault((row["regularizer"], row["weight"]), []).append(row)
    weights = sorted({w for _, w in by_config}, key=float)
    tests = []
    for weight in weights:
        present = [r for r in regularizers if (r, weight) in by_config]
        for a, b in itertools.combinations(present, 2):
            for metric in metrics:
                va, vb = _values(by_config[a, weight], metric), _values(by_config[b, weight], metric)
                shared = sorted(set(va) & set(vb))
                diff, p = paired_sign_flip_test([va[k] for k in shared], [vb[k] for k in shared], seed=seed)
                tests.append({"weight": weight, "a": a, "b": b, "metric": metric, "n": len(shared), "difference": diff, "p": p})
    return tests


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _interval_cell(iv: Interval) -> str:
    return "–" if iv.n == 0 else f"{_fmt(iv.mean)} [{_fmt(iv.low)}, {_fmt(iv.high)}]"


def _config_order(summary: Mapping[tuple[str, str], Any], regularizers: Sequence[str]) -> list[tuple[str, str]]:
    rank = {name: i for i, name in enumerate(regularizers)}
    return sorted(summary, key=lambda c: (rank.get(c[0], len(rank)), c[0], float(c[1])))


def summary_text(
    summary: Mapping[tuple[str, str], Mapping[str, Interval]],
    tests: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    regularizers: Sequence[str],
    settings: Mapping[str, Any],
) -> str:
    """summary.md: the settings, the means with 95 % intervals per configuration, the paired tests."""
    lines = ["# Regulariser sweep", "", ", ".join(f"{k}: {v}" for k, v in settings.items()), ""]
    lines += [
        "## Means with 95 % bootstrap confidence intervals", "",
        f"Mean over cases [95 % percentile-bootstrap interval, {BOOTSTRAP_RESAMPLES} resamples of the cases, seeded].",
        "", "| regularizer | weight | n | " + " | ".join(f"{m} (95 % CI)" for m in metrics) + " |",
        "|" + "---|" * (3 + len(metrics)),
    ]  # fmt: skip
    for config in _config_order(summary, regularizers):
        cells = [_interval_cell(summary[config][m]) for m in metrics]
        n = max((iv.n for iv in summary[config].values()), default=0)
        lines.append(f"| {config[0]} | {config[1]} | {n} | " + " | ".join(cells) + " |")
    lines += [
        "", "## Paired comparisons at the same weight", "",
        "Paired sign-flip permutation test on the per-case differences a − b (two-sided; exact for up to "
        f"{EXACT_PERMUTATION_MAX_N} cases, else {PERMUTATION_RESAMPLES} seeded random sign flips); p values are "
        "not corrected for the number of comparisons.", "",
        "| weight | metric | a | b | n | mean a − b | p |", "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for t in tests:
        p = "–" if math.isnan(t["p"]) else f"{t['p']:.3g}"
        lines.append(f"| {t['weight']} | {t['metric']} | {t['a']} | {t['b']} | {t['n']} | {_fmt(t['difference'])} | {p} |")
    return "\n".join(lines) + "\n"


def summary_csv(summary: Mapping[tuple[str, str], Mapping[str, Interval]], regularizers: Sequence[str]) -> str:
    """summary.csv: one row per configuration and metric with n, mean and the 95 % interval."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["regularizer", "weight", "metric", "n", "mean", "ci_low", "ci_high"])
    for config in _config_order(summary, regularizers):
        for metric, iv in summary[config].items():
            writer.writerow([*config, metric, iv.n, *(format_value(None if math.isnan(v) else v) for v in (iv.mean, iv.low, iv.high))])
    return buffer.getvalue()


def plot_tradeoff(
    summary: Mapping[tuple[str, str], Mapping[str, Interval]],
    regularizers: Sequence[str],
    x_metric: str,
    y_metric: str,
    path: Path,
) -> bool:
    """tradeoff.png: y_metric against x_metric, one curve per regulariser across its weights, 95 % intervals
    as error bars. False (and a warning naming the install) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning('tradeoff.png not drawn: matplotlib is not installed (pip install "ficekit[plot]")')
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for name in [r for r in regularizers if any(c[0] == r for c in summary)]:
        configs = sorted((c for c in summary if c[0] == name), key=lambda c: float(c[1]))
        xs = [summary[c][x_metric] for c in configs]
        ys = [summary[c][y_metric] for c in configs]
        points = [(c, x, y) for c, x, y in zip(configs, xs, ys, strict=True) if x.n and y.n]
        if not points:
            continue
        x_mean = np.array([x.mean for _, x, _ in points])
        y_mean = np.array([y.mean for _, _, y in points])
        x_err = np.array([[x.mean - x.low, x.high - x.mean] for _, x, _ in points]).T
        y_err = np.array([[y.mean - y.low, y.high - y.mean] for _, _, y in points]).T
        bars = ax.errorbar(x_mean, y_mean, xerr=x_err, yerr=y_err, marker="o", capsize=3, label=name)
        if name != NoRegularizer.name:
            for (config, _, _), xv, yv in zip(points, x_mean, y_mean, strict=True):
                ax.annotate(config[1], (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=8, color=bars[0].get_color())
    ax.set_xlabel(f"{x_metric} (preservation →)")
    ax.set_ylabel(f"{y_metric} (edit strength ↑)")
    ax.set_title("Regulariser trade-off (labels: weight; bars: 95 % bootstrap CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return True


def write_summary(
    out: Path,
    rows: Sequence[Mapping[str, str]],
    spec: SweepSpec,
    columns: Sequence[str],
    mode: str,
    settings: Mapping[str, Any],
) -> None:
    """summary.md, summary.csv and tradeoff.png of a sweep folder's rows (this run's regularisers first)."""
    metrics = [c for c in columns if c not in KEY_COLUMNS]
    regularizers = list(dict.fromkeys([*spec.regularizers, *sorted({r["regularizer"] for r in rows})]))
    summary = summarise(rows, metrics, seed=spec.seed)
    x_metric, y_metric = TRADEOFF_AXES[mode]
    if y_metric not in metrics:  # photo mode without a judge CLIP: W+ movement stands in for edit strength
        y_metric = "w_distance_init"
    tests = paired_tests(rows, regularizers, [y_metric, x_metric], seed=spec.seed)
    text = summary_text(summary, tests, metrics, regularizers, settings)
    atomic_write(out / "summary.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    table = summary_csv(summary, regularizers)
    atomic_write(out / "summary.csv", lambda tmp: tmp.write_text(table, encoding="utf-8"))
    plot_tradeoff(summary, regularizers, x_metric, y_metric, out / "tradeoff.png")


# ---------------------------------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of python -m ficekit.eval.sweep."""
    p = argparse.ArgumentParser(
        prog="python -m ficekit.eval.sweep", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add = p.add_argument
    add("--regularizers", required=True, help="comma-separated regulariser names, e.g. w_delta,l2_init,mahalanobis,none")
    add("--weights", required=True, help="comma-separated weights >= 0 of the regulariser term, e.g. 0.1,1,10")
    add("--bundle", default="demo", help="ficekit bundle: 'demo', 'fice' or a folder (default: demo)")
    add("--n", type=int, default=48, help="synthetic mode: held-out cases (default: 48)")
    add("--seed", type=int, default=0, help="seed of every edit and of the synthetic cases (default: 0)")
    add("--images", type=Path, metavar="DIR", help="photo mode: folder of the photos to edit (with --texts)")
    add("--texts", type=Path, metavar="FILE", help="photo mode: instructions, one per line, or a CSV image,text")
    add("--iterations", type=int, help="optimisation steps of every edit (default: the bundle's)")
    add("--out", type=Path, required=True, help="output folder; rerun to resume")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N; under torchrun cuda:LOCAL_RANK (default: auto)")
    add("--judge-clip", default="bundle", metavar="BUNDLE_OR_NONE", help="photo mode: CLIP judging the edits (default: bundle)")
    add("--lpips-backbone", type=Path, metavar="PATH", help="photo mode: torchvision backbone weights: adds LPIPS")
    add("--judge-cache", type=Path, metavar="DIR", help="synthetic mode: pattern-judge cache (default: $FICEKIT_CACHE)")
    add("--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="import MODULE first (it may call register_regularizer); repeatable")  # fmt: skip
    add("--quiet", action="store_true", help="no progress bar and no summary print; errors only")
    return p


_fail = functools.partial(fail, 'ficekit.eval.sweep')  # one line on stderr, exit code 2


def main(argv: list[str] | None = None) -> int:
    """Entry point: check the options before any model loads, run, and turn user errors into exit code 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.quiet:
        warnings.filterwarnings("ignore", category=UserWarning)
    try:
        for module in args.imports:
            importlib.import_module(module)
    except ImportError as e:
        return _fail(f"--import: cannot import {e.name or e}")
    judge = None if args.judge_clip.strip().lower() == "none" else args.judge_clip
    try:
        spec = SweepSpec(parse_regularizers(args.regularizers), parse_weights(args.weights), args.iterations, args.seed)
        if (args.images is None) != (args.texts is None):
            raise SweepError("photo mode needs both --images and --texts")
        summary = run_sweep(
            spec, args.out, bundle=args.bundle, n=args.n, images=args.images, texts=args.texts, device=args.device,
            judge_clip=judge, lpips_backbone=args.lpips_backbone, judge_cache=args.judge_cache, progress=not args.quiet,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        return _fail(str(e))
    if not args.quiet and int(os.environ.get("RANK", 0)) == 0:
        print(summary.read_text(encoding="utf-8"))
        print(f"wrote {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
