"""Editing speed: iterations per second and seconds per edited image, with the time split per model.

Runs the whole `FicePipeline.edit` (perception, e4e, the W+ loop, stitching) on a bundle's example photo.
Bundles: 'demo' (the shipped one, when present), any bundle folder, or random-weight bundles in real
formats: '--preset tiny' or '--preset fice' (FICE-size models: 256-px StyleGAN2, R50 DensePose, DeepLabV3,
CLIP RN50x4, e4e IR-SE-50). On a CPU the FICE-size loop is slow; time a few iterations and read the
extrapolated seconds per 500-iteration edit.

--compare times the W+ loop alone, eager (the reference) against the compiled step (OptimizeConfig
compile='auto'), in one process on the same photo, targets and settings, and reports iterations_per_second of
each, speedup (eager loop seconds / fast loop seconds: the it/s ratio when both run every step; a variant that
stops early, with steps_run < steps, gains per edit), max_abs_diff of the two results' G(w) pixels,
loss_rel_diff_first10 (largest relative difference of the total loss over the first 10 steps), compile_seconds
(the one-off cost of the first compiled call) and peak memory. Each path runs `--repeats` times; the fastest run
counts (the machine may be shared). `--profile N` also traces N steps of each path with torch.profiler (CPU) and
splits a step's time into convolution kernels, matmul/attention kernels, the compiled graph's own code and the
rest: what compiling can remove and what it cannot.

    python benchmarks/edit.py --preset fice --iterations 20 --device cuda
    python benchmarks/edit.py --bundle demo
    python benchmarks/edit.py --bundle demo --compare --json /tmp/compare.json
    python benchmarks/edit.py --preset fice --compare --iterations 5 --json /tmp/compare_fice.json
    python benchmarks/edit.py --bundle demo --compare --profile 20 --json /tmp/compare_profile.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ficekit.bundle import load_bundle
from ficekit.checkpoint_io import atomic_write
from ficekit.imageio import read_image
from ficekit.objective import EditTargets
from ficekit.optimize import OptimizeConfig, OptimizeResult, optimize_latents
from ficekit.pipeline import FicePipeline
from ficekit.random_bundle import write_random_bundle

TEXT = "striped cotton shirt"

# Optimiser-time keys of EditResult.timings, by the model they belong to.
SPLIT = {
    "generator": "optimize.generator",
    "clip": "optimize.clip",
    "densepose": "optimize.shape",
    "segmenter": "optimize.head_shape",
    "backward+adam": "optimize.backward",
}


def edit_targets(pipe: FicePipeline, photos: list[torch.Tensor], text: str) -> tuple[Any, Any, EditTargets]:
    """(generator, objective, targets) of an edit with the bundle's default settings: the steps
    FicePipeline.edit takes before its W+ loop (frame, masks, inversion, objective.prepare)."""
    settings = pipe.settings()
    x, _ = pipe.frame(photos)
    masks = pipe.perceive(x, pipe.instructions_for(x, pipe.parse(text, settings), settings), settings)
    inversion = pipe.invert(x, settings, settings.seed, progress=False)
    objective = pipe.objective(settings)
    targets = objective.prepare(x, masks.keep, [text], inversion.ws, bare_mask=masks.bare, skin_rgb=masks.skin_rgb)
    return inversion.generator, objective, targets


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# Fast-path variants --compare can time against the eager fp32 reference: name -> OptimizeConfig fields.
VARIANTS: dict[str, dict[str, Any]] = {
    "compiled": {"compile": "auto"},
    "cudagraphs": {"compile": "auto", "compile_mode": "reduce-overhead"},  # CUDA graphs (CUDA only)
    "bf16": {"precision": "bf16"},  # eager under bfloat16 autocast
    "bf16-compiled": {"compile": "auto", "precision": "bf16"},
    "fp16": {"precision": "fp16"},  # eager under float16 autocast
    "perception4": {"perception_every": 4},  # DensePose/segmenter terms every 4th step (changes the maths)
    "compiled-perception4": {"compile": "auto", "perception_every": 4},
    "early-stop20": {"early_stop": 20},  # stop on a loss plateau over 20-step windows (fewer steps, changes the result)
    "compiled-early-stop20": {"compile": "auto", "early_stop": 20},
}


# Kinds of a profiled step's time (--profile), matched on torch.profiler event names in this order; the rest is 'other'.
PROFILE_KINDS: dict[str, tuple[str, ...]] = {
    "convolution": ("aten::conv", "aten::_convolution", "aten::mkldnn_conv", "aten::_slow_conv", "aten::slow_conv",
                    "aten::cudnn_conv", "aten::thnn_conv"),
    "matmul and attention": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
                             "aten::_scaled_dot_product", "aten::scaled_dot_product"),
    "compiled graph code": ("## Call CompiledFxGraph",),  # inductor's fused kernels and their wrapper
}  # fmt: skip


def profile_kind(event_name: str) -> str:
    """The PROFILE_KINDS kind of a profiler event name ('other' when none matches)."""
    for kind, prefixes in PROFILE_KINDS.items():
        if event_name.startswith(prefixes):
            return kind
    return "other"


def profile_loop(run: Any, config: OptimizeConfig, steps: int) -> dict[str, Any]:
    """Milliseconds per step of `steps` iterations of the W+ loop under `config`: in total (wall clock of the
    traced loop), traced (the sum of every event's self CPU time) and by PROFILE_KINDS kind ('ms_by_kind';
    each event's self CPU time, so nothing counts twice)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as trace:
        start = time.perf_counter()
        result = run(dataclasses.replace(config, iterations=steps))
        wall = time.perf_counter() - start
    n = len(result.history["total"])
    by_kind = dict.fromkeys([*PROFILE_KINDS, "other"], 0.0)
    for event in trace.key_averages():
        by_kind[profile_kind(event.key)] += event.self_cpu_time_total / 1e3 / n  # microseconds -> ms per step
    return {"ms_per_step": wall * 1e3 / n, "ms_per_step_traced": sum(by_kind.values()), "steps": n,
            "ms_by_kind": by_kind}  # fmt: skip


# Iterations of the call that compiles a variant: step 1 of 0..2 is a light step under perception_every > 1.
WARM_ITERATIONS = 2


def _agreement(eager: OptimizeResult, fast: OptimizeResult) -> dict[str, float]:
    """How far a fast run is from the eager reference: result pixels, latents, total loss over 10 steps."""
    pairs = zip(eager.history["total"][:10], fast.history["total"][:10], strict=False)  # an early stop may be sooner
    first10 = [abs(f - e) / max(abs(e), 1e-12) for e, f in pairs]
    return {
        "max_abs_diff": float((eager.generated.clamp(0, 1) - fast.generated.float().clamp(0, 1)).abs().max()),
        "max_abs_diff_ws": float((eager.ws - fast.ws).abs().max()),
        "loss_rel_diff_first10": max(first10),
        "final_total": fast.history["total"][-1],
    }


def compare(
    pipe: FicePipeline,
    photos: list[torch.Tensor],
    iterations: int,
    repeats: int,
    variants: list[str],
    profile_steps: int = 0,
) -> dict[str, Any]:
    """Eager fp32 against each fast variant on the same targets: speed, agreement, compile cost, memory (and,
    with profile_steps > 0, each path's step time by kind of work: 'profile').
    The top-level numbers are those of the first variant; every variant's are under 'variants'."""
    generator, objective, targets = edit_targets(pipe, photos, TEXT)
    defaults = pipe.settings()
    base = {"lr": defaults.lr, "schedule": defaults.schedule, "seed": defaults.seed}
    configs = {"eager": OptimizeConfig(iterations=iterations, **base)}
    configs |= {name: OptimizeConfig(iterations=iterations, **base, **VARIANTS[name]) for name in variants}
    cuda = pipe.device.type == "cuda"

    def run(config: OptimizeConfig) -> OptimizeResult:
        if cuda:
            torch.cuda.synchronize()
        return optimize_latents(generator, objective, targets, config, progress=False)

    run(OptimizeConfig(iterations=1, **base))  # warm-up (allocator, caches)
    first_seconds, compiled = {}, {}
    for name in variants:  # the first call of a compiled variant compiles (2 iterations: every graph, light ones too)
        start = time.perf_counter()
        compiled[name] = run(dataclasses.replace(configs[name], iterations=WARM_ITERATIONS)).compiled
        first_seconds[name] = time.perf_counter() - start
    runs: dict[str, list[OptimizeResult]] = {name: [] for name in configs}
    peaks: dict[str, float] = {}
    rss: dict[str, float] = {}
    for _ in range(repeats):  # interleaved, so a busy machine slows every path alike
        for name, config in configs.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            runs[name].append(run(config))
            if cuda:
                peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**20)
            rss[name] = _peak_rss_mib()
    best = {name: min(results, key=lambda r: r.seconds) for name, results in runs.items()}
    steps = configs["eager"].steps
    eager = best["eager"]
    per_variant: dict[str, dict[str, Any]] = {}
    for name in variants:
        fast = best[name]
        steps_run = len(fast.history["total"])  # fewer than `steps` when the loop stopped early
        per_variant[name] = {
            "settings": VARIANTS[name],
            "compiled": fast.compiled and compiled[name],
            "steps_run": steps_run,
            "iterations_per_second": steps_run / fast.seconds,
            "speedup": eager.seconds / fast.seconds,
            **_agreement(eager, fast),
            "compile_seconds": max(0.0, first_seconds[name] - (WARM_ITERATIONS + 1) * fast.seconds_per_iteration)
            if compiled[name]
            else 0.0,
            "peak_rss_mib_after": rss[name],
            **({"cuda_peak_mib": peaks[name]} if cuda else {}),
        }
    head = per_variant[variants[0]]
    profiles = (
        {name: profile_loop(run, config, profile_steps) for name, config in configs.items()} if profile_steps else {}
    )
    return {
        "iterations_timed": iterations,
        "steps_timed": steps,
        "repeats": repeats,
        "fast_variant": variants[0],
        "compiled": head["compiled"],
        "iterations_per_second": {"eager": steps / eager.seconds, "fast": head["iterations_per_second"]},
        "iterations_per_second_all_runs": {
            name: [len(r.history["total"]) / r.seconds for r in rs] for name, rs in runs.items()
        },
        "speedup": head["speedup"],
        "max_abs_diff": head["max_abs_diff"],
        "loss_rel_diff_first10": head["loss_rel_diff_first10"],
        "compile_seconds": head["compile_seconds"],
        "final_total": {"eager": eager.history["total"][-1], "fast": head["final_total"]},
        "peak_rss_mib": {"eager": rss["eager"], "fast": head["peak_rss_mib_after"]},
        **({"cuda_peak_mib": peaks} if cuda else {}),
        "variants": per_variant,
        **({"profile": profiles} if profiles else {}),
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark named by `argv` (default: the command line), print its table, write and return its report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--bundle", help="bundle name or folder (default: demo)")
    src.add_argument("--preset", choices=["tiny", "fice"], help="random-weight bundle of this size instead")
    parser.add_argument("--iterations", type=int, default=None, help="optimisation steps (default: the bundle's)")
    parser.add_argument("--batch", type=int, default=1, help="photos edited together")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--compare", action="store_true", help="eager against compiled W+ loop (see above)")
    parser.add_argument("--repeats", type=int, default=2, help="--compare: timed runs of each path")
    parser.add_argument(
        "--variants", default="compiled", help=f"--compare: comma-separated fast paths, of {', '.join(VARIANTS)}"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="--compare: also trace N steps of each path (CPU time by kind)",
    )
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/edit.json"), help="where to write")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if args.profile < 0 or (args.profile and not args.compare):
        parser.error("--profile: expected a number of steps >= 1, with --compare")
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        if args.preset:
            bundle = write_random_bundle(Path(tmp) / args.preset, preset=args.preset, seed=0)
        else:
            bundle = load_bundle(args.bundle or "demo")
        pipe = FicePipeline.from_bundle(bundle, device=args.device, timing=not args.compare)
        photo = read_image(bundle.example_images[0])
        photos = [photo] * args.batch
        iterations = args.iterations or bundle.defaults.iterations
        device = torch.cuda.get_device_name() if pipe.device.type == "cuda" else platform.processor() or "cpu"
        header = {
            "bundle": args.preset and f"random:{args.preset}" or bundle.name,
            "device": device,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "batch": args.batch,
        }
        if args.compare:
            report = {"benchmark": "W+ loop, eager fp32 vs fast variants", **header}
            report.update(compare(pipe, photos, iterations, args.repeats, variants, args.profile))
            ips = report["iterations_per_second"]
            print(f"bundle {report['bundle']} on {device}, {iterations} iterations, best of {args.repeats}")
            print(f"iterations/s eager {ips['eager']:.2f}  fast {ips['fast']:.2f}  speedup {report['speedup']:.2f}")
            for name, v in report["variants"].items():
                print(
                    f"{name:<14} it/s {v['iterations_per_second']:7.2f}  speedup {v['speedup']:5.2f}  "
                    f"max_abs_diff {v['max_abs_diff']:.3g}  loss_rel_diff_first10 {v['loss_rel_diff_first10']:.3g}  "
                    f"compile_seconds {v['compile_seconds']:.1f}  compiled {v['compiled']}"
                )
            if "profile" in report:
                print_profile(report["profile"])
        else:
            report = timed_edit(pipe, bundle, photos, iterations, header)
    atomic_write(args.json, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    print(f"wrote {args.json}")
    return report


def print_profile(profiles: dict[str, dict[str, Any]]) -> None:
    """The --profile table: ms per step of each path, by kind of work."""
    kinds = [*PROFILE_KINDS, "other"]
    print(f"{'ms per step (profiled)':<24}{'wall':>8}" + "".join(f"{kind:>22}" for kind in kinds))
    for name, p in profiles.items():
        cells = "".join(f"{p['ms_by_kind'][kind]:>22.1f}" for kind in kinds)
        print(f"{name:<24}{p['ms_per_step']:>8.1f}{cells}")


def timed_edit(pipe: FicePipeline, bundle: Any, photos: list[torch.Tensor], iterations: int, header: dict) -> dict:
    """The whole FicePipeline.edit, timed per stage and per model."""
    pipe.edit(photos, TEXT, iterations=1, progress=False)  # warm-up (builds, caches)
    result = pipe.edit(photos, TEXT, iterations=iterations, progress=False)
    batch = len(photos)
    t = result.timings
    steps = iterations + 1
    per_step = t["optimize"] / steps
    full_edit = t["total"] - t["optimize"] + per_step * (bundle.defaults.iterations + 1)
    split = {name: t.get(key, 0.0) / steps for name, key in SPLIT.items()}
    report = {
        "benchmark": "FicePipeline.edit, per edit of a batch",
        **header,
        "iterations_timed": iterations,
        "iterations_per_second": steps / t["optimize"],
        "seconds_per_image_timed": t["total"] / batch,
        "seconds_per_image_at_default_iterations": full_edit / batch,
        "default_iterations": bundle.defaults.iterations,
        "seconds_per_iteration_by_model": split,
        "seconds_setup": {k: t[k] for k in ("perception", "inversion", "stitch")},
    }
    print(f"bundle {report['bundle']} on {report['device']}, batch {batch}, {iterations} iterations timed")
    print(f"{'iterations/s':<34}{report['iterations_per_second']:>10.2f}")
    print(f"{'s / image (timed run)':<34}{report['seconds_per_image_timed']:>10.2f}")
    print(f"{f's / image at {bundle.defaults.iterations} iterations':<34}{full_edit / batch:>10.2f}")
    for name, seconds in split.items():
        print(f"  {name + ' s / iteration':<32}{seconds:>10.4f}")
    return report


if __name__ == "__main__":
    main()
