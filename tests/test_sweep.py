"""python -m ficekit.eval.sweep: its statistics on hand-checkable data, and the sweep end to end at tiny n."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ficekit.eval import sweep
from ficekit.eval.jobs import EvalError
from ficekit.eval.judges import PatternJudge
from ficekit.eval.sweep import (
    KEY_COLUMNS,
    SYNTHETIC_METRICS,
    Interval,
    SweepError,
    SweepSpec,
    bootstrap_ci,
    main,
    merge_rows,
    paired_sign_flip_test,
    parse_regularizers,
    parse_weights,
    plot_tradeoff,
    run_sweep,
)
from ficekit.pipeline import FicePipeline
from ficekit.regularizers import REGULARIZERS, LatentRegularizer, register_regularizer

DEMO = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------
# Statistics on data whose answer is known by hand.


def test_bootstrap_ci_of_constant_and_two_point_data() -> None:
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)
    # Means of resampled [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5 % and 97.5 %
    # quantiles are 0 and 1.
    assert bootstrap_ci([0.0, 1.0], resamples=4000) == (0.5, 0.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([0.0, 1.0, math.nan], resamples=4000) == (0.5, 0.0, 1.0)  # NaN = not measured


def test_bootstrap_ci_quantiles_of_a_binomial_mean() -> None:
    # Resampled means of [0, 0, 0, 1] are k/4, k ~ Binomial(4, 1/4): P(k = 0) = 0.32 > 2.5 %, so the low end
    # is 0; P(k >= 3) = 5.1 % > 2.5 % > P(k = 4) = 0.4 %, so the high end is 3/4.
    mean, low, high = bootstrap_ci([0.0, 0.0, 0.0, 1.0], resamples=20000, seed=1)
    assert (mean, low, high) == (0.25, 0.0, 0.75)
    assert bootstrap_ci([0.0, 0.0, 0.0, 1.0], seed=5) == bootstrap_ci([0.0, 0.0, 0.0, 1.0], seed=5)  # seeded


def test_paired_sign_flip_test_exact_p_values() -> None:
    # Four cases all +1: of the 16 sign patterns only all-plus and all-minus reach |mean| 1 -> p = 2/16.
    assert paired_sign_flip_test([1, 1, 1, 1], [0, 0, 0, 0]) == (1.0, 0.125)
    # Differences 1, 2, 3: the 8 signed sums are ±6, ±4, ±2, 0, 0; |sum| >= 6 for 2 of 8 -> p = 0.25.
    assert paired_sign_flip_test([2, 3, 4], [1, 1, 1]) == (2.0, 0.25)
    assert paired_sign_flip_test([1, 2], [1, 2]) == (0.0, 1.0)
    assert paired_sign_flip_test([1, math.nan, 1], [0, 0, 0]) == (1.0, 0.5)  # the NaN pair is left out
    with pytest.raises(ValueError, match="same length"):
        paired_sign_flip_test([1, 2], [1])


def test_paired_sign_flip_test_samples_large_n() -> None:
    # 20 cases all +1: the exact p is 2 / 2**20; sampled, it is (1 + hits) / (1 + resamples) with few hits.
    diff, p = paired_sign_flip_test(np.ones(20), np.zeros(20), resamples=5000, seed=0)
    assert diff == 1.0 and 1 / 5001 <= p < 1e-3
    alternating = np.tile([1.0, -1.0], 10)  # mean difference 0: every pattern is at least as extreme
    assert paired_sign_flip_test(alternating, np.zeros(20), resamples=500)[1] == 1.0


# ---------------------------------------------------------------------------------------------------
# Options.


def test_parse_options() -> None:
    assert parse_regularizers("w_delta, none,w_delta") == ("w_delta", "none")
    assert parse_weights("0.1,1,10,1") == (0.1, 1.0, 10.0)
    assert sweep.weight_label(10.0) == "10" and sweep.weight_label(0.1) == "0.1"
    for bad, match in (("", "empty"), ("w_delta,nope", "unknown regularizer")):
        with pytest.raises(SweepError, match=match):
            parse_regularizers(bad)
    for bad, match in ((",", "empty"), ("1,-0.5", ">= 0"), ("nan", ">= 0"), ("x", "not a number")):
        with pytest.raises(SweepError, match=match):
            parse_weights(bad)
    with pytest.raises(SweepError, match="iterations"):
        SweepSpec(("w_delta",), (1.0,), iterations=0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--regularizers", "w_delta,nope", "--weights", "1"], "unknown regularizer"),
        (["--regularizers", "w_delta", "--weights", "1,-2"], ">= 0"),
        (["--regularizers", ",", "--weights", "1"], "empty"),
        (["--regularizers", "w_delta", "--weights", ""], "empty"),
        (["--regularizers", "w_delta", "--weights", "1", "--images", "."], "--texts"),
        (["--regularizers", "w_delta", "--weights", "1", "--iterations", "0"], "iterations"),
        (["--regularizers", "w_delta", "--weights", "1", "--import", "no_such_module_xyz"], "--import"),
    ],
)
def test_cli_rejects_bad_options_before_loading_models(args, message, tmp_path, monkeypatch, capsys) -> None:
    def no_models(*a: object, **k: object) -> None:
        raise AssertionError("a model was loaded for a bad option")

    monkeypatch.setattr(FicePipeline, "from_bundle", no_models)
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ficekit.eval.sweep: error:") and message in err


def test_cli_import_registers_a_users_regularizer(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "my_regs.py").write_text(
        "from ficekit.regularizers import NoRegularizer, register_regularizer\n"
        "register_regularizer('my_reg', lambda G=None: NoRegularizer(), overwrite=True)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(FicePipeline, "from_bundle", lambda *a, **k: pytest.fail("a model was loaded"))
    try:
        argv = ["--import", "my_regs", "--regularizers", "my_reg", "--weights", "-1", "--out", str(tmp_path / "o")]
        assert main(argv) == 2
        assert "unknown regularizer" not in capsys.readouterr().err and "my_reg" in REGULARIZERS
    finally:
        REGULARIZERS.pop("my_reg", None)


# ---------------------------------------------------------------------------------------------------
# Output files.


def test_rank_files_merge_into_sorted_results(tmp_path) -> None:
    columns = [*KEY_COLUMNS, "seconds"]
    for rank, rows in ((0, [["b", "t", "none", "1", "2"]]), (1, [["a", "t", "none", "1", "3"]])):
        sweep.append_row(tmp_path / f"results.rank{rank}.csv", columns, dict(zip(columns, rows[0], strict=True)))
    rows = merge_rows(tmp_path, columns)
    assert [r["case"] for r in rows] == ["a", "b"] and not list(tmp_path.glob("results.rank*.csv"))
    with open(tmp_path / "results.csv", newline="") as f:
        assert list(csv.reader(f)) == [columns, ["a", "t", "none", "1", "3"], ["b", "t", "none", "1", "2"]]


def test_tradeoff_plot_is_optional(tmp_path, monkeypatch, caplog) -> None:
    summary = {("w_delta", "1"): {"x": Interval(2, 1.0, 0.5, 1.5), "y": Interval(2, 0.5, 0.0, 1.0)}}
    assert plot_tradeoff(summary, ["w_delta"], "x", "y", tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes().startswith(PNG_SIGNATURE)
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if not installed
    assert not plot_tradeoff(summary, ["w_delta"], "x", "y", tmp_path / "b.png")
    assert not (tmp_path / "b.png").exists() and "ficekit[plot]" in caplog.text


# ---------------------------------------------------------------------------------------------------
# End to end on the demo bundle at tiny n.


class CountingL1(LatentRegularizer):
    """A user's own regulariser: Σ_n mean |ws|, counting its calls to prove the sweep optimised with it."""

    name = "test_l1"
    calls = 0

    def penalty(self, ws: torch.Tensor) -> torch.Tensor:
        CountingL1.calls += 1
        return ws.abs().mean((1, 2)).sum()


@pytest.fixture(scope="module")
def pipe() -> FicePipeline:
    pipeline = FicePipeline.from_bundle(DEMO, device="cpu")
    edits = []
    original = pipeline.edit
    pipeline.edit = lambda *a, **k: edits.append(k.get("regularizer")) or original(*a, **k)  # type: ignore[method-assign]
    pipeline.edits = edits  # type: ignore[attr-defined]
    return pipeline


@pytest.fixture(scope="module")
def synthetic_run(pipe, tmp_path_factory):
    """One synthetic sweep: 2 cases x (w_delta, a registered user regulariser) x weights (0.5, 2), 1 step."""
    cache = tmp_path_factory.mktemp("judge-cache")
    world = pipe.bundle.provenance["world"]  # the sweep renders the bundle's own world and judges it
    judge = PatternJudge.train(pipe.resolution, n_train=100, n_val=20, steps=5, progress=False, world=world)
    judge.save(PatternJudge.cache_path(pipe.resolution, cache, world))
    register_regularizer("test_l1", lambda G=None: CountingL1())
    try:
        out = tmp_path_factory.mktemp("sweep-synthetic")
        spec = SweepSpec(("w_delta", "test_l1"), (0.5, 2.0), iterations=1, seed=0)
        start = len(pipe.edits)
        run_sweep(spec, out, bundle=DEMO, n=2, judge_cache=cache, progress=False, pipeline=pipe)
        yield out, spec, cache, pipe.edits[start:]
    finally:
        REGULARIZERS.pop("test_l1", None)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_synthetic_sweep_writes_rows_summary_and_plot(synthetic_run) -> None:
    out, _, _, edits = synthetic_run
    columns, rows = read_csv(out / "results.csv")
    assert columns == [*KEY_COLUMNS, *SYNTHETIC_METRICS]
    assert len(rows) == 2 * 2 * 2 and len(edits) == 8
    assert {(r["regularizer"], r["weight"]) for r in rows} == {(g, w) for g in ("w_delta", "test_l1") for w in ("0.5", "2")}
    for row in rows:
        assert float(row["edit_success"]) == (float(row["colour_success"]) + float(row["pattern_success"])) / 2
        assert 0 < float(row["generated_psnr_outside_mask_db"]) <= 100 and float(row["w_distance_init"]) > 0
        assert float(row["w_mahalanobis"]) > 0 and float(row["seconds"]) > 0

    text = (out / "summary.md").read_text()
    assert "| regularizer | weight | n | edit_success (95 % CI) |" in text
    for reg in ("w_delta", "test_l1"):
        for weight in ("0.5", "2"):
            assert f"| {reg} | {weight} | 2 | " in text
    assert "sign-flip permutation test" in text
    assert "| 0.5 | edit_success | w_delta | test_l1 | 2 |" in text and "| 2 | generated_psnr_outside_mask_db |" in text

    columns, summary = read_csv(out / "summary.csv")
    assert columns == ["regularizer", "weight", "metric", "n", "mean", "ci_low", "ci_high"]
    assert len(summary) == 4 * len(SYNTHETIC_METRICS)
    for row in summary:
        assert float(row["ci_low"]) - 1e-9 <= float(row["mean"]) <= float(row["ci_high"]) + 1e-9
    assert (out / "tradeoff.png").read_bytes().startswith(PNG_SIGNATURE)


def test_a_registered_regularizer_takes_part_like_the_built_in_ones(synthetic_run) -> None:
    _, _, _, edits = synthetic_run
    assert edits.count("test_l1") == 4 and CountingL1.calls >= 4  # its term was in every one of its edits


def test_rerun_resumes_without_editing_and_refuses_other_settings(synthetic_run, pipe) -> None:
    out, spec, cache, _ = synthetic_run
    before = (out / "results.csv").read_bytes()
    start = len(pipe.edits)
    run_sweep(spec, out, bundle=DEMO, n=2, judge_cache=cache, progress=False, pipeline=pipe)
    assert len(pipe.edits) == start and (out / "results.csv").read_bytes() == before
    other = SweepSpec(spec.regularizers, spec.weights, iterations=2)
    with pytest.raises(EvalError, match="iterations=1, this run has iterations=2"):
        run_sweep(other, out, bundle=DEMO, n=2, judge_cache=cache, progress=False, pipeline=pipe)


def test_photo_sweep_through_the_command_line(pipe, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(FicePipeline, "from_bundle", classmethod(lambda cls, *a, **k: pipe))  # load once per module
    texts = tmp_path / "texts.txt"
    texts.write_text("red striped t-shirt\n")
    out = tmp_path / "out"
    args = ["--regularizers", "l2_init,none", "--weights", "0.5,2", "--images", str(DEMO / "examples"),
            "--texts", str(texts), "--iterations", "1", "--device", "cpu", "--out", str(out), "--quiet"]  # fmt: skip
    start = len(pipe.edits)
    assert main(args) == 0
    assert capsys.readouterr().out == ""  # --quiet
    assert pipe.edits[start:].count("none") == 2  # 'none' ignores its weight: one edit per photo
    columns, rows = read_csv(out / "results.csv")
    assert columns == [*KEY_COLUMNS, "psnr_outside_mask", "ssim_outside_mask", "clip_score", "pose_part_iou",
                       "generated_psnr_outside_mask", "w_distance_init", "w_mahalanobis", "seconds"]  # fmt: skip
    assert len(rows) == 2 * 1 * 2 * 2
    for row in rows:
        assert 0 <= float(row["clip_score"]) <= 100 and float(row["psnr_outside_mask"]) <= 100
    none = [{k: v for k, v in r.items() if k != "weight"} for r in rows if r["regularizer"] == "none"]
    assert none[0] == none[1] or none[0] == none[2]  # the same edit recorded at both weights
    text = (out / "summary.md").read_text()
    assert "| l2_init | 0.5 | 2 | " in text and "clip_score (95 % CI)" in text and "| 2 | clip_score | l2_init | none | 2 |" in text
    assert (out / "tradeoff.png").read_bytes().startswith(PNG_SIGNATURE)
