"""The human-readable end of a dataset evaluation: OUT/summary.md and OUT/grids/<text-slug>.png.

Written by rank 0 once every edit is in metrics.csv, from those rows and the PNGs beside them (so a resumed
run reports on all of its edits, not only the last session's). summary.md is one Markdown table, metric x
method, mean ± sample std and n per cell, plus FID/KID of each method's results against the photos when
Inception weights are given; each grid shows one instruction, a row per image: photo | mask | each method.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ficekit.checkpoint_io import atomic_write
from ficekit.eval.jobs import Job, text_slug
from ficekit.eval.results import KEY_COLUMNS, result_path
from ficekit.imageio import comparison_grid, read_image, replace_png

__all__ = ["METRIC_LABELS", "method_order", "summary_text", "write_grids", "write_report"]

# Summary rows: column -> (label, decimals). The CSV holds the columns of this table that the run measures.
METRIC_LABELS: dict[str, tuple[str, int]] = {
    "seconds": ("seconds / edit ↓", 2),
    "psnr_outside_mask": ("PSNR outside mask (dB) ↑", 2),
    "ssim_outside_mask": ("SSIM outside mask ↑", 4),
    "lpips_outside_mask": ("LPIPS outside mask ↓", 4),
    "clip_score": ("CLIP score ↑", 2),
    "pose_part_iou": ("pose part IoU ↑", 3),
    "domain_score": ("photo's out-of-domain score ↓ (the bundle's)", 2),
}
GRID_ROW_HEIGHT = 256  # grid rows are at most this tall (pixels); smaller photos keep their height


def _cell(values: list[str], decimals: int) -> str:
    numbers = [float(v) for v in values if v != ""]
    numbers = [v for v in numbers if not math.isnan(v)]
    finite = [v for v in numbers if math.isfinite(v)]
    infinite = len(numbers) - len(finite)
    if not numbers:
        return "–"
    if not finite:
        return f"∞ (n={infinite})"
    text = f"{statistics.fmean(finite):.{decimals}f}"
    if len(finite) > 1:
        text += f" ± {statistics.stdev(finite):.{decimals}f}"
    text += f" (n={len(finite)}"
    return text + (f"; {infinite} more ∞)" if infinite else ")")


def method_order(rows: Sequence[Mapping[str, str]], labels: Sequence[str]) -> list[str]:
    """The methods of the rows: those of this run in its order, then any others the folder holds, by name."""
    present = {row["method"] for row in rows}
    return [m for m in labels if m in present] + sorted(present - set(labels))


def _fid_kid(
    out: Path, images_dir: Path, rows: Sequence[Mapping[str, str]], methods: Sequence[str], inception: Any, device: torch.device
) -> dict[str, tuple[str, str]]:
    """Per method: FID and KID (mean ± std) between its result files and the distinct photos of the rows."""
    from ficekit.eval.metrics import InceptionFeatures, fid_from_features, kid_from_features

    features = InceptionFeatures(inception, device=device)
    photos = sorted({row["image"] for row in rows})
    photo_features = features(read_image(images_dir / p)[None] for p in photos)
    scores = {}
    for method in methods:
        paths = [result_path(out, "results", method, Job(r["image"], r["text"])) for r in rows if r["method"] == method]
        paths = [p for p in paths if p.is_file()]
        if len(paths) < 2 or len(photos) < 2:
            scores[method] = ("– (needs ≥ 2 images)", "–")
            continue
        result_features = features(read_image(p)[None] for p in paths)
        fid = fid_from_features(result_features, photo_features)
        m = min(1000, len(paths), len(photos))
        kid_mean, kid_std = kid_from_features(result_features, photo_features, subsets=100, subset_size=m, seed=0)
        scores[method] = (f"{fid:.2f} (n={len(paths)})", f"{kid_mean:.4f} ± {kid_std:.4f}")
    return scores


def summary_text(
    rows: Sequence[Mapping[str, str]],
    methods: Sequence[str],
    columns: Sequence[str],
    settings: Mapping[str, Any],
    fid_kid: Mapping[str, tuple[str, str]] | None,
) -> str:
    """The Markdown of summary.md: the settings line, the metric x method table, and what its cells mean."""
    lines = ["# ficekit evaluation", ""]
    lines.append(", ".join(f"{k}: {v}" for k, v in settings.items()) + ".")
    lines.append("")
    lines.append("| metric | " + " | ".join(methods) + " |")
    lines.append("|---|" + "---|" * len(methods))
    by_method = {m: [r for r in rows if r["method"] == m] for m in methods}
    lines.append("| edits | " + " | ".join(str(len(by_method[m])) for m in methods) + " |")
    for column in columns[len(KEY_COLUMNS) :]:
        label, decimals = METRIC_LABELS[column]
        cells = [_cell([r[column] for r in by_method[m]], decimals) for m in methods]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if fid_kid is not None:
        lines.append("| FID vs photos ↓ | " + " | ".join(fid_kid[m][0] for m in methods) + " |")
        lines.append("| KID vs photos ↓ | " + " | ".join(fid_kid[m][1] for m in methods) + " |")
    lines += [
        "",
        "Mean ± sample std over the edits (n). Outside mask = the pixels a method must keep (its blend mask is 0);",
        "∞ PSNR = those pixels are unchanged, counted apart from the mean; – = nothing to measure.",
        "CLIP score = 100 · max(cos(CLIP(result), CLIP(text)), 0), the same judge CLIP for every method.",
    ]
    if fid_kid is not None:
        lines.append("FID / KID: each method's results against the distinct photos (biased at small n).")
    lines += ["", "grids/<text-slug>.png: one row per image: photo | mask | " + " | ".join(methods) + "."]
    return "\n".join(lines) + "\n"


def _fit_height(image: torch.Tensor, height: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    if h == height:
        return image
    width = max(1, round(w * height / h))
    return F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True)[0]


def write_grids(out: Path, images_dir: Path, rows: Sequence[Mapping[str, str]], methods: Sequence[str]) -> list[Path]:
    """OUT/grids/<text-slug>.png per instruction: one row per image, photo | mask | each method (grey if missing)."""
    written = []
    for text in sorted({r["text"] for r in rows}, key=text_slug):
        jobs = sorted({Job(r["image"], text) for r in rows if r["text"] == text})
        photos = [read_image(images_dir / job.image) for job in jobs]
        height = min(GRID_ROW_HEIGHT, max(p.shape[-2] for p in photos))
        strips = []
        for job, photo in zip(jobs, photos, strict=True):
            masks = [result_path(out, "masks", m, job) for m in methods]
            mask_path = next((p for p in masks if p.is_file()), None)
            tiles = [photo, read_image(mask_path) if mask_path else None]
            for m in methods:
                path = result_path(out, "results", m, job)
                tiles.append(read_image(path) if path.is_file() else None)
            tiles = [t if t is not None else torch.full_like(photo, 0.8) for t in tiles]
            strips.append(comparison_grid([_fit_height(t, height) for t in tiles]))
        width = max(s.shape[-1] for s in strips)
        padded = []
        for strip in strips:
            padded += [F.pad(strip, (0, width - strip.shape[-1]), value=1.0), torch.ones(3, 4, width)]
        path = out / "grids" / f"{text_slug(text)}.png"
        replace_png(torch.cat(padded[:-1], dim=1), path)
        written.append(path)
    return written


def write_report(
    out: Path,
    images_dir: Path,
    rows: Sequence[Mapping[str, str]],
    labels: Sequence[str],
    columns: Sequence[str],
    settings: Mapping[str, Any],
    inception: Any,
    device: torch.device,
) -> Path:
    """Write summary.md (with FID/KID when `inception` weights are given) and the grids of the rows; `labels`:
    this run's methods, in their order. Returns the path of summary.md."""
    order = method_order(rows, labels)
    fid_kid = _fid_kid(out, images_dir, rows, order, inception, device) if inception is not None else None
    summary = out / "summary.md"
    text = summary_text(rows, order, columns, settings, fid_kid)
    atomic_write(summary, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    write_grids(out, images_dir, rows, order)
    return summary
