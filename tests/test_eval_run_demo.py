"""The evaluation runner end to end on the shipped demo bundle, FICE vs a tiny random diffusion inpainter."""

import csv
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("diffusers", reason="the inpainting baseline needs diffusers (ficekit[diffusion])")

from ficekit.bundle import load_bundle  # noqa: E402
from ficekit.eval.run import run_evaluation  # noqa: E402
from tests.tiny_diffusion import save_tiny_inpainting_pipeline  # noqa: E402

TEXTS = ["striped cotton shirt", "red t-shirt"]


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_fice_and_inpaint_on_the_demo_bundle_with_resume(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    images = tmp_path / "images"
    images.mkdir()
    for path in load_bundle("demo").example_images[:2]:
        shutil.copy(path, images / Path(path).name)
    model = save_tiny_inpainting_pipeline(tmp_path / "sd")
    out = tmp_path / "eval"
    kwargs = dict(bundle="demo", inpaint_model=str(model), iterations=2, seed=0, device="cpu", progress=False)
    summary = run_evaluation(images, TEXTS, ["fice", "inpaint"], out, **kwargs)

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 2 * len(TEXTS) * 2
    assert {r["method"] for r in rows} == {"fice", "inpaint"}
    for row in rows:
        assert float(row["seconds"]) > 0
        assert 0 <= float(row["clip_score"]) <= 100
        assert 0 <= float(row["pose_part_iou"]) <= 1
        assert 0 <= float(row["domain_score"]) <= load_bundle("demo").domain.high  # in-domain renders, recorded
    table = summary.read_text()
    assert "| metric | fice | inpaint |" in table and "PSNR outside mask (dB)" in table
    assert len(list((out / "grids").glob("*.png"))) == len(TEXTS)
    assert len(list((out / "results").rglob("*.png"))) == len(rows)

    # A finished run resumes without editing anything and leaves every file as it was.
    before = _snapshot(out)

    def no_edit(*args, **kw):
        raise AssertionError("a finished run edited again")

    monkeypatch.setattr("ficekit.pipeline.FicePipeline.edit", no_edit)
    monkeypatch.setattr("ficekit.baselines.inpaint.InpaintBaseline.inpaint_result", no_edit)
    run_evaluation(images, TEXTS, ["fice", "inpaint"], out, **kwargs)
    assert _snapshot(out) == before


def test_quiet_silences_the_diffusion_libraries_loading_bars(tmp_path):
    from diffusers.utils import logging as diffusers_logging

    from ficekit.eval.run import main

    diffusers_logging.enable_progress_bar()
    try:
        code = main(["--images", str(tmp_path / "none"), "--texts", "red t-shirt", "--out", str(tmp_path / "o"), "--quiet"])
        assert code == 2  # no images there: refused, but the libraries were quietened first
        assert not diffusers_logging.is_progress_bar_enabled()
    finally:
        diffusers_logging.enable_progress_bar()
        diffusers_logging.set_verbosity_warning()
