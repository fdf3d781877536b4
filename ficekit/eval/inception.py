"""The FID Inception-v3 in native PyTorch: the TensorFlow-ported network pytorch-fid and torch-fidelity use.

It is torchvision's Inception3 (1008 classes, no aux head) with the FID patches of pytorch-fid
(mseitzer/pytorch-fid b9c1811, src/pytorch_fid/inception.py): the Mixed_5b-5d (A), 6b-6e (C) and 7b (E)
blocks average-pool without counting the zero padding (TensorFlow's behaviour), and Mixed_7c max-pools in
its pool branch. Parameter names are torchvision's, so pytorch-fid's weight file
`pt_inception-2015-12-05-6726825d.pth` (a plain state dict) loads strictly. Input: RGB in [0,1], resized to
299x299 (bilinear, align_corners False, no antialias), scaled to [-1,1]; output: the 2048-d final pool.

Nothing here downloads: the weight file comes from a path argument or the FICEKIT_INCEPTION variable.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ficekit.checkpoint_io import CheckpointError, load_state_dict_strict, load_torch_file
from ficekit.shapes import check_shape

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
ENV_VAR = "FICEKIT_INCEPTION"
WHAT = "FID Inception-v3 weights"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TF graph's 1000 ImageNet classes + 8 unused


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU (`<name>.conv`, `<name>.bn`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that, like TensorFlow's, leaves the zero padding out of the average."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | TF avg pool-1x1 (Mixed_5b..5d)."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], dim=1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | max pool/2 (Mixed_6a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convs; TF avg pool in the pool branch (Mixed_6b..6e)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = x
        for i in range(1, 6):
            b7d = getattr(self, f"branch7x7dbl_{i}")(b7d)
        return torch.cat([self.branch1x1(x), b7, b7d, self.branch_pool(_tf_avg_pool(x))], dim=1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool/2 (Mixed_7a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 branches; pool branch 'avg' (TF-style, Mixed_7b) or 'max' (Mixed_7c)."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"InceptionE pool: expected 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], dim=1)
        # pytorch-fid keeps the TF graph's max pool in the last block (its "FIDInceptionE_2").
        pooled = _tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, b3d, self.branch_pool(pooled)], dim=1)


class FIDInceptionV3(nn.Module):
    """FID Inception-v3: images [N,3,H,W] RGB in [0,1] -> final-pool features [N,2048] (pytorch-fid's block 3).

    Parameter names follow torchvision's Inception3(num_classes=1008, aux_logits=False), as pytorch-fid's
    weight file does; `fc` (1008 logits) is kept so that file loads strictly (and for `logits`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, images: torch.Tensor, resize: bool = True) -> torch.Tensor:
        """Features [N,2048] of RGB images in [0,1]; `resize` = bilinear to 299x299 first (as pytorch-fid)."""
        check_shape("images", images, [None, 3, None, None])
        x = images
        if resize:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # [0,1] -> [-1,1], the TF graph's input range
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits [N,1008] from pool features [N,2048] (for Inception-Score-style uses)."""
        check_shape("features", features, [None, FEATURE_DIM])
        return self.fc(features)


# ---------------------------------------------------------------------------------------------------
# Loading.


def _missing(detail: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{WHAT}: {detail}. Expected pytorch-fid's weight file {WEIGHTS_FILE} (download it once, explicitly, "
        f"from {WEIGHTS_URL}); pass its path (or its folder) as the path argument, or set {ENV_VAR} to it"
    )


def resolve_inception_path(path: str | os.PathLike | None = None) -> Path:
    """The weight file: `path`, else $FICEKIT_INCEPTION; a folder means `<folder>/pt_inception-...pth`.

    Raises FileNotFoundError naming the standard file name and where to put it.
    """
    if path is None:
        env = os.environ.get(ENV_VAR)
        if not env:
            raise _missing(f"no path given and {ENV_VAR} is not set")
        path, source = env, f"{ENV_VAR}={env}"
    else:
        source = str(path)
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / WEIGHTS_FILE
    if not p.is_file():
        raise _missing(f"file not found: {p} (from {source})")
    return p


def load_fid_inception(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """FIDInceptionV3 with pytorch-fid's weights from `path` (see resolve_inception_path), frozen, in eval mode.

    The state dict must hold exactly the model's parameters and BatchNorm statistics (a file written before
    BatchNorm counted its batches may lack the `num_batches_tracked` counters; those are filled in). A
    missing, unexpected or mis-shaped entry raises CheckpointError naming the file and the first such key.
    """
    p = resolve_inception_path(path)
    state = load_torch_file(p, WHAT)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{WHAT}: {p} holds a {type(state).__name__}, expected a non-empty state dict")
    model = FIDInceptionV3()
    own = model.state_dict()
    state = dict(state)
    for key, value in own.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = value
    load_state_dict_strict(model, state, p, WHAT)
    model.eval().requires_grad_(False)
    return model.to(device)
