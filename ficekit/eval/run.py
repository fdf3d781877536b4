"""python -m ficekit.eval.run — dataset-scale evaluation: every photo x instruction x method, edited and scored.

Each (image, text, method) is edited once; the result and its blend mask are written under
OUT/results/<method>/ and OUT/masks/<method>/ as <image-stem>__<text-slug>.png, and one row is appended
to OUT/metrics.csv (flushed and fsynced) with the edit's seconds and its scores on photo vs result:

  psnr_outside_mask, ssim_outside_mask  over the pixels the method must keep (blend mask == 0, so soft
                                        edges count as edited); empty when the mask covers everything
  lpips_outside_mask                    the same region, only with --lpips-backbone
  clip_score                            100 * max(cos(CLIP(result), CLIP(text)), 0) with the judge CLIP
                                        (default: the bundle's CLIP; the same judge for every method)
  pose_part_iou                         DensePose part IoU, photo vs result (empty without a DensePose)

A rerun skips the rows already in metrics.csv, so an interrupted run resumes where it stopped and a
finished run is not edited again (Ctrl-C ends a run with one line saying how many rows it kept, exit 130).
At the end metrics.csv is rewritten sorted, OUT/summary.md gets one Markdown table (metric x method,
mean ± std and n; FID/KID of results vs photos with --inception) and OUT/grids/<text-slug>.png one
comparison grid per instruction (a row per image: photo | mask | methods).

--texts is a file of instructions, one per line (blank lines and lines starting with '#' skipped), each
applied to every image in --images; or a CSV whose header has columns image,text listing the pairs
(image relative to --images; a .csv file, or a first line naming an image or text column, is read as a
CSV). Methods: 'fice' (this package), 'inpaint' (the diffusion inpainting baseline on ficekit's
auto-mask; needs pip install "ficekit[diffusion]" and --inpaint-model), or module:factory for a method of
your own (factory(MethodContext) -> callable(image, text, seed) -> (result [3,H,W], blend mask [1,H,W])).

Under torchrun each rank takes every WORLD_SIZE-th pending edit, appends to OUT/metrics.rank<R>.csv and,
after a barrier, rank 0 merges the rank files into metrics.csv and writes the summary and grids.

Examples:
  python -m ficekit.eval.run --images photos/ --texts instructions.txt --out eval/ --iterations 100
  python -m ficekit.eval.run --images photos/ --texts pairs.csv --methods fice,inpaint \\
      --inpaint-model stabilityai/stable-diffusion-2-inpainting --bundle fice --out eval/
  torchrun --nproc_per_node 4 -m ficekit.eval.run --images photos/ --texts instructions.txt --out eval/
"""


from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ficekit.cli import EXIT_INTERRUPTED, fail
from ficekit.eval.jobs import EvalError, Job, jobs_for_texts, read_jobs
from ficekit.eval.methods import (
    METHODS,
    MethodContext,
    MethodFactory,
    build_method,
    checked_output,
    resolve_methods,
)
from ficekit.eval.report import write_report
from ficekit.eval.results import (
    KEY_COLUMNS,
    all_rows,
    append_row,
    check_run_record,
    count_rows,
    format_value,
    merge_rows,
    metric_columns,
    result_path,
)
from ficekit.eval.scoring import build_scorer
from ficekit.imageio import read_image, replace_png

# The parts of a run live beside this module: jobs.py (which photo with which instruction, output names),
# methods.py (the method registry and its contract), scoring.py (one edit's scores), results.py (metrics.csv,
# rank files, run.json: resume and merge) and report.py (summary.md and grids). This module drives them:
# the command line, the run, and torchrun's ranks.

__all__ = ["run_evaluation", "main"]

from ficekit.eval.world import World, rank_device

log = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------------------
# The run.


def _edit_all(
    units: Sequence[tuple[Job, str]],
    factories: Mapping[str, MethodFactory],
    ctx: MethodContext,
    images_dir: Path,
    out: Path,
    rows_path: Path,
    columns: Sequence[str],
    seed: int,
    judge_clip: str | None,
    lpips_backbone: str | os.PathLike | None,
    progress: bool,
    world: World,
) -> None:
    """Edit and score this rank's units, writing each result and appending its row as soon as it is done."""
    from ficekit.progress import progress_bar

    needed = [label for label in factories if any(u[1] == label for u in units)]
    methods = {label: build_method(label, factories[label], ctx) for label in needed}  # all load before editing
    scorer = build_scorer(ctx, judge_clip, lpips_backbone)
    desc = f"eval rank {world.rank}" if world.size > 1 else "eval"
    photo_key, photo = None, None
    for job, label in progress_bar(units, desc=desc, unit="edit", position=world.rank, disable=not progress, dynamic_ncols=True):
        if job.image != photo_key:
            photo_key, photo = job.image, read_image(images_dir / job.image)
            domain = _domain_score(ctx, photo)
        assert photo is not None
        start = time.perf_counter()
        result, mask = methods[label](photo, job.text, seed)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        seconds = time.perf_counter() - start
        result, mask = checked_output(label, job, photo, result, mask)
        replace_png(result, result_path(out, "results", label, job))
        replace_png(mask, result_path(out, "masks", label, job))
        scores = scorer.score(job.image, photo, result, mask, job.text)
        row = {"image": job.image, "text": job.text, "method": label, "seconds": f"{seconds:.3f}"}
        row.update({k: format_value(v) for k, v in scores.items()})
        row["domain_score"] = format_value(domain)
        append_row(rows_path, columns, row)
        log.debug("%s %s %r: %s", label, job.image, job.text, row)


def _domain_score(ctx: MethodContext, photo: torch.Tensor) -> float | None:
    """The photo's out-of-domain score under the run's bundle (None when the bundle has no domain record)."""
    pipe = ctx.pipeline()
    if getattr(pipe.bundle, "domain", None) is None:
        return None
    scores = pipe.domain_scores(photo)
    return float(scores[0].value) if scores else None


def run_evaluation(
    images_dir: str | os.PathLike,
    texts: str | os.PathLike | Sequence[str],
    methods: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    bundle: str | os.PathLike = "demo",  # ficekit bundle: 'demo', 'fice' or a folder
    inpaint_model: str | None = None,  # diffusers model id or folder for 'inpaint'
    iterations: int | None = None,  # ficekit optimisation steps; None = the bundle's
    seed: int = 0,  # seed of every edit
    device: str | torch.device = "auto",  # 'auto', 'cpu', 'cuda' (under torchrun: cuda:LOCAL_RANK)
    judge_clip: str | None = "bundle",  # 'bundle' = the bundle's CLIP; a bundle name/folder; None = no CLIP score
    lpips_backbone: str | os.PathLike | None = None,  # torchvision backbone weights; None = no LPIPS
    inception: str | os.PathLike | None = None,  # FID Inception weights; None = no FID/KID
    progress: bool = True,  # tqdm bar per rank
    factories: Mapping[str, MethodFactory] | None = None,  # extra or replacement methods by name
) -> Path:
    """Edit every job with every method, score it, and write metrics.csv, summary.md and grids; resumes from
    the rows already in out_dir. `texts`: a texts file (see read_jobs) or a list of instructions. Returns
    the path of summary.md."""
    images = Path(images_dir)
    jobs = read_jobs(images, texts) if isinstance(texts, (str, os.PathLike)) else jobs_for_texts(images, texts)
    registry = {**METHODS, **(factories or {})}
    resolved = resolve_methods(list(methods), registry)
    if iterations is not None and iterations < 1:
        raise EvalError(f"--iterations must be >= 1, got {iterations}")
    out = Path(out_dir)
    columns = metric_columns(lpips=lpips_backbone is not None, clip=judge_clip is not None)
    world = World.from_env()
    torch_device = rank_device(device, world)
    record = {
        "bundle": str(bundle), "iterations": iterations, "seed": seed, "judge_clip": judge_clip,
        "inpaint_model": inpaint_model,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    check_run_record(out, record, write=world.rank == 0)
    done = {tuple(row[k] for k in KEY_COLUMNS) for row in all_rows(out, columns)}
    units = sorted(
        ((job, label) for job in jobs for label in resolved if (job.image, job.text, label) not in done),
        key=lambda u: (u[0].image, u[0].text, u[1]),
    )
    # Every image that will be edited is read once up front, so a bad file stops the run before hours of work.
    for image in sorted({job.image for job, _ in units}):
        read_image(images / image)
    mine = units[world.rank :: world.size]
    rows_path = out / ("metrics.csv" if world.size == 1 else f"metrics.rank{world.rank}.csv")
    ctx = MethodContext(bundle, torch_device, iterations, inpaint_model)
    summary = out / "summary.md"
    world = world.start(torch_device)
    try:
        world.barrier()  # every rank has read the finished rows before any rank appends new ones
        if mine:
            _edit_all(mine, resolved, ctx, images, out, rows_path, columns, seed, judge_clip, lpips_backbone, progress, world)
        world.barrier()
        if world.rank == 0:
            rows = merge_rows(out, columns)
            settings = {
                "bundle": bundle, "iterations": "bundle default" if iterations is None else iterations, "seed": seed,
                "judge CLIP": "none" if judge_clip is None else judge_clip, "images": len({r["image"] for r in rows}),
                "instructions": len({r["text"] for r in rows}),
            }  # fmt: skip
            write_report(out, images, rows, list(resolved), columns, settings, inception, torch_device)
        world.barrier()  # the summary exists on return, on every rank
    finally:
        world.close()
    return summary


# ---------------------------------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of python -m ficekit.eval.run."""
    p = argparse.ArgumentParser(
        prog="python -m ficekit.eval.run", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add = p.add_argument
    add("--images", type=Path, required=True, metavar="DIR", help="folder of the photos to edit")
    add("--texts", type=Path, required=True, metavar="FILE", help="instructions, one per line, or a CSV image,text")
    add("--methods", default="fice", help="comma-separated: fice, inpaint, or module:factory (default: fice)")
    add("--bundle", default="demo", help="ficekit bundle: 'demo', 'fice' or a folder (default: demo)")
    add("--inpaint-model", metavar="ID_OR_DIR", help="diffusers inpainting model id or folder, for 'inpaint'")
    add("--iterations", type=int, help="ficekit optimisation steps (default: the bundle's)")
    add("--seed", type=int, default=0, help="seed of every edit (default: 0)")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N; under torchrun cuda:LOCAL_RANK (default: auto)")
    add("--out", type=Path, default=Path("ficekit-eval"), help="output folder; rerun to resume (default: ficekit-eval)")
    add("--judge-clip", default="bundle", metavar="BUNDLE_OR_NONE",
        help="CLIP judging every method: 'bundle' (the --bundle's), another bundle, or 'none' (default: bundle)")  # fmt: skip
    add("--lpips-backbone", type=Path, metavar="PATH", help="torchvision backbone weights: adds LPIPS outside mask")
    add("--inception", type=Path, metavar="PATH", help="FID Inception weights: adds FID/KID to summary.md")
    add("--quiet", action="store_true", help="no progress bars and no summary print; errors only")
    return p


_fail = functools.partial(fail, 'ficekit.eval.run')  # one line on stderr, exit code 2


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, run, and turn user errors into exit code 2 with a one-line message."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # per-edit INFO lines would drown the bars
    if args.quiet:
        warnings.filterwarnings("ignore", category=UserWarning)
        try:
            from ficekit.baselines.inpaint import quiet_libraries
        except ImportError:
            pass  # the runner names the missing baseline when a method needs it
        else:
            quiet_libraries()  # diffusers' and transformers' loading bars too
    judge = None if args.judge_clip.strip().lower() == "none" else args.judge_clip
    try:
        summary = run_evaluation(
            args.images, args.texts, args.methods.split(","), args.out, bundle=args.bundle,
            inpaint_model=args.inpaint_model, iterations=args.iterations, seed=args.seed, device=args.device,
            judge_clip=judge, lpips_backbone=args.lpips_backbone, inception=args.inception, progress=not args.quiet,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:  # Ctrl-C: every finished row is already on disk (appended and fsynced)
        metrics = args.out / "metrics.csv"
        kept = count_rows(args.out) if args.out.is_dir() else 0
        print(f"ficekit.eval.run: interrupted; {kept} rows kept in {metrics} (the same command resumes)",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    if not args.quiet and int(os.environ.get("RANK", 0)) == 0:
        print(summary.read_text(encoding="utf-8"))
        print(f"wrote {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
