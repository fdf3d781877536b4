"""Pool synthetic-benchmark reports of several seeds into one, and break success down by the target garment.

`python -m ficekit.eval.synthetic` runs one seed per process, so two seeds run on two cores at once; this
module joins their JSON reports (same bundle, configurations, world and iterations; different seeds) into one
report over all cases, with every rate's bootstrap interval recomputed over the pooled cases, and tabulates
success per target pattern and per target sleeve (the issue's "report per pattern and per sleeve").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ficekit.eval.synthetic import RATES, summarize

# Report fields that must agree for reports to be pooled (different values = different experiments).
MUST_AGREE = ("bundle", "world", "iterations", "inversion_steps", "resolution", "psnr_cap_db")
BREAKDOWNS = ("pattern", "sleeve", "kind")  # target fields a breakdown can group by


class PoolError(ValueError):
    """The reports cannot be pooled: they disagree on the experiment, repeat a seed, or lack cases."""


def pool_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report over the cases of `reports` (seeds differ; everything in MUST_AGREE and the configurations
    agree); per-configuration means and 95 % bootstrap intervals are recomputed over the pooled cases."""
    if len(reports) < 2:
        raise PoolError(f"pooling needs at least two reports, got {len(reports)}")
    first = reports[0]
    for i, report in enumerate(reports[1:], start=1):
        for key in MUST_AGREE:
            if report.get(key) != first.get(key):
                raise PoolError(f"report {i} has {key}={report.get(key)!r}, report 0 has {first.get(key)!r}")
        if list(report.get("configs", {})) != list(first.get("configs", {})):
            raise PoolError(f"report {i} has configurations {list(report['configs'])}, report 0 {list(first['configs'])}")
    seeds = [r.get("seed") for r in reports]
    if len(set(seeds)) != len(seeds):
        raise PoolError(f"the reports repeat a seed: {seeds}")
    cases = [case for r in reports for case in r.get("cases", [])]
    if not cases:
        raise PoolError("the reports hold no cases")
    configs = {}
    for name, row in first["configs"].items():
        rows = [_scores(case, name) for case in cases]
        configs[name] = {"settings": row.get("settings"), **summarize(rows, seed=0)}
    pooled = {key: first.get(key) for key in MUST_AGREE}
    pooled.update({
        "seeds": seeds,
        "n": sum(r.get("n", 0) for r in reports),
        "sleeve_cases": sum(r.get("sleeve_cases", 0) for r in reports),
        "type_cases": sum(r.get("type_cases", 0) for r in reports),
        "type_cases_skipped": first.get("type_cases_skipped"),
        "ci_level": first.get("ci_level"),
        "configs": configs,
        "skipped": {k: v for r in reports for k, v in r.get("skipped", {}).items()},
        "cases": cases,
    })  # fmt: skip
    return pooled


def _scores(case: dict[str, Any], config: str) -> dict[str, float]:
    """A case's scores under `config`, None (JSON's NaN) back to NaN so that summarize skips it."""
    scores = case["scores"][config]
    return {k: (math.nan if v is None else float(v)) for k, v in scores.items()}


def breakdown(report: dict[str, Any], by: str, config: str) -> dict[str, dict[str, Any]]:
    """Success rates of `config` per value of the target's `by` field (BREAKDOWNS), in first-seen order:
    {value: {'cases': count, <rate>: mean or None, ...}}. Needs cases recorded with their target."""
    if by not in BREAKDOWNS:
        raise ValueError(f"by: expected one of {BREAKDOWNS}, got {by!r}")
    if config not in report.get("configs", {}):
        raise ValueError(f"config: {config!r} is not in the report ({list(report.get('configs', {}))})")
    groups: dict[str, list[dict[str, float]]] = {}
    for case in report["cases"]:
        target = case.get("target")
        if target is None:
            raise ValueError("the report's cases carry no target (made before targets were recorded); rerun it")
        groups.setdefault(str(target.get(by)), []).append(_scores(case, config))
    table = {}
    for value, rows in groups.items():
        entry: dict[str, Any] = {"cases": len(rows)}
        for rate in RATES:
            values = [r[rate] for r in rows if rate in r and not math.isnan(r[rate])]
            entry[rate] = sum(values) / len(values) if values else None
            entry[f"{rate}_n"] = len(values)
        table[value] = entry
    return table


def format_breakdown(table: dict[str, dict[str, Any]], by: str) -> str:
    """A breakdown as a Markdown table: passes / judged cases per rate ('7 / 9'), '–' where none was judged."""
    lines = [f"| target {by} | cases | " + " | ".join(r.replace("_", " ") for r in RATES) + " |",
             "|" + "---|" * (2 + len(RATES))]  # fmt: skip
    for value, entry in table.items():
        cells = []
        for rate in RATES:
            n = entry[f"{rate}_n"]
            cells.append("–" if not n else f"{round(entry[rate] * n)} / {n}")
        lines.append(f"| {value} | {entry['cases']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
