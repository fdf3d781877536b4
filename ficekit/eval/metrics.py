"""Image-edit metrics: batched, device-agnostic, one value per image (or per set for FID/KID).

Images are float tensors [N,3,H,W] RGB in [0,1]; masks are [N,1,H,W] (or [1,1,H,W], broadcast) in [0,1]
where 1 = the pixel counts (a soft mask weights pixels). Model-based metrics run on their model's device
and return results on the images' device, without gradients. Nothing here downloads: every weight file
(LPIPS backbone, FID Inception) comes from a local path, and a missing one raises FileNotFoundError naming
the standard file.

| metric         | better | range                         | notes                                      |
|----------------|--------|-------------------------------|--------------------------------------------|
| psnr           | higher | [0, inf] dB (inf = identical) | masked mean squared error                  |
| ssim           | higher | [-1, 1] (1 = identical)       | 11x11 Gaussian window, sigma 1.5           |
| LpipsDistance  | lower  | [0, ~1] (0 = identical)       | lpips package, AlexNet/VGG/SqueezeNet      |
| clip_score     | higher | [0, 100]                      | 100 * max(cos(image, text), 0)             |
| part_iou       | higher | [0, 1]                        | DensePose body-part index maps             |
| pose_distance  | both   | part_iou [0,1] / uv_mae >= 0  | uv_mae lower is better                     |
| fid            | lower  | [0, inf)                      | FID Inception-v3 pool features             |
| kid            | lower  | ~0 for equal distributions    | unbiased MMD^2, may dip slightly below 0   |
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ficekit.checkpoint_io import CheckpointError, load_torch_file
from ficekit.eval.inception import load_fid_inception
from ficekit.shapes import check_shape

if TYPE_CHECKING:
    from ficekit.perception.clip import ClipGuide
    from ficekit.perception.densepose import DensePoseChartModel

__all__ = [
    "psnr",
    "ssim",
    "LpipsDistance",
    "LPIPS_BACKBONE_FILES",
    "clip_score",
    "part_iou",
    "pose_distance",
    "densepose_maps",
    "InceptionFeatures",
    "frechet_distance",
    "fid_from_features",
    "kid_from_features",
    "fid",
    "kid",
]

_RANGE_TOL = 1e-3  # relative slack on the [0, max_val] range check (float rounding, resampling)


# ---------------------------------------------------------------------------------------------------
# Argument checks shared by the metrics.


def _check_images(name: str, x: torch.Tensor, max_val: float = 1.0) -> None:
    check_shape(name, x, [None, 3, None, None])
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor in [0, {max_val:g}], got dtype {x.dtype}")
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < -_RANGE_TOL * max_val or hi > max_val * (1 + _RANGE_TOL):
            raise ValueError(
                f"{name}: values must lie in [0, {max_val:g}], got min {lo:.4g}, max {hi:.4g} "
                f"(map [-1,1] images with (x + 1) / 2, 0-255 images with x / 255; clamp generator outputs)"
            )


def _check_pair(a: torch.Tensor, b: torch.Tensor, max_val: float = 1.0) -> None:
    _check_images("a", a, max_val)
    _check_images("b", b, max_val)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape [N,3,H,W], got a {list(a.shape)} and b {list(b.shape)}")


def _check_mask(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """`mask` as a float tensor [N,1,H,W] on the images' device (a [1,1,H,W] mask is broadcast)."""
    n, _, h, w = images.shape
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask: expected a torch.Tensor [N,1,H,W], got {type(mask).__name__}")
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] not in (1, n) or tuple(mask.shape[2:]) != (h, w):
        raise ValueError(
            f"mask: expected shape [{n}, 1, {h}, {w}] (or [1, 1, {h}, {w}]) to match images {list(images.shape)}, "
            f"got {list(mask.shape)}"
        )
    mask = mask.to(device=images.device, dtype=torch.promote_types(images.dtype, torch.float32))
    if mask.numel() and (float(mask.min()) < 0 or float(mask.max()) > 1):
        raise ValueError(
            f"mask: values must lie in [0, 1], got min {float(mask.min()):.4g}, max {float(mask.max()):.4g}"
        )
    return mask.expand(n, 1, h, w)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, metric: str) -> torch.Tensor:
    """Per-image mean of values [N,C,H,W] over mask [N,1,H,W] weights (and channels); empty masks raise."""
    weight = mask.sum(dim=(1, 2, 3))
    empty = (weight <= 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{metric}: the mask selects no pixel of image(s) {empty}; nothing to measure there")
    total = (values * mask).sum(dim=(1, 2, 3))
    return total / (weight * values.shape[1])


def _result_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


# ---------------------------------------------------------------------------------------------------
# Pixel metrics.


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, max_val: float = 1.0) -> torch.Tensor:
    """PSNR in dB [N] over the (masked) pixels, all channels: 10 log10(max_val^2 / MSE). Higher is better;
    range [0, inf], +inf where the masked MSE is exactly 0. Raises ValueError for an empty mask."""
    _check_pair(a, b, max_val)
    diff2 = (a.double() - b.double()).square()
    if mask is None:
        mse = diff2.flatten(1).mean(dim=1)
    else:
        mse = _masked_mean(diff2, _check_mask(mask, a).double(), "psnr")
    return (10 * torch.log10(max_val**2 / mse)).to(_result_dtype(a))


def _gaussian_kernel(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_valid(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable depthwise Gaussian filter without padding ('valid'): [N,C,H,W] -> [N,C,H-k+1,W-k+1]."""
    c, k = x.shape[1], kernel.numel()
    x = F.conv2d(x, kernel.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, kernel.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    mask: torch.Tensor | None = None,
    max_val: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """SSIM [N] (Wang et al. 2004): Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03, per channel, valid
    region only, as pytorch-msssim and skimage (gaussian_weights, use_sample_covariance=False); the SSIM map
    is averaged over channels and the mask's pixels (the mask cropped to the valid region, window // 2 per
    side). Higher is better; range [-1, 1], 1 = identical."""
    _check_pair(a, b, max_val)
    h, w = a.shape[-2:]
    if h < window or w < window:
        raise ValueError(f"ssim: images must be at least {window}x{window} (the window), got {h}x{w}")
    dtype = _result_dtype(a)
    x, y = a.to(dtype), b.to(dtype)
    kernel = _gaussian_kernel(window, sigma, dtype, a.device)
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mu_x, mu_y = _blur_valid(x, kernel), _blur_valid(y, kernel)
    var_x = _blur_valid(x * x, kernel) - mu_x**2
    var_y = _blur_valid(y * y, kernel) - mu_y**2
    cov = _blur_valid(x * y, kernel) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    structure = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = luminance * structure  # [N,3,H-window+1,W-window+1]
    if mask is None:
        return ssim_map.flatten(1).mean(dim=1)
    r = window // 2
    cropped = _check_mask(mask, a)[..., r : h - (window - 1 - r), r : w - (window - 1 - r)]
    return _masked_mean(ssim_map, cropped, "ssim (mask cropped to the valid region)")


# ---------------------------------------------------------------------------------------------------
# LPIPS.

# torchvision's ImageNet weight files of the LPIPS backbones (IMAGENET1K_V1, what lpips itself would download).
LPIPS_BACKBONE_FILES: dict[str, str] = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
_TORCHVISION_URL = "https://download.pytorch.org/models/"


def _import_lpips() -> Any:
    try:
        import lpips
    except ImportError as e:
        raise ImportError(
            'LpipsDistance needs the lpips package: pip install "ficekit[eval]" (or pip install lpips)'
        ) from e
    return lpips


class LpipsDistance(nn.Module):
    """LPIPS v0.1 distance [N] (Zhang et al. 2018, the `lpips` package) between [0,1] images. Lower is better;
    range [0, ~1], 0 = identical. Linear-layer weights ship with lpips; the backbone's ImageNet weights come
    from a local torchvision file (never downloaded).

    Unmasked: the standard LPIPS (each layer's map averaged at its own resolution). Masked: lpips's spatial map
    (every layer upsampled to H x W, summed) averaged over the mask's pixels.
    """

    def __init__(
        self,
        backbone_path: str | os.PathLike,  # torchvision ImageNet weights of the backbone, or a folder holding them
        net: str = "alex",  # 'alex' | 'vgg' | 'squeeze'
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        if net not in LPIPS_BACKBONE_FILES:
            raise ValueError(f"LpipsDistance net: expected one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}")
        lpips = _import_lpips()
        self.net_name = net
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False`
            warnings.simplefilter("ignore", UserWarning)
            # pnet_rand: torchvision builds the backbone with random weights (no download); pretrained: the
            # linear layers load from the weights inside the lpips package.
            self.model = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)
        self._load_backbone(backbone_path)
        self.model.requires_grad_(False)
        super().train(False)
        self.to(device)

    def _load_backbone(self, path: str | os.PathLike) -> None:
        name = LPIPS_BACKBONE_FILES[self.net_name]
        what = f"LPIPS '{self.net_name}' backbone weights"
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / name
        if not p.is_file():
            raise FileNotFoundError(
                f"{what}: file not found: {p}. Expected torchvision's ImageNet weights {name} (download it once, "
                f"explicitly, from {_TORCHVISION_URL}{name}, or reuse torchvision's cached copy in "
                f"~/.cache/torch/hub/checkpoints/) and pass its path or folder"
            )
        state = load_torch_file(p, what)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{what}: {p} holds a {type(state).__name__}, expected a torchvision state dict")
        # lpips splits torchvision's `features` Sequential into slices keeping the layer indices:
        # net.sliceK.<i>.<param> <- features.<i>.<param>.
        own = self.model.net.state_dict()
        mapped = {}
        for key, ref in own.items():
            source = "features." + key.split(".", 1)[1]
            if source not in state:
                raise CheckpointError(
                    f"{what}: {p} lacks {source!r}; expected torchvision's {name} state dict "
                    f"(keys features.*), it has {sorted(map(str, state))[:6]}"
                )
            value = state[source]
            if not isinstance(value, torch.Tensor) or value.shape != ref.shape:
                got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise CheckpointError(f"{what}: {p}: entry {source!r} is {got}, the backbone expects {list(ref.shape)}")
            mapped[key] = value
        self.model.net.load_state_dict(mapped, strict=True)

    def train(self, mode: bool = True) -> LpipsDistance:
        """Frozen metric: stays in eval mode whatever `mode` is."""
        return super().train(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """LPIPS [N] between images a and b [N,3,H,W] in [0,1], optionally averaged over mask [N,1,H,W]."""
        _check_pair(a, b)
        device = self.model.scaling_layer.shift.device
        x, y = a.to(device=device, dtype=torch.float32), b.to(device=device, dtype=torch.float32)
        with torch.no_grad():
            if mask is None:
                d = self.model(x, y, normalize=True).flatten()
            else:
                m = _check_mask(mask, x)
                self.model.spatial = True  # lpips reads this flag in forward: per-layer maps upsampled to H x W
                try:
                    spatial = self.model(x, y, normalize=True)
                finally:
                    self.model.spatial = False
                d = _masked_mean(spatial, m, "LPIPS")
        return d.to(a.device)


# ---------------------------------------------------------------------------------------------------
# CLIP score.


def clip_score(
    guide: ClipGuide, images: torch.Tensor, texts: str | Sequence[str], batch_size: int = 64
) -> torch.Tensor:
    """CLIPScore [N] = 100 * max(cos(CLIP(image_n), CLIP(text_n)), 0), torchmetrics' convention, with any
    ClipGuide (so the judge CLIP can differ from the editing one). `texts`: one per image, or one for all.
    Higher is better; range [0, 100]."""
    _check_images("images", images)
    n = images.shape[0]
    if isinstance(texts, str):
        texts = [texts] * n
    if not isinstance(texts, Sequence) or len(texts) != n or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"texts: expected one string or a list of {n} strings (one per image), got {texts!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    device = guide.mean.device
    with torch.no_grad():
        image_features = torch.cat([guide.encode_image(chunk.to(device)) for chunk in images.split(batch_size)])
        text_features = guide.encode_text(list(texts))
    cos = (F.normalize(image_features.float(), dim=-1) * F.normalize(text_features.float(), dim=-1)).sum(dim=-1)
    return (100 * cos.clamp(min=0)).to(images.device)


# ---------------------------------------------------------------------------------------------------
# Pose: DensePose part maps.


def _check_parts(name: str, parts: torch.Tensor, num_parts: int) -> None:
    check_shape(name, parts, [None, None, None])
    if parts.is_floating_point() or parts.is_complex() or parts.dtype == torch.bool:
        raise ValueError(f"{name}: expected an integer part-index map [N,H,W], got dtype {parts.dtype}")
    if parts.numel() and (int(parts.min()) < 0 or int(parts.max()) > num_parts):
        raise ValueError(
            f"{name}: part indices must lie in [0, {num_parts}] (0 = background), "
            f"got min {int(parts.min())}, max {int(parts.max())}"
        )


def part_iou(parts_a: torch.Tensor, parts_b: torch.Tensor, num_parts: int = 24) -> torch.Tensor:
    """Mean IoU [N] over the body parts (1..num_parts) present in either DensePose index map [N,H,W]
    (0 = background); 1.0 when both maps are all background. Higher is better; range [0, 1]."""
    _check_parts("parts_a", parts_a, num_parts)
    _check_parts("parts_b", parts_b, num_parts)
    if parts_a.shape != parts_b.shape:
        raise ValueError(
            f"parts_a and parts_b must have the same shape [N,H,W], got {list(parts_a.shape)} and {list(parts_b.shape)}"
        )
    n, k = parts_a.shape[0], num_parts + 1
    b = parts_b.to(parts_a.device).long()
    # Joint histogram per image: conf[i, p, q] = pixels with part p in a and part q in b.
    index = torch.arange(n, device=parts_a.device).view(n, 1) * k * k + parts_a.long().flatten(1) * k + b.flatten(1)
    conf = torch.bincount(index.flatten(), minlength=n * k * k).view(n, k, k).double()
    inter = conf.diagonal(dim1=1, dim2=2)[:, 1:]
    union = conf.sum(dim=2)[:, 1:] + conf.sum(dim=1)[:, 1:] - inter
    present = union > 0
    iou = torch.where(present, inter / union.clamp(min=1), torch.zeros_like(inter))
    count = present.sum(dim=1)
    mean = iou.sum(dim=1) / count.clamp(min=1)
    return torch.where(count > 0, mean, torch.ones_like(mean)).float()


def pose_distance(
    dp_a: tuple[torch.Tensor, torch.Tensor], dp_b: tuple[torch.Tensor, torch.Tensor], num_parts: int = 24
) -> dict[str, torch.Tensor]:
    """Pose change between two DensePose readings (I [N,H,W], UV [N,2,H,W], as densepose_maps returns):
    'part_iou' [N] (higher is better, [0,1]) and 'uv_mae' [N], the mean |U,V difference| over pixels where
    both have the same body part (lower is better, >= 0; NaN where no pixel shares a part)."""
    (ia, uva), (ib, uvb) = dp_a, dp_b
    iou = part_iou(ia, ib, num_parts)
    n, h, w = ia.shape
    check_shape("dp_a UV", uva, [n, 2, h, w])
    check_shape("dp_b UV", uvb, [n, 2, h, w])
    same = ((ia == ib.to(ia.device)) & (ia > 0)).to(_result_dtype(uva))
    diff = (uva - uvb.to(uva.device)).abs().mean(dim=1)
    count = same.sum(dim=(1, 2))
    mae = (diff * same).sum(dim=(1, 2)) / count.clamp(min=1)
    return {"part_iou": iou, "uv_mae": torch.where(count > 0, mae, torch.full_like(mae, float("nan")))}


def densepose_maps(
    model: DensePoseChartModel, images: torch.Tensor, batch_size: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel DensePose reading at the images' resolution: I [N,H,W] long (0 = background, 1..24 parts) and
    UV [N,2,H,W] (the chart coordinates of pixel's part, 0 on background; raw regressions, nominally [0,1]).

    One whole-image box per image (FICE's use). I = argmax of ficekit.masking.densepose_part_maps (the part
    probabilities masking uses: softmax(fine) * P(person), resampled bilinearly to the image), which can
    differ at part borders from detectron2's argmax(fine) * [argmax(coarse) > 0]; U and V are the chart
    predictions resampled the same way and read in the chosen part's channel.
    """
    from ficekit.masking import densepose_part_maps

    _check_images("images", images)
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    device = next(model.parameters()).device
    h, w = images.shape[-2:]
    labels_out, uv_out = [], []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            x = chunk.to(device)
            out = model(x)
            labels = densepose_part_maps(out, (h, w), x.shape[0]).argmax(dim=1)  # [n,H,W]
            c = out.u.shape[1]
            uv = torch.cat([out.u, out.v], dim=1)
            # The box is the whole image, so resampling its S x S grid is a plain bilinear resize.
            uv = F.interpolate(uv, size=(h, w), mode="bilinear", align_corners=False)
            index = labels.unsqueeze(1)
            picked = torch.cat([uv[:, :c].gather(1, index), uv[:, c:].gather(1, index)], dim=1)
            labels_out.append(labels.to(images.device))
            uv_out.append((picked * (index > 0)).to(images.device))
    return torch.cat(labels_out), torch.cat(uv_out)


# ---------------------------------------------------------------------------------------------------
# FID / KID.


class InceptionFeatures(nn.Module):
    """FID Inception-v3 pool features (pytorch-fid's network and weights) of [0,1] images, in batches.

    Weights: `path` (file or folder) or $FICEKIT_INCEPTION; see ficekit.eval.inception.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,  # pt_inception-2015-12-05-6726825d.pth or its folder; None = env
        device: str | torch.device = "cpu",
        batch_size: int = 50,  # images per forward pass
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.model = load_fid_inception(path, device)
        self.batch_size = batch_size
        super().train(False)

    def train(self, mode: bool = True) -> InceptionFeatures:
        """Frozen network: stays in eval mode whatever `mode` is."""
        return super().train(False)

    def forward(self, images: torch.Tensor | Iterable[torch.Tensor]) -> torch.Tensor:
        """Features [N,2048] float32 on the CPU of images [N,3,H,W] in [0,1], or of an iterable of such batches."""
        batches = images.split(self.batch_size) if isinstance(images, torch.Tensor) else images
        device = self.model.fc.weight.device
        out = []
        with torch.no_grad():
            for i, batch in enumerate(batches):
                _check_images(f"images (batch {i})", batch)
                for chunk in batch.split(self.batch_size):
                    out.append(self.model(chunk.to(device=device, dtype=torch.float32)).cpu())
        if not out:
            raise ValueError("InceptionFeatures: no images given")
        return torch.cat(out)


def _check_features(name: str, f: torch.Tensor, min_rows: int) -> torch.Tensor:
    check_shape(name, f, [None, None])
    if f.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} feature rows, got {f.shape[0]}")
    f = f.detach().double()
    if not torch.isfinite(f).all():
        raise ValueError(f"{name}: holds NaN or infinite values")
    return f


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Fréchet distance ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians (float64).

    Tr (S1 S2)^(1/2) = Σ sqrt(eig(S1^(1/2) S2 S1^(1/2))), a symmetric PSD form that needs no complex sqrtm nor
    an eps offset when a covariance is singular. Clamped at 0 (rounding). Lower is better; range [0, inf).
    """
    mu1, mu2 = mu1.detach().double().flatten(), mu2.detach().double().flatten()
    d = mu1.numel()
    check_shape("mu2", mu2, [d])
    check_shape("sigma1", sigma1, [d, d])
    check_shape("sigma2", sigma2, [d, d])
    s1 = sigma1.detach().double().to(mu1.device)
    s2 = sigma2.detach().double().to(mu1.device)
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    w1, v1 = torch.linalg.eigh(s1)
    root1 = (v1 * w1.clamp(min=0).sqrt()) @ v1.T
    inner = root1 @ s2 @ root1
    tr_covmean = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2.to(mu1.device)
    value = diff.dot(diff) + s1.trace() + s2.trace() - 2 * tr_covmean
    return max(float(value), 0.0)


def _mean_cov(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu = f.mean(dim=0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)  # unbiased, as numpy.cov(rowvar=False)


def fid_from_features(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """FID between two feature sets [N1,D], [N2,D]: the Fréchet distance of their Gaussian fits (mean, unbiased
    covariance), as pytorch-fid. Lower is better; range [0, inf), 0 = same statistics.

    With fewer samples than dimensions the covariances are never formed: with centred features A1, A2,
    Tr (S1 S2)^(1/2) = ||A1 A2^T||_* / sqrt((N1-1)(N2-1)) (nuclear norm), the same value at O(N1 N2 D) cost.
    """
    a, b = _check_features("f1", f1, 2), _check_features("f2", f2, 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"f1 and f2 must have the same feature size, got {list(f1.shape)} and {list(f2.shape)}")
    b = b.to(a.device)
    (n1, d), n2 = a.shape, b.shape[0]
    if min(n1, n2) >= d:
        return frechet_distance(*_mean_cov(a), *_mean_cov(b))
    mu1, mu2 = a.mean(dim=0), b.mean(dim=0)
    a_c, b_c = a - mu1, b - mu2
    # The nonzero eigenvalues of S1 S2 are those of B B^T, B = A1 A2^T / sqrt((N1-1)(N2-1)): their square roots
    # are B's singular values.
    tr_covmean = torch.linalg.svdvals(a_c @ b_c.T / math.sqrt((n1 - 1) * (n2 - 1))).sum()
    diff = mu1 - mu2
    value = diff.dot(diff) + a_c.square().sum() / (n1 - 1) + b_c.square().sum() / (n2 - 1) - 2 * tr_covmean
    return max(float(value), 0.0)


def kid_from_features(
    f1: torch.Tensor,
    f2: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> tuple[float, float]:
    """KID (mean, std over subsets): unbiased MMD^2 with the cubic polynomial kernel (x.y / D + 1)^3 on random
    subsets of min(subset_size, N1, N2) rows drawn without replacement, as torch-fidelity / clean-fid
    (std is the population std over subsets). Computed in float64 on `device` (default: f1's). Lower is
    better; ~0 for equal distributions (can dip below 0, e.g. for a set against itself, whose samples are not
    independent: the estimator then subtracts the kernel's diagonal)."""
    a, b = _check_features("f1", f1, 2), _check_features("f2", f2, 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"f1 and f2 must have the same feature size, got {list(f1.shape)} and {list(f2.shape)}")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"kid: needs subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    if device is not None:
        a = a.to(device)
    b = b.to(a.device)
    d = a.shape[1]
    m = min(subset_size, a.shape[0], b.shape[0])
    generator = torch.Generator().manual_seed(seed)
    mmds = []
    for _ in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=generator)[:m].to(a.device)]
        y = b[torch.randperm(b.shape[0], generator=generator)[:m].to(a.device)]
        k_xx = (x @ x.T / d + 1) ** 3
        k_yy = (y @ y.T / d + 1) ** 3
        k_xy = (x @ y.T / d + 1) ** 3
        within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
        mmds.append(within - 2 * k_xy.sum() / (m * m))
    values = torch.stack(mmds)
    return float(values.mean()), float(values.std(unbiased=False))


def fid(
    images_a: torch.Tensor | Iterable[torch.Tensor],
    images_b: torch.Tensor | Iterable[torch.Tensor],
    features: InceptionFeatures,
) -> float:
    """FID between two image sets ([N,3,H,W] in [0,1], or iterables of batches) with the FID Inception.
    Lower is better; range [0, inf). Use thousands of images per set: FID is biased at small N."""
    if not isinstance(features, InceptionFeatures):
        raise ValueError(f"features: expected an InceptionFeatures, got {type(features).__name__}")
    return fid_from_features(features(images_a), features(images_b))


def kid(
    images_a: torch.Tensor | Iterable[torch.Tensor],
    images_b: torch.Tensor | Iterable[torch.Tensor],
    features: InceptionFeatures,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (mean, std) between two image sets with the FID Inception (see kid_from_features). Lower is better."""
    if not isinstance(features, InceptionFeatures):
        raise ValueError(f"features: expected an InceptionFeatures, got {type(features).__name__}")
    device = features.model.fc.weight.device  # the kernel sums run where the network runs
    return kid_from_features(features(images_a), features(images_b), subsets, subset_size, seed, device)
