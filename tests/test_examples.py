"""Every script in examples/ runs end to end at a few iterations (on the demo bundle, or a tiny diffusion model)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, *argv: str) -> None:
    old = sys.argv
    sys.argv = [str(EXAMPLES / script), *argv]
    try:
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    finally:
        sys.argv = old


pytestmark = pytest.mark.usefixtures("one_thread")


def test_edit_photo(tmp_path, capsys):
    _run("edit_photo.py", "--iterations", "2", "--out", str(tmp_path))
    from PIL import Image

    result, mask = Image.open(tmp_path / "result.png"), Image.open(tmp_path / "mask.png")
    assert result.size == mask.size == Image.open(EXAMPLES.parent / "checkpoints/demo/examples/person0.png").size
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["category"] == "upper" and "total" in report["final_losses"]


def test_batch_folder(tmp_path, capsys):
    _run("batch_folder.py", "--iterations", "1", "--out", str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["person0_edited.png", "person1_edited.png"]
    assert "edited 2 photo(s)" in capsys.readouterr().out


def test_custom_regularizer(capsys):
    from ficekit.regularizers import REGULARIZERS

    _run("custom_regularizer.py", "--iterations", "2")
    assert "coarse_together" in REGULARIZERS
    assert "coarse_together:" in capsys.readouterr().out
    del REGULARIZERS["coarse_together"]


def test_compare_inpainting(tmp_path, capsys):
    pytest.importorskip("diffusers")
    from tests.tiny_diffusion import save_tiny_inpainting_pipeline

    model = save_tiny_inpainting_pipeline(tmp_path / "tiny-sd")
    _run("compare_inpainting.py", "--model", str(model), "--iterations", "1", "--steps", "2", "--out", str(tmp_path))
    out = capsys.readouterr().out
    assert "ficekit: PSNR outside the mask" in out and "inpainting: PSNR outside the mask" in out
    assert (tmp_path / "comparison.png").exists()


def test_multi_round_session(tmp_path, capsys):
    _run("multi_round_session.py", "red t-shirt", "add white stripes", "undo", "--iterations", "1",
         "--out", str(tmp_path))
    out = capsys.readouterr().out
    assert "'red t-shirt with white stripes'" in out.replace("\"", "'") or "white stripes" in out
    assert (tmp_path / "report.json").exists()


def test_compare_inversions(tmp_path, capsys):
    _run("compare_inversions.py", "--steps", "2", "--out", str(tmp_path))
    out = capsys.readouterr().out
    assert all(f"{m:9} PSNR" in out for m in ("e4e", "optimize", "pti"))
    assert (tmp_path / "inversions.png").exists()
