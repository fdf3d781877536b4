"""ResNet + FPN backbone as detectron2 builds it (FrozenBN, MSRA stride-in-1x1), with detectron2's parameter names.

Module attribute names mirror detectron2 (`stem.conv1.norm`, `res2.0.conv1`, `fpn_lateral2`, ...) so that a
detectron2 state dict loads without any renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Blocks per stage (res2..res5) for each supported depth, as detectron2's build_resnet_backbone.
RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine terms, all buffers: y = (x - mean) / sqrt(var + eps) * w + b."""

    def __init__(
        self,
        num_features: int,  # Channels.
        eps: float = 1e-5,  # Added to running_var before the square root (detectron2's value).
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # detectron2's differentiable form (it uses it whenever x requires grad); one path for both cases.
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class Conv2dNorm(nn.Conv2d):
    """Conv2d with an optional `norm` submodule and ReLU, like detectron2's layers.Conv2d (same state-dict names)."""

    def __init__(
        self,
        in_channels: int,  # Input channels.
        out_channels: int,  # Output channels.
        kernel_size: int,  # Square kernel size.
        stride: int = 1,  # Convolution stride.
        padding: int = 0,  # Zero padding on each side.
        bias: bool = True,  # Learnable bias (False when a norm follows).
        norm: bool = False,  # True = FrozenBatchNorm2d after the conv, stored as `.norm`.
        relu: bool = False,  # True = ReLU after the (normalised) conv.
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.norm = FrozenBatchNorm2d(out_channels) if norm else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


# ----------------------------------------------------------------------------------------------------------------


class BasicStem(nn.Module):
    """conv 7x7 stride 2 + FrozenBN + ReLU, then max-pool 3x3 stride 2: total stride 4."""

    def __init__(
        self,
        in_channels: int = 3,  # Image channels.
        out_channels: int = 64,  # Stem width (MODEL.RESNETS.STEM_OUT_CHANNELS).
    ) -> None:
        super().__init__()
        self.conv1 = Conv2dNorm(in_channels, out_channels, 7, stride=2, padding=3, bias=False, norm=True, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)


class BasicBlock(nn.Module):
    """ResNet-18/34 block: two 3x3 convs and a 1x1 projection shortcut when the width changes."""

    def __init__(
        self,
        in_channels: int,  # Input channels.
        out_channels: int,  # Output channels.
        stride: int = 1,  # Stride of the first conv (and of the shortcut).
    ) -> None:
        super().__init__()
        self.shortcut = (
            Conv2dNorm(in_channels, out_channels, 1, stride=stride, bias=False, norm=True)
            if in_channels != out_channels
            else None
        )
        self.conv1 = Conv2dNorm(
            in_channels, out_channels, 3, stride=stride, padding=1, bias=False, norm=True, relu=True
        )
        self.conv2 = Conv2dNorm(out_channels, out_channels, 3, padding=1, bias=False, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.conv2(self.conv1(x)) + shortcut)


class BottleneckBlock(nn.Module):
    """ResNet-50/101/152 block: 1x1, 3x3, 1x1 convs and a 1x1 projection shortcut when the width changes."""

    def __init__(
        self,
        in_channels: int,  # Input channels.
        out_channels: int,  # Output channels.
        bottleneck_channels: int,  # Width of the 3x3 conv.
        stride: int = 1,  # Block stride.
        stride_in_1x1: bool = True,  # True = stride in the first 1x1 conv (MSRA weights), False = in the 3x3.
    ) -> None:
        super().__init__()
        self.shortcut = (
            Conv2dNorm(in_channels, out_channels, 1, stride=stride, bias=False, norm=True)
            if in_channels != out_channels
            else None
        )
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2dNorm(
            in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False, norm=True, relu=True
        )
        self.conv2 = Conv2dNorm(
            bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=1, bias=False, norm=True, relu=True
        )
        self.conv3 = Conv2dNorm(bottleneck_channels, out_channels, 1, bias=False, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + shortcut)


class ResNet(nn.Module):
    """ResNet trunk returning res2..res5 (strides 4, 8, 16, 32), as detectron2's build_resnet_backbone."""

    def __init__(
        self,
        depth: int = 50,  # 18, 34 (BasicBlock) or 50, 101, 152 (BottleneckBlock).
        stem_out_channels: int = 64,  # Stem width.
        res2_out_channels: int = 256,  # Output width of res2, doubled per stage (64 for 18/34 in detectron2).
        bottleneck_channels: int = 64,  # 3x3 width in res2 (groups x width per group), doubled per stage.
        stride_in_1x1: bool = True,  # Where bottleneck blocks put their stride (True for MSRA weights).
    ) -> None:
        super().__init__()
        if depth not in RESNET_BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_BLOCKS)}, got {depth}")
        self.stem = BasicStem(3, stem_out_channels)
        in_channels, out_channels, bottleneck = stem_out_channels, res2_out_channels, bottleneck_channels
        self.out_channels: dict[str, int] = {}
        for index, num_blocks in enumerate(RESNET_BLOCKS[depth]):
            blocks = []
            for block_index in range(num_blocks):
                stride = 2 if index > 0 and block_index == 0 else 1
                if depth < 50:
                    blocks.append(BasicBlock(in_channels, out_channels, stride=stride))
                else:
                    block = BottleneckBlock(in_channels, out_channels, bottleneck, stride, stride_in_1x1)
                    blocks.append(block)
                in_channels = out_channels
            name = f"res{index + 2}"
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels[name] = out_channels
            out_channels *= 2
            bottleneck *= 2

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        out = {}
        for name in self.out_channels:
            x = getattr(self, name)(x)
            out[name] = x
        return out


class FPN(nn.Module):
    """Feature pyramid res2..res5 -> p2..p6: lateral 1x1, nearest x2 top-down sum, 3x3 output; p6 = p5[::2, ::2]."""

    def __init__(
        self,
        bottom_up: ResNet,  # Trunk whose res2..res5 feed the pyramid; stored as `.bottom_up`.
        out_channels: int = 256,  # Channels of every pyramid level (MODEL.FPN.OUT_CHANNELS).
    ) -> None:
        super().__init__()
        self.bottom_up = bottom_up
        self.levels = [int(name[3:]) for name in bottom_up.out_channels]  # [2, 3, 4, 5]
        for level, in_channels in zip(self.levels, bottom_up.out_channels.values(), strict=True):
            self.add_module(f"fpn_lateral{level}", Conv2dNorm(in_channels, out_channels, 1))
            self.add_module(f"fpn_output{level}", Conv2dNorm(out_channels, out_channels, 3, padding=1))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        bottom_up = self.bottom_up(x)
        out: dict[str, torch.Tensor] = {}
        top_down = None
        for level in reversed(self.levels):
            lateral = getattr(self, f"fpn_lateral{level}")(bottom_up[f"res{level}"])
            if top_down is not None:
                lateral = lateral + F.interpolate(top_down, scale_factor=2.0, mode="nearest")
            top_down = lateral
            out[f"p{level}"] = getattr(self, f"fpn_output{level}")(lateral)
        top = self.levels[-1]
        out[f"p{top + 1}"] = F.max_pool2d(out[f"p{top}"], kernel_size=1, stride=2, padding=0)
        return {name: out[name] for name in sorted(out)}  # sorted by name alone: torch.compile traces it
