"""ficekit.baselines.inpaint: a tiny random Stable Diffusion inpainting pipeline, saved and loaded from disk.

Checks the framing (any photo size), the stitch (photo kept bit for bit outside the mask), seeding, batch-size
independence, the offline loading errors, inpaint_like_ficekit and the command line. Nothing is downloaded:
the tokenizer is built from open_clip's bundled BPE vocabulary, every model is randomly initialised.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read by huggingface_hub at import: never reach a hub from the tests
diffusers = pytest.importorskip("diffusers", reason="the diffusion baseline needs diffusers (ficekit[diffusion])")
transformers = pytest.importorskip("transformers", reason="the diffusion baseline needs transformers")

from ficekit.baselines.inpaint import InpaintBaseline, inpaint_like_ficekit, main  # noqa: E402
from tests.tiny_diffusion import RESOLUTION, save_tiny_inpainting_pipeline  # noqa: E402

STEPS = 2


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FICEKIT_ALLOW_DOWNLOAD", raising=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_inpainting_pipeline(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="module")
def baseline(model_dir: Path) -> InpaintBaseline:
    return InpaintBaseline.from_pretrained(model_dir, device="cpu", num_inference_steps=STEPS)


def _photos_and_masks() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Three photos (tall, wide, square) and soft masks: 1 in a box, a ramp around it, 0 elsewhere."""
    g = torch.Generator().manual_seed(0)
    photos, masks = [], []
    for h, w in [(40, 28), (24, 36), (32, 32)]:
        photos.append(torch.rand(3, h, w, generator=g))
        mask = torch.zeros(1, h, w)
        mask[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 0.5
        mask[:, h // 4 + 2 : 3 * h // 4 - 2, w // 4 + 2 : 3 * w // 4 - 2] = 1.0
        masks.append(mask)
    return photos, masks


def test_loads_from_disk_with_the_pipelines_defaults(baseline: InpaintBaseline) -> None:
    assert type(baseline.pipeline).__name__ == "StableDiffusionInpaintPipeline"
    assert baseline.resolution == RESOLUTION and baseline.num_inference_steps == STEPS
    assert baseline.device == torch.device("cpu")


def test_photo_size_kept_and_photo_exact_outside_the_mask(baseline: InpaintBaseline) -> None:
    photos, masks = _photos_and_masks()
    results = baseline.inpaint(photos, masks, "red striped shirt", progress=False)
    for photo, mask, result in zip(photos, masks, results, strict=True):
        assert result.shape == photo.shape and result.dtype == torch.float32
        assert 0 <= result.min() and result.max() <= 1
        outside = (mask == 0).expand_as(photo)
        assert torch.equal(result[outside], photo[outside])  # bit-identical
        inside = (mask == 1).expand_as(photo)
        assert (result[inside] - photo[inside]).abs().mean() > 0.01


def test_seeded_and_independent_of_batch_size(baseline: InpaintBaseline) -> None:
    photos, masks = _photos_and_masks()
    one = baseline.inpaint(photos, masks, "a blue dress", seed=3, batch_size=1, progress=False)
    again = baseline.inpaint(photos, masks, "a blue dress", seed=3, batch_size=1, progress=False)
    three = baseline.inpaint(photos, masks, "a blue dress", seed=3, batch_size=3, progress=False)
    other = baseline.inpaint(photos, masks, "a blue dress", seed=4, batch_size=1, progress=False)
    for a, b, c, d in zip(one, again, three, other, strict=True):
        assert torch.equal(a, b)
        # Batched convolutions round differently from single ones (~1e-5), so batch sizes agree to float rounding.
        torch.testing.assert_close(a, c, atol=1e-4, rtol=0)
        assert (a - d).abs().max() > 1e-3
    # Photo i uses seed + i: a photo inpainted alone with seed 3 + 2 matches the third photo above.
    alone = baseline.inpaint(photos[2:], masks[2:], "a blue dress", seed=5, progress=False)
    torch.testing.assert_close(alone[0], three[2], atol=1e-4, rtol=0)


def test_raw_output_and_input_checks(baseline: InpaintBaseline) -> None:
    photos, masks = _photos_and_masks()
    result = baseline.inpaint_result(photos[:1], masks[:1], "shirt", progress=False, stitch_method="hard")
    assert result.generated[0].shape == photos[0].shape and result.timings["total"] > 0
    with pytest.raises(ValueError, match=r"masks\[0\]"):
        baseline.inpaint(photos[:1], masks[1:2], "shirt", progress=False)
    with pytest.raises(ValueError, match="one mask per image"):
        baseline.inpaint(photos, masks[:2], "shirt", progress=False)
    with pytest.raises(ValueError, match="text is empty"):
        baseline.inpaint(photos, masks, "  ", progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        baseline.inpaint([photos[0] * 2], masks[:1], "shirt", progress=False)
    with pytest.raises(ValueError, match="multiple of"):
        InpaintBaseline(baseline.pipeline, device=None, resolution=33)


def test_wraps_a_pipeline_object_at_another_resolution(baseline: InpaintBaseline) -> None:
    from ficekit.baselines import InpaintBaseline as exported  # lazy package export

    other = exported(baseline.pipeline, device=None, num_inference_steps=STEPS, guidance_scale=1.0, resolution=48)
    photos, masks = _photos_and_masks()
    batch = torch.stack(photos[2:]), torch.stack(masks[2:])  # an [N, 3, H, W] tensor works too
    result = other.inpaint_result(*batch, "shirt", progress=False)
    assert result.images[0].shape == photos[2].shape and result.generated[0].shape == photos[2].shape


def test_missing_diffusers_says_what_to_install(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "ficekit\[diffusion\]"'):
        InpaintBaseline.from_pretrained(model_dir, device="cpu")


def test_missing_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="diffusion model folder not found: .*no-such-model"):
        InpaintBaseline.from_pretrained(tmp_path / "no-such-model", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no model_index.json"):
        InpaintBaseline.from_pretrained(tmp_path / "empty", device="cpu")
    with pytest.raises(FileNotFoundError, match="'nobody/no-such-inpainting-model' is not a local folder.*FICEKIT_ALLOW"):
        InpaintBaseline.from_pretrained("nobody/no-such-inpainting-model", device="cpu", cache_dir=tmp_path / "cache")


def test_offline_unless_downloads_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_from_pretrained(name: str, **kw: object) -> None:
        calls.append(kw)
        raise OSError("not found")

    monkeypatch.setattr(diffusers.AutoPipelineForInpainting, "from_pretrained", fake_from_pretrained)
    for allow in ("", "1"):
        monkeypatch.setenv("FICEKIT_ALLOW_DOWNLOAD", allow)
        with pytest.raises(FileNotFoundError, match="owner/model"):
            InpaintBaseline.from_pretrained("owner/model", device="cpu", dtype=torch.float16, variant="fp16")
    assert [c["local_files_only"] for c in calls] == [True, False]
    assert all(c["torch_dtype"] == torch.float16 and c["variant"] == "fp16" for c in calls)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ficekit.random_bundle import write_random_bundle

    folder = tmp_path_factory.mktemp("bundle") / "tiny"
    write_random_bundle(folder, preset="tiny", seed=0)
    return folder


def test_inpaint_like_ficekit_uses_the_pipelines_masks(baseline: InpaintBaseline, bundle_dir: Path) -> None:
    from ficekit.pipeline import FicePipeline

    pipe = FicePipeline.from_bundle(str(bundle_dir), device="cpu")
    photos, _ = _photos_and_masks()
    results, masks = inpaint_like_ficekit(pipe, baseline, photos[:2], "striped shirt", mask="fice", progress=False)
    expected = pipe.edit_masks(photos[:2], "striped shirt", mask="fice")
    for photo, mask, want, result in zip(photos[:2], masks, expected, results, strict=True):
        assert torch.equal(mask, want) and mask.shape == (1, *photo.shape[-2:]) and result.shape == photo.shape
        outside = (mask == 0).expand_as(photo)
        assert torch.equal(result[outside], photo[outside])
    # The CLI's masks (edit/keep/blend at the photo's size) have the same blend mask.
    (full,) = pipe.photo_masks(photos[:1], "striped shirt", mask="fice")
    assert torch.equal(full.blend[0], expected[0]) and full.edit.shape == full.keep.shape == (1, *expected[0].shape)


def test_cli_writes_ficekit_edit_files_and_never_overwrites(
    model_dir: Path, bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "me.jpg"
    Image.fromarray((np.random.default_rng(0).random((60, 44, 3)) * 255).astype("uint8")).save(photo)
    out = tmp_path / "out"
    args = ["--text", "striped cotton shirt", "--image", str(photo), "--model", str(model_dir), "--bundle",
            str(bundle_dir), "--out", str(out), "--steps", str(STEPS), "--device", "cpu", "--quiet"]
    assert main(args) == 0
    assert capsys.readouterr().out == ""
    names = sorted(p.name for p in out.iterdir())
    assert names == ["me_grid.png", "me_mask_blend.png", "me_mask_edit.png", "me_mask_keep.png", "me_result.png",
                     "report.json"]
    assert Image.open(out / "me_result.png").size == (44, 60)
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "diffusion-inpainting" and report["settings"]["num_inference_steps"] == STEPS
    assert report["model"]["pipeline"] == "StableDiffusionInpaintPipeline" and len(report["outputs"]["me"]) == 5
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(args) == 0
    assert {"me_result-1.png", "report-1.json"} <= {p.name for p in out.iterdir()}
    assert all((out / name).read_bytes() == data for name, data in before.items())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--text": "  "}, "--text is empty"),
        ({"--model": "/no/such/model-folder"}, "diffusion model folder not found"),
        ({"--steps": "0"}, "--steps must be >= 1"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    change: dict[str, str], message: str, model_dir: Path, bundle_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    photo = tmp_path / "me.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype="uint8")).save(photo)
    options = {"--text": "shirt", "--model": str(model_dir), "--bundle": str(bundle_dir), "--out": str(tmp_path / "o"),
               "--device": "cpu", **change}
    argv = [*(x for kv in options.items() for x in kv), "--image", str(photo), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # nothing written
