"""Pooling synthetic-benchmark reports of several seeds (ficekit.eval.pool, `--pool`): rates and intervals over
the pooled cases, breakdowns per target field, refusal of reports that are not the same experiment."""

from __future__ import annotations

import json

import pytest

from ficekit.eval import synthetic
from ficekit.eval.pool import PoolError, breakdown, format_breakdown, pool_reports


def _case(pattern: str, sleeve: str, colour_ok: float, pattern_ok: float, sleeve_ok: float | None = None) -> dict:
    scores = {"colour_success": colour_ok, "pattern_success": pattern_ok, "sleeve_success": sleeve_ok,
              "type_success": None, "psnr_outside_mask_db": 80.0, "head_psnr_db": 90.0, "pose_part_iou": 0.9,
              "seconds_per_edit": 10.0}  # fmt: skip
    return {"seed": 0, "slot": "upper", "kind": "pattern", "text": "t",
            "target": {"kind": "t_shirt", "colour": "red", "pattern": pattern, "sleeve": sleeve},
            "scores": {"auto+feather": scores}}  # fmt: skip


def _report(seed: int, cases: list[dict]) -> dict:
    return {"bundle": "/b", "world": "v2", "iterations": 200, "inversion_steps": None, "resolution": 64,
            "psnr_cap_db": 100.0, "seed": seed, "n": len(cases), "sleeve_cases": 0, "type_cases": 0,
            "configs": {"auto+feather": {"settings": {"mask": "auto"}}}, "skipped": {}, "cases": cases}  # fmt: skip


def test_pooled_rates_are_over_all_cases_and_breakdowns_count_each_target() -> None:
    a = _report(0, [_case("stripes_h", "short", 1.0, 1.0), _case("dots", "long", 1.0, 0.0, 1.0)])
    b = _report(1, [_case("dots", "short", 0.0, 0.0, 0.0), _case("stripes_h", "short", 1.0, 1.0)])
    pooled = pool_reports([a, b])
    row = pooled["configs"]["auto+feather"]
    assert pooled["seeds"] == [0, 1] and pooled["n"] == 4 and len(pooled["cases"]) == 4
    assert row["colour_success"] == pytest.approx(0.75) and row["pattern_success"] == pytest.approx(0.5)
    assert row["sleeve_success"] == pytest.approx(0.5) and row["sleeve_success_n"] == 2
    low, high = row["pattern_success_ci95"]
    assert 0.0 <= low < 0.5 < high <= 1.0
    by_pattern = breakdown(pooled, "pattern", "auto+feather")
    assert list(by_pattern) == ["stripes_h", "dots"]
    assert by_pattern["dots"]["cases"] == 2 and by_pattern["dots"]["pattern_success"] == 0.0
    assert by_pattern["stripes_h"]["colour_success"] == 1.0 and by_pattern["stripes_h"]["sleeve_success"] is None
    text = format_breakdown(breakdown(pooled, "sleeve", "auto+feather"), "sleeve")
    assert "| short | 3 | 2 / 3 | 2 / 3 | 0 / 1 | – |" in text and "| long | 1 | 1 / 1 | 0 / 1 | 1 / 1 | – |" in text


def test_reports_of_different_experiments_or_the_same_seed_are_refused() -> None:
    a = _report(0, [_case("plain", "short", 1.0, 1.0)])
    with pytest.raises(PoolError, match="repeat a seed"):
        pool_reports([a, _report(0, [_case("plain", "short", 1.0, 1.0)])])
    other = {**_report(1, [_case("plain", "short", 1.0, 1.0)]), "iterations": 50}
    with pytest.raises(PoolError, match="iterations=50"):
        pool_reports([a, other])
    with pytest.raises(PoolError, match="at least two"):
        pool_reports([a])
    untargeted = pool_reports([a, _report(1, [_case("plain", "short", 0.0, 1.0)])])
    untargeted["cases"][0].pop("target")
    with pytest.raises(ValueError, match="no target"):
        breakdown(untargeted, "pattern", "auto+feather")


def test_pool_cli_prints_tables_and_writes_json(tmp_path, capsys) -> None:
    paths = []
    for seed in (0, 1):
        path = tmp_path / f"s{seed}.json"
        path.write_text(json.dumps(_report(seed, [_case("checks", "long", 1.0, float(seed))])))
        paths.append(str(path))
    out = tmp_path / "pooled.json"
    assert synthetic.main(["--pool", *paths, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| auto+feather | 100 % [100, 100] | 50 % [0, 100]" in printed and "by target pattern" in printed
    pooled = json.loads(out.read_text())
    assert pooled["breakdowns"]["auto+feather"]["pattern"]["checks"]["pattern_success"] == 0.5
    assert synthetic.main(["--pool", paths[0], paths[0]]) == 2
    assert "repeat a seed" in capsys.readouterr().err
