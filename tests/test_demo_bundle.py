"""The shipped demo bundle: complete, small, loadable offline, and the README's main command runs on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ficekit.bundle import load_bundle
from ficekit.edit import main as edit_main

DEMO = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"
MAX_BYTES = 30 * 1024 * 1024  # the demo bundle's budget in git


def test_demo_bundle_is_complete_and_within_its_size_budget():
    bundle = load_bundle("demo")  # by name, as the CLI resolves it
    assert bundle.root == DEMO.resolve()
    assert set(bundle.models) >= {"generator", "encoder", "clip", "densepose", "parser", "segmenter"}
    assert all(spec.sha256 for spec in bundle.models.values() if spec.file)
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size <= MAX_BYTES, f"demo bundle is {size / 2**20:.1f} MiB"
    training = bundle.provenance["training"]
    assert all(training[role]["seconds"] > 0 for role in ("generator", "encoder", "clip", "densepose", "parser"))


def test_main_command_edits_the_example_person(tmp_path, capsys):
    torch.set_num_threads(1)
    code = edit_main(["--text", "striped cotton shirt", "--out", str(tmp_path), "--iterations", "3", "--quiet",
                      "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    results = sorted(tmp_path.glob("*_result.png"))
    assert [p.name for p in results] == ["person0_result.png", "person1_result.png"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["instruction"]["attributes"]["patterns"] == ["striped"]  # parsed, not just echoed
    assert report["instruction"]["garment"] == "shirt" and report["categories"] == ["upper", "upper"]
    for result_path, photo_path in zip(results, load_bundle("demo").example_images, strict=True):
        result = np.asarray(Image.open(result_path)).astype(int)
        photo = np.asarray(Image.open(photo_path).convert("RGB")).astype(int)
        blend = np.asarray(Image.open(str(result_path).replace("_result", "_mask_blend")))[:, :, 0]
        assert (blend == 0).any() and (blend == 255).any()
        assert np.array_equal(result[blend == 0], photo[blend == 0])  # outside the mask: the photo, exactly
        assert np.abs(result[blend == 255] - photo[blend == 255]).mean() > 2  # inside: repainted


@pytest.mark.parametrize("field", ["generator", "encoder", "clip"])
def test_demo_models_load_on_the_cpu(field):
    bundle = load_bundle("demo")
    model = bundle.load(field, "cpu")
    assert not any(p.requires_grad for p in model.parameters())


def test_a_real_photo_is_refused_by_the_demo_bundle_and_force_records_it(tmp_path, capsys):
    """The demo bundle only knows its synthetic people: a real portrait is refused in one line (exit 2), with the
    way on; --force edits anyway and records the score and the override."""
    skimage_data = pytest.importorskip("skimage.data")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(photo)
    args = ["--text", "red t-shirt", "--image", str(photo), "--iterations", "1", "--quiet", "--device", "cpu"]
    assert edit_main([*args, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "astronaut.png" in err and "demo" in err
    assert "python -m ficekit.download fice" in err and "--bundle fice" in err
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())
    assert edit_main([*args, "--out", str(tmp_path / "forced"), "--force"]) == 0
    report = json.loads((tmp_path / "forced" / "report.json").read_text())
    assert report["domain"]["override"] is True and report["domain"]["checked"] is False
    assert report["domain"]["scores"][0]["accepted"] is False
