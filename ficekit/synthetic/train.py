"""python -m ficekit.synthetic.train — train every demo model on the synthetic world and write the bundle.

Trains, in order: the StyleGAN2 generator (+ discriminator), the e4e encoder (on the generator's samples
and rendered photos), a small CLIP (image-caption pairs), a small DensePose (rendered I/U/V) and a small
parser (with the FICE-style 3-class segmenter as a view of it). Writes each model file and a bundle.json
with provenance (seeds, steps, seconds, final metrics) into --out. Each trainer runs alone with --only.

Examples:
  python -m ficekit.synthetic.train --out checkpoints/demo --minutes 60
  python -m ficekit.synthetic.train --out checkpoints/demo --only clip,parser --minutes 10 --device cuda
  python -m ficekit.synthetic.train --out checkpoints/demo --only gan,e4e --minutes 90 --resume
  python -m ficekit.synthetic.train --out /work/demo-v2 --world v2 --only gan --minutes 120 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ficekit.bundle import (
    BUNDLE_FILE,
    REQUIRED_ROLES,
    Bundle,
    EditDefaults,
    ModelSpec,
    load_bundle,
    sha256_file,
    write_bundle,
    write_domain,
)
from ficekit.checkpoint_io import atomic_write, load_torch_file
from ficekit.synthetic.compact import STORAGE_DTYPES, compact_checkpoint
from ficekit.synthetic.dataset import held_out_seeds
from ficekit.synthetic.render import render
from ficekit.synthetic.training import TrainReport, trainer_of
from ficekit.synthetic.world import DEFAULT_WORLD, WORLD_VERSIONS, check_world

log = logging.getLogger(__name__)

STAGES = ("gan", "e4e", "clip", "densepose", "parser")
# The bundle roles each stage writes (the GAN co-trains the encoder; the parser's segmenter is a view of it).
STAGE_ROLES: dict[str, tuple[str, ...]] = {
    "gan": ("generator", "encoder"), "e4e": ("encoder",), "clip": ("clip",), "densepose": ("densepose",),
    "parser": ("parser", "segmenter"),
}  # fmt: skip
# Share of the time budget each stage gets when all run; the GAN dominates the demo's quality.
TIME_SHARES = {"gan": 0.55, "e4e": 0.2, "clip": 0.1, "densepose": 0.075, "parser": 0.075}
RECORDS_FILE = "training-records.json"  # trained roles' records while the bundle is incomplete
STEP_BACKSTOP = 1_000_000  # stages end by their time budget; this only bounds a runaway loop
EXAMPLE_SIZE = 128  # example photos are rendered larger than the generator; the editor fits them
# Demo defaults: FICE's weights, garment auto-masking, feathered stitching and 4 CLIP views (the ficekit
# extensions; on the demo's small CLIP the views raised colour / pattern success from 12 / 25 % to 38 / 42 %
# in the synthetic benchmark, n = 24); a session's follow-up rounds start from the last round's W+ and take
# 60 steps (README: the two-round benchmark).
DEMO_DEFAULTS = EditDefaults(iterations=200, mask="auto", stitch="feather", clip_augment=4, followup_iterations=60)
# Trainer settings of the demo that differ from the trainers' own defaults (the user's stage_kwargs win):
# the GAN co-trains an encoder that reconstructs the renders, which teaches G garment colour and pattern
# in tens of CPU minutes where the adversarial loss alone gives silhouettes (see train_gan); a pool of
# 20,000 renders (about 150 s to draw) so the GAN does not see the same people again and again. The e4e
# stage keeps BatchNorm's moving averages (bn_calibration 0); an earlier comparison with calibration was
# measured on files whose float16 storage had turned large running variances into inf, and is void.
# The GAN also writes its files every 15 minutes, so a multi-hour run that is killed resumes (--resume) from there.
DEMO_STAGE_KWARGS: dict[str, dict[str, Any]] = {
    "gan": {"recon_weight": 10.0, "pool_size": 20_000, "checkpoint_every_s": 900.0},
}
# Stages that can continue from the model file already in the bundle folder (--resume), and that file.
RESUMABLE = {"gan": "generator.pt", "e4e": "e4e.pt", "clip": "clip.pt"}
# Held-out renders the demo's domain record is calibrated on, and their seed block (held_out_seeds).
DOMAIN_RENDERS, DOMAIN_SEED = 1000, 5


def _stage_runner(stage: str) -> Callable[..., TrainReport | list[TrainReport]]:
    """The trainer function of a stage, imported only when it runs."""
    if stage == "gan":
        from ficekit.synthetic.train_gan import train_gan

        return train_gan
    if stage == "e4e":
        from ficekit.synthetic.train_e4e import train_e4e

        def run_e4e(out_dir: Path, **kw: Any) -> TrainReport:
            # Fine-tune the encoder the GAN stage co-trained with this generator, else start from scratch.
            kw.setdefault("init_from", _cotrained_encoder(out_dir))
            return train_e4e(out_dir, out_dir / "generator.pt", **kw)

        return run_e4e
    if stage == "clip":
        from ficekit.synthetic.train_clip import train_clip

        return train_clip
    if stage == "densepose":
        from ficekit.synthetic.train_densepose import train_densepose

        return train_densepose
    from ficekit.synthetic.train_parser import train_parser

    return train_parser


def _relative_paths(record: Any, out_dir: Path) -> Any:
    """`record` with every string naming a path inside out_dir made relative to it, so bundle.json's
    provenance stays true when the bundle folder moves (or ships)."""
    if isinstance(record, dict):
        return {k: _relative_paths(v, out_dir) for k, v in record.items()}
    if isinstance(record, list):
        return [_relative_paths(v, out_dir) for v in record]
    if isinstance(record, str) and Path(record).is_absolute():
        try:
            return str(Path(record).resolve().relative_to(out_dir.resolve()))
        except ValueError:
            return record
    return record


def _cotrained_encoder(out_dir: Path) -> Path | None:
    """out_dir/e4e.pt when the GAN trainer wrote it (an encoder co-trained with generator.pt), else None."""
    from ficekit.synthetic.train_gan import TRAINER_ID as GAN_TRAINER_ID

    path = out_dir / "e4e.pt"
    return path if trainer_of(path) == GAN_TRAINER_ID else None


def _resume_kwargs(stage: str, out_dir: Path, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The trainer arguments that continue `stage` from its model file in out_dir (ValueError if it has none)."""
    path = out_dir / RESUMABLE[stage]
    if not path.is_file():
        raise ValueError(f"--resume: {out_dir} has no {RESUMABLE[stage]} to continue the {stage} stage from")
    resume: dict[str, Any] = {"init_from": path}
    if stage == "gan" and kwargs.get("recon_weight") and (out_dir / "e4e.pt").is_file():
        resume["init_encoder_from"] = out_dir / "e4e.pt"  # the co-trained (or fine-tuned) encoder goes on too
    return resume


def _example_seeds(n: int, world: str = DEFAULT_WORLD) -> list[int]:
    """The first `n` held-out seeds whose person wears a plain top and no jacket: the README's example edit
    ("striped cotton shirt") then has a visible garment to restyle."""
    from ficekit.synthetic.world import render_attributes

    seeds = []
    for seed in held_out_seeds(50 * n):
        garments = render_attributes(seed, world).garments()
        if "upper" in garments and "outerwear" not in garments and garments["upper"].pattern == "plain":
            seeds.append(seed)
            if len(seeds) == n:
                return seeds
    raise RuntimeError(f"no {n} held-out people with a plain top among {50 * n} seeds")


def _write_examples(out_dir: Path, n: int = 2, world: str = DEFAULT_WORLD) -> list[str]:
    """Held-out renders (never seen in training) of people in a plain top, as the bundle's example photos."""
    from PIL import Image

    names = []
    for i, seed in enumerate(_example_seeds(n, world)):
        name = f"examples/person{i}.png"
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            Image.fromarray(render(seed, size=EXAMPLE_SIZE, world=world).image).save(path)
        names.append(name)
    return names


def _existing(out_dir: Path) -> tuple[dict[str, ModelSpec], dict[str, Any]]:
    """Model records and training provenance already in `out_dir`, to retrain only some roles: a bundle's,
    or, before any bundle.json exists, a generator.pt the GAN stage wrote (its embedded training record);
    then the records of runs that could not write a bundle yet (RECORDS_FILE), which are newer."""
    models: dict[str, ModelSpec] = {}
    training: dict[str, Any] = {}
    if (out_dir / BUNDLE_FILE).exists():
        bundle = load_bundle(out_dir)
        models, training = dict(bundle.models), dict(bundle.provenance.get("training", {}))
    elif (out_dir / "generator.pt").exists():
        record = load_torch_file(out_dir / "generator.pt", "generator checkpoint").get("training", {})
        spec = ModelSpec("generator.pt", "fice", sha256=sha256_file(out_dir / "generator.pt"))
        models, training = {"generator": spec}, {"generator": record}
    records = out_dir / RECORDS_FILE
    if records.exists():
        try:
            data = json.loads(records.read_text(encoding="utf-8"))
            models.update({role: ModelSpec(**spec) for role, spec in data["models"].items()})
            training.update(data["training"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{records} is corrupt ({e}); delete it and retrain the roles it listed") from e
    return models, training


def _recorded_world(record: Any) -> str | None:
    """The world version a training record names; 'v1' for records from before world versions (which could only
    be v1), None for a model not trained on renders (train_gan's `data`)."""
    config = record.get("config") if isinstance(record, dict) else None
    if not isinstance(config, dict) or config.get("data") == "given":
        return None
    return config.get("world") or "v1"


def _check_world_of_kept_models(out_dir: Path, training: dict[str, Any], stages: Sequence[str], world: str) -> None:
    """ValueError when a model this run keeps in out_dir was trained on another world than `world`: a bundle's
    models must all know the same photos (e.g. an e4e trained on v2 renders for a v1 generator would not)."""
    retrained = {role for stage in stages for role in STAGE_ROLES[stage]}
    others = {role: w for role, record in training.items()
              if role not in retrained and (w := _recorded_world(record)) not in (None, world)}  # fmt: skip
    if others:
        kept = ", ".join(f"{role} ({w})" for role, w in sorted(others.items()))
        raise ValueError(f"{out_dir} holds models trained on another world: {kept}; pass that --world, retrain them, "
                         f"or use another --out")


def _save_records(out_dir: Path, models: dict[str, ModelSpec], training: dict[str, Any], roles: Sequence[str]) -> None:
    """Add `roles`' records to RECORDS_FILE (atomically, merged with what another run may have added)."""
    path = out_dir / RECORDS_FILE
    data: dict[str, Any] = {"models": {}, "training": {}}
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
    for role in roles:
        data["models"][role] = dataclasses.asdict(models[role])
        data["training"][role] = training[role]
    text = json.dumps(data, indent=2, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def train_bundle(
    out_dir: str | Path,
    stages: Sequence[str] = STAGES,
    minutes: float = 60.0,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    stage_kwargs: dict[str, dict[str, Any]] | None = None,
    threads: int | None = None,
    storage: str = "float16",
    resume: bool = False,
    world: str = DEFAULT_WORLD,
    domain_renders: int = DOMAIN_RENDERS,
) -> Bundle | None:
    """Train `stages` within about `minutes` of wall-clock time and write `out_dir`/bundle.json.

    The time budget is split by TIME_SHARES among the stages that run and ends each stage (the step cap
    is only a backstop unless stage_kwargs[stage]['steps'] sets one). `threads` sets torch's CPU threads
    for the run (on a busy machine 1 thread trains several times faster than oversubscribed cores).
    `storage` 'float16' rewrites each trained .pt file with float16 weights (compact.py) before it is hashed.
    `resume` continues each stage from the model file already in `out_dir` (RESUMABLE names the stages that
    can) instead of training it from scratch. `world` is the synthetic world version every stage trains on
    (recorded in the provenance; the bundle's example photos are drawn from it too). `domain_renders` held-out
    renders calibrate the bundle's domain record (ficekit.domain; 0 = write none, >= 20 otherwise).

    Returns the bundle, or None while `out_dir` still lacks a required role (another run, e.g. in a second
    process, may train it): the trained roles' records then wait in RECORDS_FILE and the run that completes
    the set writes bundle.json.
    """
    if storage not in STORAGE_DTYPES:
        raise ValueError(f"storage must be one of {STORAGE_DTYPES}, got {storage!r}")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    if minutes <= 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    if domain_renders != 0 and domain_renders < 20:
        raise ValueError(f"domain_renders must be 0 (no domain record) or >= 20, got {domain_renders}")
    check_world(world)
    fixed = [s for s in stages if s not in RESUMABLE]
    if resume and fixed:
        raise ValueError(f"--resume: stage(s) {fixed} cannot resume (only {list(RESUMABLE)}); leave them out with --only")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models, training = _existing(out)
    _check_world_of_kept_models(out, training, stages, world)
    if "e4e" in stages and "gan" not in stages and "generator" not in models:
        raise ValueError(f"training e4e needs a generator: {out} has none; include the 'gan' stage")
    share_total = sum(TIME_SHARES[s] for s in stages)
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        trained = _run_stages(
            out, stages, minutes, share_total, models, training, device, seed, progress, stage_kwargs, storage, resume,
            world,
        )
    finally:
        torch.set_num_threads(previous_threads)
    provenance = {
        "kind": "demo models trained by ficekit on its synthetic fashion world",
        "created_by": "python -m ficekit.synthetic.train",
        "seed": seed,
        "world": world,
        "device": str(device),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - started, 1),
        "training": training,
    }
    # Another run may have trained other roles into `out` meanwhile: keep its records, ours win.
    _save_records(out, models, training, trained)
    models, provenance["training"] = _existing(out)
    missing = [role for role in REQUIRED_ROLES if role not in models]
    if missing:
        log.warning(
            "%s holds no complete bundle yet (no %s): records kept in %s; train the rest with --only",
            out, ", ".join(missing), RECORDS_FILE,
        )  # fmt: skip
        return None
    examples = _write_examples(out, world=world)
    bundle = write_bundle(out, models, DEMO_DEFAULTS, provenance, examples, name="demo", overwrite=True)
    (out / RECORDS_FILE).unlink(missing_ok=True)  # bundle.json now holds every record
    return _write_domain_record(bundle, world, device, domain_renders) if domain_renders else bundle


def _write_domain_record(bundle: Bundle, world: str, device: str, renders: int) -> Bundle:
    """Calibrate the demo's domain record (ficekit.domain) on `renders` held-out renders of seed block
    DOMAIN_SEED (disjoint from the synthetic benchmark's block 0) and store it in bundle.json."""
    from ficekit.domain import DEMO_WAY_ON, calibrate, demo_description, render_photos
    from ficekit.pipeline import FicePipeline

    pipe = FicePipeline(bundle, device=device)
    photos = render_photos(renders, DOMAIN_SEED, pipe.resolution, world)
    command = (
        f"python -m ficekit.synthetic.train (recalibrate: python -m ficekit.domain_calibrate --bundle <this folder> "
        f"--renders {renders} --seed {DOMAIN_SEED} --write)"
    )
    record = calibrate(pipe, photos, demo_description(world), DEMO_WAY_ON, command=command)
    log.info("domain record: %s, accepted range [%.3g, %.3g]", record.score, record.low, record.high)
    return write_domain(bundle.root, record)


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
    storage: str = "float16",
    resume: bool = False,
    world: str = DEFAULT_WORLD,
) -> list[str]:
    """Run the stages in STAGES order, recording each trained model's record and provenance; returns the
    roles trained."""
    trained: list[str] = []
    for stage in STAGES:
        if stage not in stages:
            continue
        budget_s = 60.0 * minutes * TIME_SHARES[stage] / share_total
        kwargs = dict(steps=STEP_BACKSTOP, time_budget_s=budget_s, device=device, seed=seed, progress=progress,
                      world=world)
        kwargs.update(DEMO_STAGE_KWARGS.get(stage, {}))
        kwargs.update((stage_kwargs or {}).get(stage, {}))
        if resume:
            kwargs.update(_resume_kwargs(stage, out, kwargs))
        if stage == "gan" and kwargs.get("recon_weight") and "encoder_kwargs" in (stage_kwargs or {}).get("e4e", {}):
            # The co-trained encoder is the e4e stage's starting point: same architecture.
            kwargs.setdefault("encoder_kwargs", stage_kwargs["e4e"]["encoder_kwargs"])  # type: ignore[index]
        log.info("training %s for up to %.1f min", stage, (kwargs["time_budget_s"] or 0) / 60)
        reports = _stage_runner(stage)(out, **kwargs)
        reports = reports if isinstance(reports, list) else [reports]
        for report in [r for main_report in reports for r in (main_report, *main_report.companions)]:
            if storage == "float16" and report.spec.file.endswith(".pt"):
                before, after = compact_checkpoint(out / report.spec.file)
                log.info("%s: stored as float16, %.1f -> %.1f MB", report.spec.file, before / 1e6, after / 1e6)
            models[report.role] = dataclasses.replace(report.spec, sha256=sha256_file(out / report.spec.file))
            training[report.role] = _relative_paths(report.provenance(), out)
            trained.append(report.role)
            log.info("%s: %d steps in %.0f s, %s", report.role, report.steps, report.seconds, report.metrics)
    return trained


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
    parser.add_argument("--storage", choices=STORAGE_DTYPES, default="float16", help="weight dtype on disk (default: float16)")
    parser.add_argument("--world", choices=WORLD_VERSIONS, default=DEFAULT_WORLD,
                        help=f"synthetic world version to train on (default: {DEFAULT_WORLD}; v2 frames the upper body)")
    parser.add_argument("--resume", action="store_true", help=f"continue {', '.join(RESUMABLE)} from the files in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    try:
        bundle = train_bundle(
            args.out, stages, args.minutes, args.device, args.seed, progress=not args.quiet, threads=args.threads,
            storage=args.storage, resume=args.resume, world=args.world,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"ficekit.synthetic.train: error: {e}", file=sys.stderr)
        return 2
    if bundle is None:
        print(f"trained {', '.join(stages)} into {args.out}; no bundle.json yet: roles are missing (see the log)")
    elif not args.quiet:
        print(f"wrote {bundle.root / BUNDLE_FILE} ({', '.join(sorted(bundle.models))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
