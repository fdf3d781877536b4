"""python -m ficekit.eval.run: outputs, table, resume, CSV pairs, errors, and torchrun matching one process.

A tiny random bundle edits 2 photos x 2 texts with 'fice' (1 iteration); 'inpaint' is a fake method that
paints its mask grey (the diffusion baseline is tested on its own).
"""

from __future__ import annotations

import csv
import math
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ficekit.eval.jobs import Job, read_jobs, text_slug
from ficekit.eval.methods import METHODS
from ficekit.eval.run import main, run_evaluation

try:
    from ficekit.random_bundle import write_random_bundle
except ImportError:  # before the random bundle writer moved out of ficekit.bundle
    from ficekit.bundle import write_random_bundle

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["red striped shirt", "blue dress"]
COLUMNS = ["image", "text", "method", "seconds", "psnr_outside_mask", "ssim_outside_mask", "clip_score", "pose_part_iou",
           "domain_score"]

FAKE_MODULE = '''
import torch


class GreyInpaint:
    """Paints the middle of the photo grey: the mask is that box, everything else is kept."""

    def __call__(self, image, text, seed):
        h, w = image.shape[-2:]
        mask = torch.zeros(1, h, w)
        mask[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
        return image * (1 - mask) + 0.5 * mask, mask


def inpaint(ctx):
    return GreyInpaint()


class InterruptedSecondEdit(GreyInpaint):
    """Ctrl-C arrives during the second edit (a KeyboardInterrupt, as Python raises for SIGINT)."""

    edits = 0

    def __call__(self, image, text, seed):
        InterruptedSecondEdit.edits += 1
        if InterruptedSecondEdit.edits == 2:
            raise KeyboardInterrupt
        return super().__call__(image, text, seed)


def interrupted(ctx):
    return InterruptedSecondEdit()
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evalrun")
    write_random_bundle(root / "tiny", "tiny", seed=0)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 30, 3)) * 255).astype("uint8")).save(images / "a.png")
    Image.fromarray((rng.random((36, 48, 3)) * 255).astype("uint8")).save(images / "b.png")
    (root / "texts.txt").write_text("# instructions\n" + "\n\n".join(TEXTS) + "\nred striped shirt\n")
    (root / "fake_methods.py").write_text(textwrap.dedent(FAKE_MODULE))
    return {"root": root, "bundle": root / "tiny", "images": images, "texts": root / "texts.txt"}


class Counter:
    """Method factories that count the edits they make: calls[(image size, text, method)]."""

    def __init__(self, root: Path) -> None:
        sys.path.insert(0, str(root))
        try:
            import fake_methods
        finally:
            sys.path.remove(str(root))
        self.grey = fake_methods.GreyInpaint()
        self.calls: list[tuple[tuple[int, int], str, str]] = []

    def factories(self) -> dict:
        def counted(label, inner):
            def method(image, text, seed):
                self.calls.append((tuple(image.shape[-2:]), text, label))
                return inner(image, text, seed)

            return method

        return {
            "fice": lambda ctx: counted("fice", METHODS["fice"](ctx)),
            "inpaint": lambda ctx: counted("inpaint", self.grey),
        }


def _run(env: dict[str, Path], out: Path, counter: Counter, **kw) -> Path:
    kw = {"bundle": env["bundle"], "iterations": 1, "device": "cpu", "progress": False, **kw}
    return run_evaluation(env["images"], env["texts"], ["fice", "inpaint"], out, factories=counter.factories(), **kw)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _without_seconds(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_run(env: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Counter]:
    out = tmp_path_factory.mktemp("first") / "out"
    counter = Counter(env["root"])
    _run(env, out, counter)
    return out, counter


def test_read_jobs_text_lines_and_names(env: dict[str, Path]) -> None:
    jobs = read_jobs(env["images"], env["texts"])  # comment, blank lines and the repeated text are dropped
    assert jobs == sorted(Job(i, t) for i in ("a.png", "b.png") for t in TEXTS)
    assert jobs[0].name == "a__blue-dress"
    assert text_slug("Röd  T-shirt, 100% cotton!") == "rod-t-shirt-100-cotton"
    assert text_slug("???") == "text" and len(text_slug("x " * 100)) <= 80


def test_outputs_metrics_summary_and_grids(first_run: tuple[Path, Counter]) -> None:
    out, counter = first_run
    assert len(counter.calls) == 8  # 2 images x 2 texts x 2 methods
    names = sorted(f"{i}__{text_slug(t)}.png" for i in "ab" for t in TEXTS)
    for kind in ("results", "masks"):
        for method in ("fice", "inpaint"):
            assert sorted(p.name for p in (out / kind / method).iterdir()) == names
    assert Image.open(out / "results" / "fice" / "b__blue-dress.png").size == (48, 36)  # the photo's own size
    assert Image.open(out / "results" / "inpaint" / "a__red-striped-shirt.png").size == (30, 40)

    with open(out / "metrics.csv", newline="") as f:
        assert next(csv.reader(f)) == COLUMNS  # no LPIPS column without --lpips-backbone
    rows = _rows(out / "metrics.csv")
    keys = [(r["image"], r["text"], r["method"]) for r in rows]
    assert keys == sorted((i, t, m) for i in ("a.png", "b.png") for t in TEXTS for m in ("fice", "inpaint"))
    for r in rows:
        assert float(r["seconds"]) >= 0 and 0 <= float(r["clip_score"]) <= 100
        assert 0 <= float(r["pose_part_iou"]) <= 1  # the tiny bundle has a DensePose
        if r["method"] == "inpaint":  # grey box only: every kept pixel is the photo's
            assert r["psnr_outside_mask"] == "inf" and 0 < float(r["ssim_outside_mask"]) <= 1
        elif r["psnr_outside_mask"]:
            assert float(r["psnr_outside_mask"]) > 0

    summary = (out / "summary.md").read_text()
    assert "| metric | fice | inpaint |" in summary
    assert "| edits | 4 | 4 |" in summary
    clip_row = next(line for line in summary.splitlines() if line.startswith("| CLIP score"))
    assert clip_row.count("(n=4)") == 2
    assert "∞ (n=4)" in summary and "FID" not in summary and "LPIPS" not in summary

    grids = sorted(p.name for p in (out / "grids").iterdir())
    assert grids == sorted(f"{text_slug(t)}.png" for t in TEXTS)
    grid = Image.open(out / "grids" / "blue-dress.png")
    # Rows 40 px tall (the tallest photo) + a 4-px gap; photo | mask | fice | inpaint with 4-px gaps.
    assert grid.size[1] == 40 + 4 + 40
    assert grid.size[0] == 4 * 53 + 3 * 4  # b.png (36x48) scaled to 40 px tall is 53 px wide


def test_rerun_does_no_edits_and_deleted_row_reruns(first_run: tuple[Path, Counter], env: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    before = _snapshot(out)
    counter = Counter(env["root"])
    _run(env, out, counter)
    assert counter.calls == []  # nothing left to edit
    assert _snapshot(out) == before  # identical metrics.csv, summary.md, grids

    rows = _rows(out / "metrics.csv")
    dropped = rows.pop(5)
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    _run(env, out, counter)
    size = (40, 30) if dropped["image"] == "a.png" else (36, 48)
    assert counter.calls == [(size, dropped["text"], dropped["method"])]
    assert _without_seconds(_rows(out / "metrics.csv")) == _without_seconds(_rows(first_run[0] / "metrics.csv"))


def test_interrupted_last_row_is_redone(first_run: tuple[Path, Counter], env: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    text = (out / "metrics.csv").read_text()
    (out / "metrics.csv").write_text(text[: -12])  # a row cut mid-write
    counter = Counter(env["root"])
    _run(env, out, counter)
    assert len(counter.calls) == 1
    assert _without_seconds(_rows(out / "metrics.csv")) == _without_seconds(_rows(first_run[0] / "metrics.csv"))


def test_csv_pairs(env: dict[str, Path], tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text('image,text\na.png,"red, striped shirt"\nb.png,blue dress\n\na.png,blue dress\n')
    assert read_jobs(env["images"], pairs) == [
        Job("a.png", "blue dress"), Job("a.png", "red, striped shirt"), Job("b.png", "blue dress")
    ]
    counter = Counter(env["root"])
    out = tmp_path / "out"
    run_evaluation(env["images"], pairs, ["inpaint"], out, bundle=env["bundle"], device="cpu", progress=False,
                   factories=counter.factories(), judge_clip=None)
    rows = _rows(out / "metrics.csv")
    assert [(r["image"], r["text"]) for r in rows] == [("a.png", "blue dress"), ("a.png", "red, striped shirt"),
                                                       ("b.png", "blue dress")]
    assert "clip_score" not in rows[0]  # --judge-clip none
    assert (out / "results" / "inpaint" / "a__red-striped-shirt.png").is_file()
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["blue-dress.png", "red-striped-shirt.png"]


def test_inpaint_method_repaints_the_ficekit_region(env: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    """The registered 'inpaint' goes through inpaint_like_ficekit: its masks are the fice edit's blend masks."""
    baseline_module = pytest.importorskip("ficekit.baselines.inpaint")

    class FakeBaseline:  # stands in for the diffusion model (tested in test_baseline_inpaint.py)
        def inpaint(self, photos, masks, text, seed=0, **kw):
            return [p * (1 - m) + 0.5 * m for p, m in zip(photos, masks, strict=True)]

    loaded = []
    monkeypatch.setattr(baseline_module.InpaintBaseline, "from_pretrained",
                        classmethod(lambda cls, model, device="auto", **kw: loaded.append(model) or FakeBaseline()))
    out = tmp_path / "out"
    run_evaluation(env["images"], env["texts"], ["fice", "inpaint"], out, bundle=env["bundle"], inpaint_model="m/id",
                   iterations=1, device="cpu", progress=False)  # fmt: skip
    assert loaded == ["m/id"] and len(_rows(out / "metrics.csv")) == 8
    for name in sorted(p.name for p in (out / "masks" / "fice").iterdir()):
        assert (out / "masks" / "inpaint" / name).read_bytes() == (out / "masks" / "fice" / name).read_bytes()


def test_changed_settings_are_refused(first_run: tuple[Path, Counter], env: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    with pytest.raises(ValueError, match="iterations=1, this run has iterations=2"):
        _run(env, out, Counter(env["root"]), iterations=2)


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_images", "--images folder not found"),
        ("empty_texts", "is empty"),
        ("unknown_method", "unknown method 'nope'"),
        ("bad_image", "cannot read image"),
        ("no_baseline", 'pip install "ficekit[diffusion]"'),
        ("name_clash", "would share the output name 'a'"),
        ("bomb_image", "claims 10000 megapixels in its header; ficekit edits photos of at most 40 megapixels"),
        ("not_a_factory", "method 'os:system' names a builtin_function_or_method, not a method factory"),
        ("caption_csv", "--texts: CSV header has image,caption; expected columns image,text"),
    ],
)
def test_errors_exit_2_with_one_line(
    case: str, message: str, env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    images, texts, methods = env["images"], env["texts"], "fice"
    if case == "no_images":
        images = tmp_path / "missing"
    elif case == "empty_texts":
        texts = tmp_path / "empty.txt"
        texts.write_text("\n  \n")
    elif case == "unknown_method":
        methods = "fice,nope"
    elif case in ("bad_image", "name_clash", "bomb_image"):
        images = tmp_path / "imgs"
        images.mkdir()
        (images / "a.png").write_bytes((env["images"] / "a.png").read_bytes())
        if case == "bad_image":
            (images / "b.png").write_text("not a png")
        elif case == "bomb_image":  # a 57-byte PNG whose header claims 100000 x 100000 pixels
            ihdr = b"IHDR" + struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
            chunk = struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
            (images / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82")
        else:
            (images / "a.jpg").write_bytes((env["images"] / "a.png").read_bytes())
    elif case == "not_a_factory":
        methods = "os:system"
    elif case == "caption_csv":
        texts = tmp_path / "pairs.csv"
        texts.write_text("image,caption\na.png,red shirt\n")
    elif case == "no_baseline":
        methods = "inpaint"
        monkeypatch.setitem(sys.modules, "ficekit.baselines.inpaint", None)  # import fails as if not installed
    args = ["--images", str(images), "--texts", str(texts), "--methods", methods, "--bundle", str(env["bundle"]),
            "--inpaint-model", "some/model", "--iterations", "1", "--device", "cpu",
            "--out", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_torchrun_two_ranks_match_one_process(first_run: tuple[Path, Counter], env: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ficekit.eval.run", "--images", str(env["images"]), "--texts", str(env["texts"]),
           "--methods", "fice,fake_methods:inpaint", "--bundle", str(env["bundle"]), "--iterations", "1",
           "--device", "cpu", "--out", str(out), "--quiet"]  # fmt: skip
    pythonpath = os.pathsep.join([str(REPO), str(env["root"]), os.environ.get("PYTHONPATH", "")])
    environ = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=environ)
    assert proc.returncode == 0, proc.stderr[-3000:]

    assert not list(out.glob("metrics.rank*.csv"))  # merged into metrics.csv by rank 0
    got, want = _rows(out / "metrics.csv"), _rows(first_run[0] / "metrics.csv")
    assert [(r["image"], r["text"], r["method"]) for r in got] == [(r["image"], r["text"], r["method"]) for r in want]
    for g, w in zip(got, want, strict=True):
        for column in COLUMNS[4:]:
            if w[column] in ("", "inf"):
                assert g[column] == w[column]
            else:
                assert math.isclose(float(g[column]), float(w[column]), rel_tol=1e-4, abs_tol=1e-4), (column, g, w)
    assert (out / "summary.md").is_file()
    assert sorted(p.name for p in (out / "grids").iterdir()) == sorted(f"{text_slug(t)}.png" for t in TEXTS)
    assert len(list((out / "results" / "fice").iterdir())) == 4


def test_lpips_and_fid_when_weights_are_given(env: dict[str, Path], tmp_path: Path) -> None:
    """Random local weights: LPIPS becomes a CSV column, FID/KID rows appear in summary.md only."""
    pytest.importorskip("lpips")
    import torchvision

    from ficekit.eval.inception import WEIGHTS_FILE, FIDInceptionV3

    alex = torchvision.models.alexnet(weights=None).state_dict()
    backbone = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save({k: v for k, v in alex.items() if k.startswith("features.")}, backbone)
    torch.manual_seed(0)
    inception = tmp_path / WEIGHTS_FILE
    torch.save(FIDInceptionV3().state_dict(), inception)

    images = tmp_path / "images"  # AlexNet needs photos of at least ~64 px
    images.mkdir()
    rng = np.random.default_rng(1)
    for name in ("c.png", "d.png"):
        Image.fromarray((rng.random((64, 48, 3)) * 255).astype("uint8")).save(images / name)
    out = tmp_path / "out"
    counter = Counter(env["root"])
    run_evaluation(images, TEXTS, ["inpaint"], out, bundle=env["bundle"], device="cpu", progress=False,
                   factories=counter.factories(), lpips_backbone=backbone, inception=inception)  # fmt: skip
    rows = _rows(out / "metrics.csv")
    assert list(rows[0]) == COLUMNS[:6] + ["lpips_outside_mask"] + COLUMNS[6:]
    assert all(0 <= float(r["lpips_outside_mask"]) < 1 for r in rows)
    summary = (out / "summary.md").read_text()
    fid_row = next(line for line in summary.splitlines() if line.startswith("| FID"))
    assert "(n=4)" in fid_row and float(fid_row.split("|")[2].split()[0]) >= 0
    assert any(line.startswith("| KID") for line in summary.splitlines())


def test_ctrl_c_keeps_the_finished_rows_and_exits_130(env: dict[str, Path], tmp_path: Path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(env["root"]))
    out = tmp_path / "out"
    args = ["--images", str(env["images"]), "--texts", str(env["texts"]), "--methods", "fake_methods:interrupted",
            "--bundle", str(env["bundle"]), "--device", "cpu", "--judge-clip", "none", "--out", str(out), "--quiet"]
    try:
        code = main(args)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped ficekit.eval.run.main")  # (and would end the whole test session)
    assert code == 130
    err = capsys.readouterr().err
    assert err == f"ficekit.eval.run: interrupted; 1 rows kept in {out / 'metrics.csv'} (the same command resumes)\n"
    rows = _rows(out / "metrics.csv")
    assert [(r["image"], r["text"], r["method"]) for r in rows] == [("a.png", "blue dress", "interrupted")]
    assert sorted(p.name for p in (out / "results" / "interrupted").iterdir()) == ["a__blue-dress.png"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # no half-written file


def test_texts_csv_is_recognised_by_its_header(env: dict[str, Path], tmp_path: Path) -> None:
    from ficekit.eval.jobs import EvalError

    instructions = tmp_path / "texts.txt"
    instructions.write_text("red, with long sleeves\n")  # a comma, but no image/text column: an instruction
    assert {j.text for j in read_jobs(env["images"], instructions)} == {"red, with long sleeves"}
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\nImage , TEXT\nb.png,blue dress\n")  # a header in any case, after a blank line
    assert read_jobs(env["images"], pairs) == [Job("b.png", "blue dress")]
    for name, header in (("p.txt", "image,caption"), ("q.csv", "photo,prompt")):
        (tmp_path / name).write_text(f"{header}\na.png,red\n")
        with pytest.raises(EvalError, match=f"CSV header has {header}; expected columns image,text"):
            read_jobs(env["images"], tmp_path / name)
