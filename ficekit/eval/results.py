"""The output folder of a dataset evaluation as its record: metrics.csv, its per-rank parts, run.json, PNGs.

A run appends one row per finished edit to metrics.csv (under torchrun, each rank to metrics.rank<R>.csv),
flushed and fsynced, so an interruption loses nothing written: the next run reads the rows back, skips those
edits (resume), and rank 0 finally rewrites metrics.csv as the sorted union and removes the rank files.
run.json keeps the settings the rows were made with, so a folder is never resumed with other ones. Results
and masks live at OUT/<results|masks>/<method>/<job name>.png.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ficekit.checkpoint_io import atomic_write
from ficekit.eval.jobs import EvalError, Job

__all__ = [
    "KEY_COLUMNS",
    "metric_columns",
    "format_value",
    "all_rows",
    "count_rows",
    "append_row",
    "merge_rows",
    "check_run_record",
    "result_path",
]

KEY_COLUMNS = ("image", "text", "method")


def metric_columns(lpips: bool, clip: bool) -> list[str]:
    """The metrics.csv header of a run: keys, seconds, then the metrics it measures."""
    columns = [*KEY_COLUMNS, "seconds", "psnr_outside_mask", "ssim_outside_mask"]
    columns += (["lpips_outside_mask"] if lpips else []) + (["clip_score"] if clip else []) + ["pose_part_iou"]
    return [*columns, "domain_score"]  # the bundle's out-of-domain score of the photo (empty without a record)


def format_value(value: float | None) -> str:
    """A metric's metrics.csv cell: 6 significant digits, empty for None."""
    return "" if value is None else f"{value:.6g}"


RERUN_HINT = "rerun with the same metric flags (--lpips-backbone, --judge-clip) or use another --out"


def _read_rows(path: Path, columns: Sequence[str], hint: str = RERUN_HINT) -> list[dict[str, str]]:
    """The complete rows of a results file (a last line cut off by an interruption is dropped)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    if not text:
        return []
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # the unfinished last row of an interrupted write
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return []
    if header != list(columns):
        raise EvalError(f"{path} has columns {header}, this run writes {list(columns)}; {hint}")
    return [dict(zip(columns, row, strict=True)) for row in reader if len(row) == len(columns)]


def _rank_files(out: Path, name: str = "metrics") -> list[Path]:
    files = [p for p in out.glob(f"{name}.rank*.csv") if re.fullmatch(rf"{re.escape(name)}\.rank\d+\.csv", p.name)]
    return sorted(files, key=lambda p: int(p.name[len(f"{name}.rank") : -len(".csv")]))


def all_rows(
    out: Path, columns: Sequence[str], name: str = "metrics", keys: Sequence[str] = KEY_COLUMNS, hint: str = RERUN_HINT
) -> list[dict[str, str]]:
    """Rows of <name>.csv and every rank file, first occurrence of each key (image, text, method) kept, sorted."""
    rows: dict[tuple[str, ...], dict[str, str]] = {}
    for path in [out / f"{name}.csv", *_rank_files(out, name)]:
        for row in _read_rows(path, columns, hint):
            rows.setdefault(tuple(row[k] for k in keys), row)
    return [rows[key] for key in sorted(rows)]


def count_rows(out: Path) -> int:
    """How many edits metrics.csv and the rank files hold: complete rows, each (image, text, method) once."""
    keys: set[tuple[str, ...]] = set()
    for path in [out / "metrics.csv", *_rank_files(out)]:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        rows = list(csv.reader(io.StringIO(text[: text.rfind("\n") + 1])))  # an interrupted last row is not kept
        keys.update(tuple(row[: len(KEY_COLUMNS)]) for row in rows[1:] if len(row) > len(KEY_COLUMNS))
    return len(keys)


def append_row(path: Path, columns: Sequence[str], row: Mapping[str, str]) -> None:
    """Append one row (header first in a new file), flushed and fsynced so an interruption loses nothing written."""
    new = not path.is_file() or path.stat().st_size == 0
    if not new:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            cut = f.read(1) != b"\n"
    with open(path, "a", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        if new:
            writer.writerow(columns)
        elif cut:
            f.write("\n")  # end an interrupted row, which the reader then ignores
        writer.writerow([row.get(c, "") for c in columns])
        f.flush()
        os.fsync(f.fileno())


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def merge_rows(
    out: Path, columns: Sequence[str], name: str = "metrics", keys: Sequence[str] = KEY_COLUMNS, hint: str = RERUN_HINT
) -> list[dict[str, str]]:
    """Rewrite <name>.csv as the sorted union of itself and the rank files, then remove the rank files."""
    rows = all_rows(out, columns, name, keys, hint)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([row[c] for c in columns] for row in rows)
    _write_text(out / f"{name}.csv", buffer.getvalue())
    for path in _rank_files(out, name):
        path.unlink()
    return rows


def check_run_record(out: Path, record: dict[str, Any], write: bool) -> None:
    """Refuse to resume a folder whose results came from other settings (bundle, iterations, seed, judge, model);
    with `write`, record this run's settings in OUT/run.json."""
    path = out / "run.json"
    stored: dict[str, Any] = {}
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise EvalError(f"{path} is not valid JSON ({e.msg}); remove it or use another --out") from e
    merged = dict(stored)
    for key, value in record.items():
        old = stored.get(key)
        if key in stored and old != value and not (key == "inpaint_model" and (old is None or value is None)):
            raise EvalError(
                f"{out} holds results made with {key}={old!r}, this run has {key}={value!r}; "
                f"use the same settings to resume, or another --out"
            )
        if value is not None or key not in merged:
            merged[key] = value
    if write and merged != stored:
        _write_text(path, json.dumps(merged, indent=2, sort_keys=True) + "\n")


def result_path(out: Path, kind: str, method: str, job: Job) -> Path:
    """Where a method's output of a job lives: kind 'results' (the edited photo) or 'masks' (its blend mask)."""
    return out / kind / method / f"{job.name}.png"
