"""python -m ficekit.edit: outputs, report, no overwriting, and clear errors with exit code 2."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ficekit.edit import main, parse_weights
from ficekit.random_bundle import write_random_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("b") / "tiny"
    write_random_bundle(folder, preset="tiny", seed=0)
    return folder


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "me.jpg"
    Image.fromarray((np.random.default_rng(0).random((60, 44, 3)) * 255).astype("uint8")).save(path)
    return path


def test_writes_result_grid_masks_and_report(bundle_dir, photo, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--text", "striped cotton shirt", "--bundle", str(bundle_dir), "--image", str(photo),
            "--iterations", "2", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert capsys.readouterr().out == ""  # --quiet
    names = sorted(p.name for p in out.iterdir())
    assert names == ["me_grid.png", "me_mask_blend.png", "me_mask_edit.png", "me_mask_keep.png", "me_result.png",
                     "report.json"]
    assert Image.open(out / "me_result.png").size == (44, 60)  # the photo's own size
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["iterations"] == 2 and report["bundle"]["root"] == str(bundle_dir)
    assert len(report["loss_history"]["total"]) == 3 and "optimize" in report["timings_seconds"]
    # A second run never overwrites: new names beside the old files.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(args) == 0
    assert {"me_result-1.png", "report-1.json"} <= {p.name for p in out.iterdir()}
    assert all((out / n).read_bytes() == b for n, b in before.items())
    assert photo.exists()


def test_default_image_is_the_bundles_example(bundle_dir, tmp_path):
    assert main(["--text", "red dress", "--bundle", str(bundle_dir), "--iterations", "1",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert (tmp_path / "o" / "person_result.png").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--text", "  "], "--text is empty"),
        (["--text", "shirt", "--image", "/no/such.jpg"], "image not found"),
        (["--text", "shirt", "--bundle", "nosuch"], "unknown bundle"),
        (["--text", "shirt", "--iterations", "0"], "iterations must be >= 1"),
        (["--text", "shirt", "--lr", "-1"], "lr must be > 0"),
        (["--text", "shirt", "--weights", "clip=x"], "non-numeric"),
        (["--text", "shirt", "--weights", "nonsense=1"], "unknown term"),
        (["--text", "shirt", "--regularizer", "l2"], "regularizer must be one of"),
        (["--text", "shirt", "--stitch", "glue"], "stitch must be one of"),
        (["--text", "shirt", "--batch-size", "0"], "batch size must be >= 1"),
        (["--text", "shirt", "--clip-augment", "-1"], "clip_augment must be an int >= 0"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(bundle_dir, tmp_path, capsys, extra, message):
    args = ["--bundle", str(bundle_dir), "--out", str(tmp_path / "o"), "--iterations", "1", "--quiet"]
    code = main(args + extra)  # later flags win in argparse
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err and err.startswith("ficekit.edit: error:")


def test_missing_model_file_is_a_clear_error(bundle_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in bundle_dir.iterdir():
        if f.is_file() and f.name != "generator.pt":
            (broken / f.name).write_bytes(f.read_bytes())
    (broken / "examples").mkdir()
    for f in (bundle_dir / "examples").iterdir():
        (broken / "examples" / f.name).write_bytes(f.read_bytes())
    assert main(["--text", "shirt", "--bundle", str(broken), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "generator" in capsys.readouterr().err


def test_unreadable_image_and_module_entry_point(bundle_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not a png")
    proc = subprocess.run(
        [sys.executable, "-m", "ficekit.edit", "--text", "shirt", "--bundle", str(bundle_dir), "--image", str(bad),
         "--quiet"], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "cannot read image" in proc.stderr and "Traceback" not in proc.stderr


def test_parse_weights():
    assert parse_weights("clip=1, img=30,") == {"clip": 1.0, "img": 30.0}
    with pytest.raises(ValueError, match="name=value"):
        parse_weights("clip")
