"""python -m ficekit.edit — edit the garment in photos from a text description (FICE, GAN inversion).

Examples:
  python -m ficekit.edit --text "striped cotton shirt"
  python -m ficekit.edit --text "red polka dot dress" --image me.jpg --mask auto --stitch laplacian
  python -m ficekit.edit --text "blue jeans" --input-dir photos/ --bundle fice --device cuda --out results/
  python -m ficekit.edit --text "red t-shirt" --text "add white stripes"      # two rounds, warm-started
  python -m ficekit.edit --interactive --image me.png                          # type instructions at a prompt
  python -m ficekit.edit --text "striped shirt" --weights clip=1,img=30,shape=10 --regularizer w_mean

Without --image/--input-dir the bundle's example photos are edited. Photos of any size or aspect are padded
to a square (repeating their border pixels), resized to the generator's resolution, edited, and mapped back
to their own size; outside the blend mask the photo is returned unchanged. A photo outside the bundle's world
(e.g. a real photo on the demo bundle) is refused with exit code 2 unless --force.
Writes, per photo, <name>_result.png, <name>_grid.png (photo | mask | generated | result),
<name>_mask_{edit,keep,blend}.png at the photo's size, and one report.json (settings, bundle, loss history,
timings, domain scores); with several --text, every file of round k has the suffix _round<k>.
Existing files are never overwritten: a new name is chosen. Exit codes: 0 done, 1 some inputs skipped,
2 bad usage or input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from .cli import EXIT_OK, EXIT_PARTIAL, fail, run_command, setup_logging
from .inputs import input_paths, read_photos
from .outputs import OutputWriter, PhotoOutputs, check_output_dir, describe_written, full_size, jsonable

PROG = "ficekit.edit"


def parse_weights(spec: str) -> dict[str, float]:
    """'clip=1,img=30' -> {'clip': 1.0, 'img': 30.0}; ValueError on malformed, non-finite or empty specs."""
    weights = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--weights: expected name=value, got {item!r}")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--weights: {name.strip()!r} has a non-numeric value {value!r}") from None
    if not weights:
        raise ValueError(f"--weights: no name=value pairs in {spec!r}, e.g. clip=1,img=30")
    return weights


def build_parser() -> argparse.ArgumentParser:
    """The command's options (each with its default shown in the help)."""
    p = argparse.ArgumentParser(
        prog="python -m ficekit.edit", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--text", action="append", metavar="TEXT",
        help="the garment description or instruction, e.g. 'striped cotton shirt'; repeat for rounds")
    add("--interactive", action="store_true", help="type instructions at a prompt (undo, redo, save, help, quit)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", nargs="+", type=Path, metavar="PATH", help="photo(s) to edit")
    src.add_argument("--input-dir", type=Path, metavar="DIR", help="edit every image in this folder")
    add("--bundle", default="demo", help="model bundle: 'demo', 'fice', or a folder with bundle.json (default: demo)")
    add("--out", type=Path, default=Path("ficekit-out"), help="output folder (default: ficekit-out)")
    add("--iterations", type=int, help="optimisation steps (default: the bundle's, FICE: 500)")
    add("--followup-iterations", type=int, metavar="N", help="steps of a follow-up round (default: the bundle's)")
    add("--lr", type=float, help="Adam learning rate (default: the bundle's, FICE: 0.05)")
    add("--weights", help="loss weights as name=value pairs, e.g. clip=1,img=30,shape=10,head_shape=1,w_delta=1; "
        "ficekit's texture, skin and collage terms too (texture=0,skin=0,collage=0 turns them off)")
    add("--regularizer", help="latent regulariser, e.g. w_delta (FICE), w_mean, pn, none (default: the bundle's)")
    add("--mask", choices=["auto", "fice"], help="masks: auto (garment auto-masking) or fice (default: the bundle's)")
    add("--category", choices=["upper", "lower", "full", "outerwear"], help="garment category (default: from the text)")
    add("--stitch", help="stitching: fice, hard, feather, laplacian (default: the bundle's)")
    add("--schedule", help="learning-rate schedule: constant, cosine, rampdown (default: the bundle's)")
    add("--clip-augment", type=int, metavar="N", help="CLIP scores N random views of G(w); 0 = FICE (default: the bundle's)")
    add("--clip-region", choices=["image", "edit"], help="CLIP scores G(w) (image, FICE) or G(w) inside the edit over "
        "the kept photo (edit) (default: the bundle's)")
    add("--inversion", choices=["e4e", "optimize", "pti"], help="photo -> W+: e4e (FICE), optimize or pti (default: the bundle's)")
    add("--inversion-steps", type=int, metavar="N", help="steps of an optimize/pti inversion (default: the method's)")
    add("--start", choices=["inversion", "collage"], help="where the optimisation starts: the photo's inversion "
        "(FICE) or collage, the encoder's latent of the photo with the text's gallery exemplars pasted into the "
        "garment (default: the bundle's)")
    add("--colour-match", choices=["off", "collage"], help="collage: after the optimisation, map the garment's "
        "colours onto those of the text's gallery exemplars, keeping the generator's drawing; off = FICE (default: "
        "the bundle's)")
    add("--compile", choices=["off", "auto"], help="auto: compile the edit step once (minutes on a CPU), then about "
        "2x faster steps; worth it for sessions and batches (default: the bundle's, off)")
    add("--perception-every", type=int, metavar="K", help="evaluate the DensePose and segmenter terms every K-th "
        "step only: faster, changes FICE's maths (default: the bundle's, 1 = every step)")
    add("--early-stop", type=int, metavar="W", help="stop once the mean loss of the last W steps is less than "
        "--early-stop-tol below that of the W before: fewer steps, changes the result (default: the bundle's, 0 = off)")
    add("--early-stop-tol", type=float, metavar="T", help="relative fall that counts as progress for --early-stop "
        "(default: the bundle's, 0.01)")
    add("--seed", type=int, default=0, help="random seed for a repeatable run (default: 0)")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    add("--batch-size", type=int, default=4, help="photos optimised together (default: 4)")
    add("--force", action="store_true", help="edit photos outside the bundle's domain, and allow very long runs")
    add("--quiet", action="store_true", help="no progress bar and no summary; errors only")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        iterations=args.iterations, lr=args.lr, regularizer=args.regularizer, mask=args.mask, stitch=args.stitch,
        clip_augment=args.clip_augment, clip_region=args.clip_region, schedule=args.schedule, seed=args.seed, category=args.category,
        batch_size=args.batch_size, inversion=args.inversion, inversion_steps=args.inversion_steps, start=args.start,
        followup_iterations=args.followup_iterations, colour_match=args.colour_match, compile=args.compile,
        perception_every=args.perception_every, early_stop=args.early_stop, early_stop_tol=args.early_stop_tol,
        weights=parse_weights(args.weights) if args.weights is not None else None,
    )


class _Job:
    """One run of the command: what it read, what it wrote (so Ctrl-C can say what was kept)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.say = (lambda *a: None) if args.quiet else print
        self.groups: list[PhotoOutputs] = []

    def kept(self) -> str:
        files = sum(path.exists() for group in self.groups for path in group.files.values())  # after any rollback
        return f"{files} file(s) kept in {self.args.out}" if files else "nothing written"

    def run(self) -> int:
        from .bundle import load_bundle
        from .pipeline import FicePipeline, edit_settings, resolve_device

        args = self.args
        texts = [t for t in (args.text or [])]
        if not texts and not args.interactive:
            return fail(PROG, "give --text 'a description' (repeat it for rounds) or --interactive")
        if any(not t.strip() for t in texts):
            return fail(PROG, "--text is empty; describe the garment, e.g. --text 'striped cotton shirt'")
        # 1. Check every option, the inputs and the output folder before any model loads.
        overrides = _overrides(args)
        bundle = load_bundle(args.bundle)
        settings = edit_settings(bundle.defaults, force=args.force, **overrides)
        resolve_device(args.device)
        paths, photos, skipped = read_photos(input_paths(args.image, args.input_dir, bundle), tolerant=args.input_dir is not None)
        out = check_output_dir(args.out)
        for path, reason in skipped:
            print(f"{PROG}: skipping {path}: {reason}", file=sys.stderr)
        # 2. Edit.
        pipe = FicePipeline.from_bundle(bundle, device=args.device)
        if args.interactive:
            from .interactive import run_prompt

            code = run_prompt(pipe, photos[0], paths[0], out, settings, self, force=args.force, texts=texts)
        elif len(texts) == 1:
            code = self._single(pipe, paths, photos, texts[0], settings, out)
        else:
            code = self._rounds(pipe, paths, photos, texts, settings, out)
        if skipped and code == EXIT_OK:
            print(f"{PROG}: {len(skipped)} file(s) skipped: {', '.join(str(p) for p, _ in skipped)}", file=sys.stderr)
            return EXIT_PARTIAL
        return code

    def _single(self, pipe: Any, paths: list[Path], photos: list[torch.Tensor], text: str, settings: Any, out: Path) -> int:
        from .settings import settings_dict

        args = self.args
        names = [str(p) for p in paths]
        domain = pipe.domain_scores(photos) if args.force and getattr(pipe.bundle, "domain", None) else []
        result = pipe.edit(
            photos, text, names=names, progress=not args.quiet, check_domain=not args.force, force=args.force,
            **settings_dict(settings),
        )
        with OutputWriter(out) as writer:  # removes what it wrote on a failure
            for i, path in enumerate(paths):
                generated, masks = full_size(result, i, photos[i])
                group = writer.photo(path.stem, photos[i], result.images[i], masks, generated)
                group.name = str(path)
                self.groups.append(group)
            report = {
                "text": text,
                "instruction": result.instruction,
                "ignored_words": list(getattr(result.instruction, "ignored_words", []) or []),
                "categories": [i.category for i in result.instructions],
                "bundle": {"name": pipe.bundle.name, "root": str(pipe.bundle.root)},
                "images": names,
                "settings": result.settings,
                "inversion": result.inversion,
                "device": str(pipe.device),
                "domain": {"scores": domain or result.domain_scores, "checked": not args.force,
                           "override": bool(args.force)},
                "loss_history": result.history,
                "final_losses": {k: v[-1] for k, v in result.history.items() if v},
                "timings_seconds": result.timings,
                "outputs": {g.name: g.files for g in self.groups},
            }
            report_path = writer.json(report)
        self.say(f"edited {len(paths)} photo(s) with {text!r} in {result.timings['total']:.1f} s; wrote:")
        for line in describe_written(self.groups, [report_path]):
            self.say(line)
        return EXIT_OK

    def _rounds(self, pipe: Any, paths: list[Path], photos: list[torch.Tensor], texts: list[str], settings: Any,
                out: Path) -> int:
        from .settings import settings_dict

        args = self.args
        reports = []
        with OutputWriter(out) as writer:  # removes what it wrote on a failure
            for path, photo in zip(paths, photos, strict=True):
                session = pipe.session(photo, name=str(path), check_domain=not args.force, force=args.force,
                                       **settings_dict(settings))
                session_groups = []
                for k, text in enumerate(texts, start=1):
                    round_ = session.apply(text, progress=not args.quiet)
                    if round_ is None or round_.instruction != text:
                        continue  # undo/redo/reset: nothing new to write
                    if round_.change.ignored_words:
                        self.say(f"  {text!r}: ignored {', '.join(round_.change.ignored_words)}")
                    generated, masks = full_size(round_.result, 0, photo)
                    group = writer.photo(path.stem, photo, round_.result.images[0], masks, generated, f"_round{k}")
                    group.name = f"{path} round {k} ({round_.text!r}, {round_.seconds:.1f} s)"
                    session_groups.append(group)
                    self.groups.append(group)
                reports.append(session.report(session_groups))
            report_path = writer.json({"texts": texts, "sessions": reports, "device": str(pipe.device)})
        self.say(f"edited {len(paths)} photo(s) in {len(texts)} round(s); wrote:")
        for line in describe_written(self.groups, [report_path]):
            self.say(line)
        return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run one edit job from parsed arguments; returns the process exit code."""
    job = _Job(args)
    return run_command(PROG, job.run, interrupted=job.kept)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, run, and turn user errors into exit code 2 with a one-line message."""
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    return run(args)


__all__ = ["build_parser", "jsonable", "main", "parse_weights", "run"]


if __name__ == "__main__":
    sys.exit(main())
