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
    for name in ("edit", "keep", "blend"):  # masks at the photo's size, aligned with it
        assert Image.open(out / f"me_mask_{name}.png").size == (44, 60)
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["iterations"] == 2 and report["bundle"]["root"] == str(bundle_dir)
    assert len(report["loss_history"]["total"]) == 3 and "optimize" in report["timings_seconds"]
    # A second run never overwrites: new names beside the old files.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(args) == 0
    assert {"me_result-1.png", "report-1.json"} <= {p.name for p in out.iterdir()}
    assert all((out / n).read_bytes() == b for n, b in before.items())
    assert photo.exists()


def test_console_lists_every_file_grouped_per_photo(bundle_dir, photo, tmp_path, capsys):
    out = tmp_path / "out"
    second = tmp_path / "you.png"
    Image.open(photo).save(second)
    assert main(["--text", "red shirt", "--bundle", str(bundle_dir), "--image", str(photo), str(second),
                 "--iterations", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for path in out.iterdir():
        assert str(path) in printed
    assert printed.index(f"  {photo}:") < printed.index("me_mask_keep.png") < printed.index(f"  {second}:")


def test_masks_line_up_with_a_non_square_photo(bundle_dir, tmp_path):
    from ficekit import FicePipeline

    photo = tmp_path / "wide.png"
    Image.fromarray((np.random.default_rng(1).random((30, 70, 3)) * 255).astype("uint8")).save(photo)
    out = tmp_path / "o"
    assert main(["--text", "red shirt", "--bundle", str(bundle_dir), "--image", str(photo), "--iterations", "1",
                 "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    written = np.asarray(Image.open(out / "wide_mask_blend.png"))[:, :, 0] / 255
    expected = FicePipeline.from_bundle(bundle_dir, device="cpu").edit_masks(photo, "red shirt")[0][0].numpy()
    np.testing.assert_allclose(written, expected, atol=1 / 255 + 1e-6)


def test_input_dir_skips_unreadable_files_and_exits_1(bundle_dir, photo, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(photo).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"not a png at all")
    out = tmp_path / "o"
    assert main(["--text", "red shirt", "--bundle", str(bundle_dir), "--input-dir", str(folder),
                 "--iterations", "1", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "skipping" in err and "broken.png" in err and "1 file(s) skipped" in err
    assert (out / "good_result.png").exists() and not list(out.glob("broken*"))


@pytest.mark.parametrize("kind", ["file", "devnull"])
def test_unusable_output_folder_fails_before_editing(bundle_dir, photo, tmp_path, capsys, kind):
    target = tmp_path / "taken.txt" if kind == "file" else "/dev/null"
    if kind == "file":
        target.write_text("mine")
    assert main(["--text", "red shirt", "--bundle", str(bundle_dir), "--image", str(photo),
                 "--iterations", "1", "--out", str(target), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and err.count("\n") == 1
    if kind == "file":
        assert target.read_text() == "mine"


def test_write_failure_leaves_no_partial_files(bundle_dir, photo, tmp_path, capsys, monkeypatch):
    import ficekit.outputs

    out = tmp_path / "o"
    calls = []
    real = ficekit.outputs.imageio.png_bytes

    def failing(image):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(image)

    monkeypatch.setattr(ficekit.outputs.imageio, "png_bytes", failing)
    assert main(["--text", "red shirt", "--bundle", str(bundle_dir), "--image", str(photo),
                 "--iterations", "1", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == []


def test_repeated_text_runs_rounds(bundle_dir, photo, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["--text", "red t-shirt", "--text", "add white stripes", "--bundle", str(bundle_dir),
                 "--image", str(photo), "--iterations", "2", "--out", str(out), "--quiet"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"me_round1_result.png", "me_round2_result.png", "me_round2_grid.png", "report.json"} <= names
    report = json.loads((out / "report.json").read_text())
    rounds = report["sessions"][0]["rounds"]
    assert [r["instruction"] for r in rounds] == ["red t-shirt", "add white stripes"]
    assert rounds[1]["warm_start"] and "stripes" in rounds[1]["text"] and "red" in rounds[1]["text"]


def test_interactive_prompt_with_piped_stdin(bundle_dir, photo, tmp_path):
    out = tmp_path / "o"
    proc = subprocess.run(
        [sys.executable, "-m", "ficekit.edit", "--interactive", "--bundle", str(bundle_dir), "--image", str(photo),
         "--iterations", "1", "--out", str(out), "--device", "cpu"],
        input="help\nred t-shirt\nadd white stripes\nhistory\nundo\nstate\nredo\nfoo bar baz\n"
              f"save {tmp_path / 'saved'}\nquit\n",
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "undo / redo" in proc.stdout  # help
    assert "me_round1_result.png" in proc.stdout and "me_round2_result.png" in proc.stdout
    assert "1. 'red t-shirt'" in proc.stdout and "2. 'add white stripes'" in proc.stdout
    assert "foo" in proc.stderr and "Traceback" not in proc.stderr  # an unreadable instruction is a message
    saved = json.loads((tmp_path / "saved" / "report.json").read_text())
    assert len(saved["rounds"]) == 2


def test_ctrl_c_is_one_line_and_exit_130(bundle_dir, photo, tmp_path):
    import signal
    import threading
    import time

    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ficekit.edit", "--text", "red shirt", "--bundle", str(bundle_dir), "--image",
         str(photo), "--iterations", "100000", "--force", "--out", str(out), "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C's default disposition in the child, whatever this test process inherited (a child started with
        # SIGINT ignored keeps ignoring it: Python installs its KeyboardInterrupt handler only over the default).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(64), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "optimising W+" not in "".join(seen):
        time.sleep(0.2)
    time.sleep(1)  # inside the optimisation
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        reader.join(timeout=10)
        pytest.fail("still running 60 s after SIGINT; its stderr ends:\n" + "".join(seen)[-2000:])
    reader.join(timeout=10)
    err = "".join(seen)
    assert proc.returncode == 130, err
    assert "ficekit.edit: interrupted; nothing written" in err and "Traceback" not in err, err[-2000:]
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []


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
        (["--text", "shirt", "--iterations", "0"], "iterations must be between 1 and"),
        (["--text", "shirt", "--iterations", str(10**12)], "--force allows more"),
        (["--text", "shirt", "--lr", "inf"], "lr must be a finite number"),
        (["--text", "shirt", "--lr", "nan"], "lr must be a finite number"),
        (["--text", "shirt", "--weights", ","], "no name=value pairs"),
        (["--text", "shirt", "--weights", "clip=inf"], "must be a finite number"),
        (["--text", "shirt", "--clip-augment", "100000"], "clip_augment must be between 0 and 64"),
        (["--text", "shirt", "--seed", "99999999999999999999999"], "seed must be between 0 and"),
        (["--text", "shirt", "--schedule", "zigzag"], "schedule must be one of"),
        (["--text", "shirt", "--device", "tpu"], "device 'tpu' is not"),
        (["--text", "shirt", "--device", "mps"], "device 'mps' is not supported"),
        (["--text", "shirt", "--lr", "-1"], "lr must be > 0"),
        (["--text", "shirt", "--weights", "clip=x"], "non-numeric"),
        (["--text", "shirt", "--weights", "nonsense=1"], "unknown term 'nonsense'"),
        (["--text", "shirt", "--regularizer", "l2"], "regularizer must be one of"),
        (["--text", "shirt", "--stitch", "glue"], "stitch must be one of"),
        (["--text", "shirt", "--batch-size", "0"], "batch_size must be between 1 and"),
        (["--text", "shirt", "--clip-augment", "-1"], "clip_augment must be between 0 and"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(bundle_dir, tmp_path, capsys, monkeypatch, extra, message):
    import ficekit.pipeline

    def no_models(*a, **k):
        raise AssertionError("a model was loaded before the options were checked")

    if "--image" not in extra and "--bundle" not in extra:
        monkeypatch.setattr(ficekit.pipeline.FicePipeline, "__init__", no_models)
    args = ["--bundle", str(bundle_dir), "--out", str(tmp_path / "o"), "--iterations", "1", "--quiet"]
    code = main(args + extra)  # later flags win in argparse
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err and err.startswith("ficekit.edit: error:")
    assert err.count("\n") == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


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


def test_inversion_choice_is_used_and_recorded(bundle_dir, photo, tmp_path):
    out = tmp_path / "o"
    assert main(["--text", "red shirt", "--bundle", str(bundle_dir), "--image", str(photo), "--iterations", "1",
                 "--inversion", "pti", "--inversion-steps", "2", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["inversion"] == "pti" and report["inversion"]["method"] == "pti"
    assert report["inversion"]["steps"] == 2


def test_start_choice_is_recorded_and_collage_needs_a_gallery(bundle_dir, photo, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["--text", "red shirt", "--bundle", str(bundle_dir), "--image", str(photo), "--iterations", "1",
                 "--start", "inversion", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "report.json").read_text())["settings"]["start"] == "inversion"
    capsys.readouterr()
    assert main(["--text", "red shirt", "--bundle", str(bundle_dir), "--image", str(photo), "--iterations", "1",
                 "--start", "collage", "--out", str(tmp_path / "p"), "--quiet"]) == 2  # the tiny bundle has none
    err = capsys.readouterr().err
    assert "start='collage'" in err and "no gallery with pictures" in err and "Traceback" not in err
