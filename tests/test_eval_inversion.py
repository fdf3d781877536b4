"""python -m ficekit.eval.inversion: end to end on the demo bundle, its report, figure and option checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ficekit.eval import inversion as bench
from ficekit.synthetic.render import render

DEMO = str(Path(__file__).resolve().parents[1] / "checkpoints" / "demo")


def test_benchmark_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    out, figure = tmp_path / "inv.json", tmp_path / "fig.png"
    args = ["--n", "2", "--seed", "3", "--bundle", DEMO, "--steps-optimize", "3", "--steps-pti", "2"]
    assert bench.main(args + ["--json", str(out), "--figure", str(figure), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert list(report["methods"]) == ["e4e", "optimize", "pti"]
    assert report["steps"] == {"e4e": 0, "optimize": 3, "pti": 2} and report["n"] == 2
    for row in report["methods"].values():
        assert set(row) == {"psnr_db", "garment_psnr_db", "ssim", "lpips", "seconds", "cpu_seconds", "locality_psnr_db"}
        assert 5 < row["psnr_db"] < 60 and row["garment_psnr_db"] is not None and 0 < row["ssim"] <= 1
        assert row["lpips"] is None and row["seconds"] > 0  # no LPIPS backbone given
    assert report["losses"]["optimize"] == ["mse"] and report["lpips_backbone"] is None
    # Only a tuned generator can differ from the original. Two Adam steps at PTI's lr move every weight by about
    # 2 lr at once (Adam's first steps are sign steps), which costs ~20 dB on this bundle: the copy differs from G
    # (finite PSNR) yet still draws G's images (far above the ~12 dB of two unrelated samples of G).
    assert (
        report["methods"]["e4e"]["locality_psnr_db"] is None
        and report["methods"]["optimize"]["locality_psnr_db"] is None
    )
    assert 15 < report["methods"]["pti"]["locality_psnr_db"] < 100
    assert [case["seed"] for case in report["cases"]] == bench.held_out_photos(2, 64, 3)[0]
    assert report["world"] == "v2"  # the photos are renders of the bundle's own world
    # The summary is the mean of the cases.
    cases = [case["scores"]["pti"]["psnr_db"] for case in report["cases"]]
    assert report["methods"]["pti"]["psnr_db"] == pytest.approx(np.mean(cases))
    table = capsys.readouterr().out
    assert table.startswith("| method |") and "| pti | 2 |" in table
    width, height = Image.open(figure).size
    assert (width, height) == (4 * 64 * bench.FIGURE_SCALE, 2 * 64 * bench.FIGURE_SCALE + 18)  # photo + 3 methods


def test_benchmark_one_method(tmp_path: Path) -> None:
    out = tmp_path / "inv.json"
    assert bench.main(["--n", "1", "--bundle", DEMO, "--methods", "e4e", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert list(report["methods"]) == ["e4e"] and report["pivot"] is None


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--methods", "e4e,sgd"], "--methods"),
        (["--methods", "pti,pti"], "twice"),
        (["--n", "0"], "--n"),
        (["--steps-pti", "-1"], "--steps-pti"),
        (["--pivot", "pti"], "--pivot"),
        (["--figure", "out.jpg"], "--figure"),
        (["--lpips-backbone", "/no/such/alexnet.pth"], "--lpips-backbone"),
    ],
)
def test_bad_options_fail_before_loading(
    option: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_models(*args: object, **kwargs: object) -> None:
        raise AssertionError("models were loaded despite a bad option")

    monkeypatch.setattr(bench, "run_benchmark", no_models)
    assert bench.main(option + ["--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ficekit.eval.inversion: error:") and message in err and "\n" not in err
    assert not (tmp_path / "x.json").exists()


def test_garment_mask_is_the_union_of_garment_labels() -> None:
    sample = render(5, size=64)
    mask = bench._garment_mask(sample).numpy()
    labels = [sample.mask(name) for name in bench.GARMENT_LABELS]
    assert mask.any() and np.array_equal(mask, np.logical_or.reduce(labels))
    assert not (mask & sample.mask("head")).any()


def test_lpips_net_of(tmp_path: Path) -> None:
    assert bench.lpips_net_of(Path("weights/vgg16-397923af.pth")) == "vgg"
    (tmp_path / "squeezenet1_1-b8a52dc0.pth").write_bytes(b"")
    assert bench.lpips_net_of(tmp_path) == "squeeze"
    assert bench.lpips_net_of(Path("mine.pth")) == "alex"
