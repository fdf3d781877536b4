"""Image-edit metrics: known values, masks, batching, loaders and their errors (CPU, small models)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from ficekit.checkpoint_io import CheckpointError
from ficekit.eval.inception import ENV_VAR, WEIGHTS_FILE, FIDInceptionV3, load_fid_inception
from ficekit.eval.metrics import (
    InceptionFeatures,
    LpipsDistance,
    clip_score,
    densepose_maps,
    fid,
    fid_from_features,
    frechet_distance,
    kid,
    kid_from_features,
    part_iou,
    pose_distance,
    psnr,
    ssim,
)
from tests.tiny_models import TINY_DENSEPOSE


def _images(n: int = 2, h: int = 32, w: int = 32, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g, dtype=dtype)


# ---------------------------------------------------------------------------------------------------
# PSNR


def test_psnr_known_values() -> None:
    a = _images(3, dtype=torch.float64) * 0.8
    assert torch.isinf(psnr(a, a)).all() and psnr(a, a).shape == (3,)
    shifted = psnr(a, a + 0.1)
    torch.testing.assert_close(shifted, torch.full((3,), 20.0, dtype=torch.float64), atol=1e-9, rtol=0)
    a32 = a.float()
    torch.testing.assert_close(psnr(a32, a32 + 0.1), torch.full((3,), 20.0), atol=1e-4, rtol=0)
    # max_val scales: 0-255 images with a shift of 25.5 are the same 20 dB
    torch.testing.assert_close(psnr(a * 255, a * 255 + 25.5, max_val=255.0), shifted, atol=1e-9, rtol=0)


def test_psnr_is_per_image() -> None:
    a = _images(3)
    b = a.clone()
    b[1] = (b[1] + 0.1).clamp(0, 1)
    out = psnr(a, b)
    assert torch.isinf(out[0]) and torch.isinf(out[2]) and math.isfinite(float(out[1]))
    torch.testing.assert_close(out[1:2], psnr(a[1:2], b[1:2]))


def test_psnr_mask() -> None:
    a = _images(2) * 0.5
    b = a.clone()
    b[:, :, :4, :4] += 0.25  # only the top-left corner changes
    keep = torch.ones(2, 1, 32, 32)
    keep[:, :, :4, :4] = 0
    assert torch.isinf(psnr(a, b, keep)).all()
    corner = 1 - keep
    # over the changed pixels only, the error is exactly the shift: 10 log10(1 / 0.25^2)
    torch.testing.assert_close(psnr(a, b, corner), torch.full((2,), 10 * math.log10(16.0)), atol=1e-4, rtol=0)
    # an all-ones mask is the unmasked value; a [1,1,H,W] mask broadcasts
    torch.testing.assert_close(psnr(a, b, torch.ones(1, 1, 32, 32)), psnr(a, b))


def test_psnr_errors() -> None:
    a = _images(2)
    empty = torch.ones(2, 1, 32, 32)
    empty[1] = 0
    with pytest.raises(ValueError, match=r"selects no pixel of image\(s\) \[1\]"):
        psnr(a, a, empty)
    with pytest.raises(ValueError, match=r"\[2, 3, 32, 32\].*\[2, 3, 16, 16\]"):
        psnr(a, _images(2, 16, 16))
    with pytest.raises(ValueError, match=r"mask: expected shape \[2, 1, 32, 32\]"):
        psnr(a, a, torch.ones(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\]"):
        psnr(a * 2 - 1, a)
    with pytest.raises(ValueError, match="float"):
        psnr((a * 255).to(torch.uint8), (a * 255).to(torch.uint8))


# ---------------------------------------------------------------------------------------------------
# SSIM


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two [3,H,W] images via scipy's Gaussian filter (as skimage with gaussian_weights=True,
    use_sample_covariance=False, data_range=1), averaged over the valid region and the channels."""
    from scipy.ndimage import gaussian_filter

    def blur(x: np.ndarray) -> np.ndarray:
        return gaussian_filter(x, sigma=1.5, truncate=5 / 1.5, mode="reflect")

    c1, c2 = 0.01**2, 0.03**2
    values = []
    for x, y in zip(a.astype(np.float64), b.astype(np.float64), strict=True):
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        values.append(s[5:-5, 5:-5].mean())
    return float(np.mean(values))


def test_ssim_known_values_and_reference() -> None:
    a = _images(2, 40, 36, dtype=torch.float64)
    torch.testing.assert_close(ssim(a, a), torch.ones(2, dtype=torch.float64))
    b = (a + 0.2 * _images(2, 40, 36, seed=1, dtype=torch.float64)).clamp(0, 1)
    out = ssim(a, b)
    assert out.shape == (2,) and (out < 1).all()
    for i in range(2):
        assert float(out[i]) == pytest.approx(_ssim_reference(a[i].numpy(), b[i].numpy()), abs=1e-10)
    torch.testing.assert_close(ssim(a.float(), b.float()), out.float(), atol=1e-5, rtol=0)


def test_ssim_mask() -> None:
    a = _images(2, 48, 48)
    b = a.clone()
    b[:, :, :8, :8] = 1 - b[:, :, :8, :8]
    torch.testing.assert_close(ssim(a, b, torch.ones(2, 1, 48, 48)), ssim(a, b))
    far = torch.zeros(2, 1, 48, 48)
    far[:, :, 24:, 24:] = 1  # more than the window's radius away from the change
    torch.testing.assert_close(ssim(a, b, far), torch.ones(2))
    near = torch.zeros(2, 1, 48, 48)
    near[:, :, :12, :12] = 1
    assert (ssim(a, b, near) < ssim(a, b)).all()
    border = torch.zeros(2, 1, 48, 48)
    border[:, :, :3] = 1  # only pixels the valid-region SSIM map does not cover
    with pytest.raises(ValueError, match="selects no pixel"):
        ssim(a, b, border)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(_images(1, 8, 8), _images(1, 8, 8))


# ---------------------------------------------------------------------------------------------------
# LPIPS


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised torchvision AlexNet saved as torchvision's weight file (a plain state dict)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lpips") / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def lpips_alex(alexnet_file: Path) -> LpipsDistance:
    pytest.importorskip("lpips")
    return LpipsDistance(alexnet_file, net="alex")


def test_lpips_loads_the_backbone_from_the_local_file(lpips_alex: LpipsDistance, alexnet_file: Path) -> None:
    state = torch.load(alexnet_file, weights_only=True)
    net = lpips_alex.model.net.state_dict()  # lpips slices keep torchvision's layer indices
    assert len(net) == 10
    for key, value in net.items():
        torch.testing.assert_close(value, state["features." + key.split(".", 1)[1]])
    # a folder holding the standard file name works too
    other = LpipsDistance(alexnet_file.parent).model.net.state_dict()
    torch.testing.assert_close(other["slice3.6.weight"], state["features.6.weight"])
    assert not lpips_alex.training and not any(p.requires_grad for p in lpips_alex.parameters())


def test_lpips_values(lpips_alex: LpipsDistance) -> None:
    a, b = _images(3, 64, 64), _images(3, 64, 64, seed=1)
    same = lpips_alex(a, a)
    assert same.shape == (3,)
    torch.testing.assert_close(same, torch.zeros(3))
    d = lpips_alex(a, b)
    assert d.shape == (3,) and (d > 0).all()
    torch.testing.assert_close(lpips_alex(a[1:2], b[1:2]), d[1:2])
    torch.testing.assert_close(lpips_alex(b, a), d)
    # masked: the spatial LPIPS map averaged over the mask; the whole image is its plain mean
    ones = torch.ones(3, 1, 64, 64)
    lpips_alex.model.spatial = True
    spatial = lpips_alex.model(a, b, normalize=True)
    lpips_alex.model.spatial = False
    torch.testing.assert_close(lpips_alex(a, b, ones), spatial.mean(dim=(1, 2, 3)))
    left = torch.zeros(3, 1, 64, 64)
    left[..., :32] = 1
    torch.testing.assert_close(lpips_alex(a, b, left), spatial[..., :32].mean(dim=(1, 2, 3)))
    torch.testing.assert_close(lpips_alex(a, a, left), torch.zeros(3))
    with pytest.raises(ValueError, match="selects no pixel"):
        lpips_alex(a, b, torch.zeros(3, 1, 64, 64))


def test_lpips_errors(tmp_path: Path, alexnet_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lpips")
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth"):
        LpipsDistance(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        LpipsDistance(tmp_path, net="vgg")
    state = torch.load(alexnet_file, weights_only=True)
    del state["features.8.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="features.8.weight"):
        LpipsDistance(tmp_path / "cut.pth")
    with pytest.raises(ValueError, match="'alex', 'squeeze', 'vgg'"):
        LpipsDistance(alexnet_file, net="resnet")
    monkeypatch.setitem(sys.modules, "lpips", None)  # as if lpips were not installed
    with pytest.raises(ImportError, match=r'pip install "ficekit\[eval\]"'):
        LpipsDistance(alexnet_file)


# ---------------------------------------------------------------------------------------------------
# CLIP score

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_clip_score() -> None:
    pytest.importorskip("open_clip")
    from ficekit.perception.clip import load_clip

    torch.manual_seed(0)
    guide = load_clip("tiny", model_config=TINY_CLIP)
    images = _images(4, 48, 40)
    texts = ["a red shirt", "a blue dress", "a striped jacket", "a red shirt"]
    scores = clip_score(guide, images, texts)
    assert scores.shape == (4,) and ((scores >= 0) & (scores <= 100)).all()
    with torch.no_grad():
        cos = (guide.encode_image(images) * guide.encode_text(texts)).sum(dim=-1)
    torch.testing.assert_close(scores, 100 * cos.clamp(min=0))
    torch.testing.assert_close(clip_score(guide, images, texts, batch_size=1), scores)
    one = clip_score(guide, images, "a red shirt")
    torch.testing.assert_close(one[[0, 3]], scores[[0, 3]])
    with pytest.raises(ValueError, match="list of 4 strings"):
        clip_score(guide, images, texts[:3])


# ---------------------------------------------------------------------------------------------------
# Pose: part IoU, UV error, DensePose reading


def test_part_iou_hand_made() -> None:
    a = torch.zeros(3, 4, 4, dtype=torch.long)
    b = torch.zeros(3, 4, 4, dtype=torch.long)
    a[0, :, :2] = 1  # 8 pixels
    b[0, :, :] = 1  # 16 pixels -> IoU 8 / 16
    a[1, :2], b[1, :2] = 2, 2  # part 2 identical (IoU 1) ...
    a[1, 2:, :2], b[1, 2:, :1] = 5, 5  # ... part 5 IoU 4 / 8 = 0.5 -> mean 0.75
    # image 2: both all background -> 1.0
    torch.testing.assert_close(part_iou(a, b), torch.tensor([0.5, 0.75, 1.0]))
    torch.testing.assert_close(part_iou(b, a), torch.tensor([0.5, 0.75, 1.0]))
    c = torch.zeros(1, 4, 4, dtype=torch.int32)
    d = torch.zeros(1, 4, 4, dtype=torch.int32)
    c[0, 0, 0], d[0, 3, 3] = 7, 9  # two parts, each present in one map only
    torch.testing.assert_close(part_iou(c, d), torch.tensor([0.0]))


def test_part_iou_errors() -> None:
    a = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="integer part-index map"):
        part_iou(a.float(), a)
    with pytest.raises(ValueError, match=r"\[0, 24\].*max 25"):
        part_iou(a + 25, a)
    with pytest.raises(ValueError, match=r"\[2, 4, 4\] and \[2, 4, 5\]"):
        part_iou(a, torch.zeros(2, 4, 5, dtype=torch.long))


def test_pose_distance() -> None:
    ia = torch.zeros(2, 4, 4, dtype=torch.long)
    ib = torch.zeros(2, 4, 4, dtype=torch.long)
    ia[0, :2], ib[0, :2] = 3, 3  # 8 shared part-3 pixels
    ia[0, 2:], ib[0, 2:] = 4, 6  # different parts: not counted in uv_mae
    ia[1, 0, 0] = 1  # image 1 shares no part
    uva, uvb = torch.rand(2, 2, 4, 4), torch.rand(2, 2, 4, 4)
    uvb[0, :, :2] = uva[0, :, :2] + torch.tensor([0.1, -0.3]).view(2, 1, 1)
    out = pose_distance((ia, uva), (ib, uvb))
    assert set(out) == {"part_iou", "uv_mae"}
    torch.testing.assert_close(out["part_iou"], part_iou(ia, ib))
    assert float(out["uv_mae"][0]) == pytest.approx(0.2, abs=1e-6)
    assert math.isnan(float(out["uv_mae"][1]))
    with pytest.raises(ValueError, match="dp_b UV"):
        pose_distance((ia, uva), (ib, uvb[:, :1]))




def test_densepose_maps() -> None:
    from ficekit.perception.densepose import DensePoseChartModel
    from ficekit.perception.densepose_parts import densepose_part_maps

    torch.manual_seed(0)
    model = DensePoseChartModel(TINY_DENSEPOSE).eval()
    images = _images(3, 40, 56)
    labels, uv = densepose_maps(model, images, batch_size=2)
    assert labels.shape == (3, 40, 56) and labels.dtype == torch.long
    assert uv.shape == (3, 2, 40, 56) and uv.is_floating_point()
    assert int(labels.min()) >= 0 and int(labels.max()) <= 24
    assert (uv[labels.unsqueeze(1).expand_as(uv) == 0] == 0).all()
    with torch.no_grad():
        out = model(images)
    torch.testing.assert_close(labels, densepose_part_maps(out, (40, 56), 3).argmax(dim=1))
    # U at a pixel is the chart prediction of that pixel's part, resampled to the image
    up = torch.nn.functional.interpolate(out.u, size=(40, 56), mode="bilinear", align_corners=False)
    expected_u = up.gather(1, labels.unsqueeze(1)).squeeze(1) * (labels > 0)
    torch.testing.assert_close(uv[:, 0], expected_u)
    same = pose_distance((labels, uv), (labels, uv))
    torch.testing.assert_close(same["part_iou"], torch.ones(3))


# ---------------------------------------------------------------------------------------------------
# FID / KID statistics


def _with_statistics(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    """n samples [n,D] whose sample mean and unbiased sample covariance are exactly `mean` and `cov`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, mean.numel(), generator=g, dtype=torch.float64)
    x = x - x.mean(dim=0)
    whiten = torch.linalg.cholesky(x.T @ x / (n - 1))
    x = torch.linalg.solve_triangular(whiten, x.T, upper=False).T  # sample covariance = I
    return x @ torch.linalg.cholesky(cov).T + mean


def test_frechet_distance_closed_form() -> None:
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    s1, s2 = torch.diag(torch.tensor([1.0, 4.0, 9.0])), torch.diag(torch.tensor([4.0, 1.0, 1.0]))
    # ||mu1 - mu2||^2 + Σ (sqrt(s1) - sqrt(s2))^2 for diagonal covariances
    expected = 5.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-10)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-10)
    # singular covariances need no eps offset
    zero = torch.zeros(3, 3)
    assert frechet_distance(mu1, zero, mu2, s2) == pytest.approx(5.0 + 6.0, abs=1e-10)


def test_fid_from_features_matches_the_closed_form() -> None:
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    d = 6
    a, b = torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(d, d, generator=g, dtype=torch.float64)
    cov1, cov2 = a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64), b @ b.T + 0.1 * torch.eye(d, dtype=torch.float64)
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    f1, f2 = _with_statistics(50, mu1, cov1, 1), _with_statistics(70, mu2, cov2, 2)
    # pytorch-fid's formula with scipy's sqrtm as the reference
    covmean = linalg.sqrtm(cov1.numpy() @ cov2.numpy()).real
    expected = float((mu1 - mu2).dot(mu1 - mu2) + cov1.trace() + cov2.trace() - 2 * np.trace(covmean))
    assert fid_from_features(f1, f2) == pytest.approx(expected, rel=1e-9)
    assert fid_from_features(f1.float(), f2.float()) == pytest.approx(expected, rel=1e-4)
    assert fid_from_features(f1, f1) == pytest.approx(0.0, abs=1e-8)
    # fewer samples than dimensions (singular covariances): the sample-space formula gives the covariance one's value
    few_a, few_b = torch.randn(12, 64, generator=g), torch.randn(9, 64, generator=g) + 0.3
    covariance_form = frechet_distance(
        few_a.double().mean(0), few_a.double().T.cov(), few_b.double().mean(0), few_b.double().T.cov()
    )
    # (rel 1e-5: in the covariance form the zero eigenvalues come out at rounding level and their roots add up)
    assert fid_from_features(few_a, few_b) == pytest.approx(covariance_form, rel=1e-5)
    assert fid_from_features(few_a, few_a) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="same feature size"):
        fid_from_features(f1, f2[:, :3])
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_features(f1[:1], f2)


def _kid_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2, cubic polynomial kernel, whole sets of equal size (clean-fid's formula, loops spelled out)."""
    m, d = x.shape

    def k(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        return (p @ q.T / d + 1) ** 3

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(off - 2 * kxy.sum() / m**2)


def test_kid() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 16, generator=g)
    y = torch.randn(40, 16, generator=g)
    # subsets as large as the sets: every subset is a permutation of the whole set, so the value is exact
    mean, std = kid_from_features(x, y + 0.5, subsets=3, subset_size=1000)
    assert mean == pytest.approx(_kid_reference(x.double().numpy(), (y + 0.5).double().numpy()), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-12)
    # a set against itself (small subsets of a large pool) and against another sample of its distribution: ~0;
    # against a shifted copy: clearly positive
    pool = torch.randn(400, 16, generator=g)
    same, _ = kid_from_features(pool, pool, subsets=20, subset_size=20)
    near, near_std = kid_from_features(pool, torch.randn(400, 16, generator=g), subsets=20, subset_size=20)
    shifted, _ = kid_from_features(pool, pool + 1.0, subsets=20, subset_size=20)
    assert shifted > 1.0 and abs(same) < shifted / 50 and abs(near) < shifted / 50 and near_std > 0
    assert kid_from_features(x, y, subsets=10, subset_size=20, seed=3) == kid_from_features(
        x, y, subsets=10, subset_size=20, seed=3
    )
    with pytest.raises(ValueError, match="subset_size >= 2"):
        kid_from_features(x, y, subset_size=1)


# ---------------------------------------------------------------------------------------------------
# FID Inception-v3


def test_inception_layout_is_torchvision_inception3() -> None:
    """pytorch-fid's weight file is a torchvision Inception3(num_classes=1008, aux_logits=False) state dict."""
    ours = FIDInceptionV3().state_dict()
    tv = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    theirs = tv.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in theirs)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised FIDInceptionV3 with non-trivial BatchNorm statistics, saved as a plain state dict."""
    torch.manual_seed(0)
    model = FIDInceptionV3()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("inception") / WEIGHTS_FILE
    torch.save(model.state_dict(), path)
    return path


def test_inception_loads_its_weight_file(inception_file: Path, tmp_path: Path) -> None:
    state = torch.load(inception_file, weights_only=True)
    model = load_fid_inception(inception_file)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])
    features = model(_images(2, 64, 48))
    assert features.shape == (2, 2048) and (features >= 0).all()
    assert model.logits(features).shape == (2, 1008)
    # files written before BatchNorm counted batches lack num_batches_tracked: still loads
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    load_fid_inception(tmp_path / "old.pth")


def test_inception_strict_loading_errors(inception_file: Path, tmp_path: Path) -> None:
    state = torch.load(inception_file, weights_only=True)
    del state["Mixed_6b.branch7x7_2.conv.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"missing.*Mixed_6b\.branch7x7_2\.conv\.weight"):
        load_fid_inception(tmp_path / "cut.pth")
    state = torch.load(inception_file, weights_only=True)
    state["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"'fc.weight' has shape \[1000, 2048\]"):
        load_fid_inception(tmp_path / "shape.pth")


def test_inception_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inception_file: Path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match=rf"{WEIGHTS_FILE}.*{ENV_VAR}"):
        load_fid_inception()
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / WEIGHTS_FILE}.*{WEIGHTS_FILE}"):
        InceptionFeatures(tmp_path)
    monkeypatch.setenv(ENV_VAR, str(inception_file.parent))  # a folder holding the standard name
    assert isinstance(load_fid_inception(), FIDInceptionV3)


def test_inception_matches_pytorch_fid(inception_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same features as pytorch-fid's InceptionV3 (block 3) given the same weights (when pytorch-fid is installed)."""
    pfi = pytest.importorskip("pytorch_fid.inception")
    state = torch.load(inception_file, weights_only=True)
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *args, **kwargs: state)
    reference = pfi.InceptionV3([3]).eval()
    images = _images(2, 72, 56)
    with torch.no_grad():
        expected = reference(images)[0].flatten(1)
    torch.testing.assert_close(load_fid_inception(inception_file)(images), expected, atol=1e-5, rtol=1e-5)


def test_fid_and_kid_of_images(inception_file: Path) -> None:
    features = InceptionFeatures(inception_file, batch_size=2)
    a, b = _images(3, 48, 48), _images(3, 48, 48, seed=1)
    fa = features(a)
    assert fa.shape == (3, 2048) and fa.device.type == "cpu"
    torch.testing.assert_close(features([a[:2], a[2:]]), fa)  # an iterable of batches
    fb = features(b)
    assert fid(a, b, features) == pytest.approx(fid_from_features(fa, fb)) and fid_from_features(fa, fb) > 0
    assert fid(a, a, features) == pytest.approx(0.0, abs=1e-6)
    mean, std = kid(a, b, features, subsets=2)
    assert mean == pytest.approx(kid_from_features(fa, fb, subsets=2)[0]) and std >= 0
    with pytest.raises(ValueError, match="no images"):
        features([])
