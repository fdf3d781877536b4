"""benchmarks/edit.py: both modes run end to end on a random-weight tiny bundle and write the report they print."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "edit.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_edit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_timed_edit_reports_every_stage(bench, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    out = tmp_path / "edit.json"
    try:
        report = bench.main(["--preset", "tiny", "--iterations", "2", "--device", "cpu", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text()) == report
    assert set(report["seconds_setup"]) == {"perception", "inversion", "stitch"}
    assert all(v >= 0 for v in report["seconds_setup"].values())
    assert report["iterations_timed"] == 2 and report["iterations_per_second"] > 0
    assert set(report["seconds_per_iteration_by_model"]) == set(bench.SPLIT)


def test_compare_reports_speedup_and_agreement(bench, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    out = tmp_path / "compare.json"
    argv = ["--preset", "tiny", "--iterations", "2", "--device", "cpu", "--compare", "--repeats", "1",
            "--variants", "compiled", "--json", str(out)]  # fmt: skip
    try:
        report = bench.main(argv)
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text())["speedup"] == report["speedup"] > 0
    assert report["loss_rel_diff_first10"] < 1e-3 and report["iterations_timed"] == 2


def test_compare_counts_the_steps_an_early_stop_ran(bench, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(bench.VARIANTS, "stop-at-once", {"early_stop": 1, "early_stop_tol": 0.99})
    threads = torch.get_num_threads()
    argv = ["--preset", "tiny", "--iterations", "6", "--device", "cpu", "--compare", "--repeats", "1",
            "--variants", "stop-at-once", "--json", str(tmp_path / "c.json")]  # fmt: skip
    try:
        report = bench.main(argv)
    finally:
        torch.set_num_threads(threads)
    variant = report["variants"]["stop-at-once"]
    assert variant["steps_run"] == 2 < report["steps_timed"] == 7  # a plateau right after the first window pair
    assert report["iterations_per_second_all_runs"]["stop-at-once"][0] == pytest.approx(variant["iterations_per_second"])


def test_profile_kinds_match_event_names(bench) -> None:
    assert bench.profile_kind("aten::convolution_backward") == "convolution"
    assert bench.profile_kind("aten::_slow_conv2d_forward") == "convolution"
    assert bench.profile_kind("aten::mkldnn_convolution") == "convolution"
    assert bench.profile_kind("aten::addmm") == "matmul and attention"
    assert bench.profile_kind("aten::_scaled_dot_product_flash_attention_for_cpu") == "matmul and attention"
    assert bench.profile_kind("## Call CompiledFxGraph fwvkoozw ##") == "compiled graph code"
    assert bench.profile_kind("aten::add") == "other"
    assert bench.profile_kind("aten::copy_") == "other"  # 'c', not a convolution
    assert bench.profile_kind("aten::_convolution") == "convolution"
    assert bench.profile_kind("aten::_convert_indices_from_coo_to_csr") == "other"


def test_compare_profile_splits_each_path_step(bench, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    argv = ["--preset", "tiny", "--iterations", "2", "--device", "cpu", "--compare", "--repeats", "1",
            "--variants", "perception4", "--profile", "3", "--json", str(tmp_path / "p.json")]  # fmt: skip
    try:
        report = bench.main(argv)
    finally:
        torch.set_num_threads(threads)
    assert set(report["profile"]) == {"eager", "perception4"}
    for p in report["profile"].values():
        by_kind = p["ms_by_kind"]
        assert list(by_kind) == [*bench.PROFILE_KINDS, "other"]
        assert p["steps"] == 4 and min(by_kind.values()) >= 0  # 3 iterations: 4 steps (the last one scores)
        assert sum(by_kind.values()) == pytest.approx(p["ms_per_step_traced"])
        assert by_kind["convolution"] > 0  # the tiny generator and DensePose convolve on every eager step
        assert by_kind["compiled graph code"] == 0  # neither path is compiled
        assert 0 < p["ms_per_step_traced"] <= 1.5 * p["ms_per_step"]  # self times add up to at most the wall time


def test_profile_needs_compare(bench) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--preset", "tiny", "--profile", "3"])
