"""The StyleGAN2 discriminator (NVlabs stylegan2-ada layout and names), used by the demo-bundle trainer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from stylegan2_ops import downsample2d, setup_filter

from ..shapes import check_shape
from .layers import DEFAULT_RESAMPLE_FILTER, Conv2dLayer, FullyConnectedLayer
from .synthesis import MappingNetwork


class DiscriminatorBlock(torch.nn.Module):
    """One resolution: (fromRGB), conv0, downsampling conv1, and the resnet skip."""

    def __init__(
        self,
        in_channels: int,                                   # Input channels, 0 = first block (reads the image).
        tmp_channels: int,                                  # Channels of the intermediate layer.
        out_channels: int,                                  # Output channels.
        resolution: int,                                    # Resolution of this block.
        img_channels: int,                                  # Number of image channels.
        first_layer_idx: int,                               # Index of this block's first layer (for freezing).
        architecture: str = "resnet",                       # 'orig', 'skip' or 'resnet'.
        activation: str = "lrelu",                          # Activation function.
        resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,  # Low-pass filter for downsampling.
        conv_clamp: float | None = None,                    # Clamp conv outputs to +-X, None = no clamping.
        use_fp16: bool = False,                             # Run this block in float16 (on CUDA)?
        fp16_channels_last: bool = False,                   # Channels-last memory format with float16?
        freeze_layers: int = 0,                             # Freeze-D: number of leading layers kept frozen.
    ):
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"DiscriminatorBlock: unknown architecture {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", setup_filter(resample_filter))

        self.num_layers = 0

        def trainable() -> bool:
            layer_idx = self.first_layer_idx + self.num_layers
            self.num_layers += 1
            return layer_idx >= freeze_layers

        common = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, trainable=trainable(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, trainable=trainable(), **common)
        self.conv1 = Conv2dLayer(
            tmp_channels, out_channels, kernel_size=3, down=2, trainable=trainable(), resample_filter=resample_filter,
            **common,
        )
        if architecture == "resnet":
            self.skip = Conv2dLayer(
                tmp_channels, out_channels, kernel_size=1, bias=False, down=2, trainable=trainable(),
                resample_filter=resample_filter, channels_last=self.channels_last,
            )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, force_fp32: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = (x if x is not None else img).device
        use_fp16 = self.use_fp16 and not force_fp32 and device.type == "cuda"
        dtype = torch.float16 if use_fp16 else torch.float32
        memory_format = torch.channels_last if self.channels_last and use_fp16 else torch.contiguous_format

        if x is not None:
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == "skip":
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None

        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img


class MinibatchStdLayer(torch.nn.Module):
    """Append the across-group standard deviation of features as extra channels."""

    def __init__(
        self,
        group_size: int | None,     # Samples per group, None = the whole minibatch.
        num_channels: int = 1,      # Number of appended feature channels.
    ):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g:
            raise ValueError(f"MinibatchStdLayer: batch size {n} is not divisible by the group size {g}")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)   # [GnFcHW]
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)              # [nFcHW] variance over the group
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])               # [nF]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 head: minibatch std, conv, fc, output (projected onto the mapped label if conditional)."""

    def __init__(
        self,
        in_channels: int,                   # Number of input channels.
        cmap_dim: int,                      # Mapped label dimensionality, 0 = unconditional.
        resolution: int,                    # Resolution of this block (4).
        img_channels: int,                  # Number of image channels.
        architecture: str = "resnet",       # 'orig', 'skip' or 'resnet'.
        mbstd_group_size: int | None = 4,   # Minibatch-std group size, None = whole minibatch.
        mbstd_num_channels: int = 1,        # Minibatch-std features, 0 = disable.
        activation: str = "lrelu",          # Activation function.
        conv_clamp: float | None = None,    # Clamp conv outputs to +-X, None = no clamping.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None) -> torch.Tensor:
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(dtype=torch.float32, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(torch.nn.Module):
    """StyleGAN2 discriminator: image [N, C, R, R] in [-1, 1] -> logits [N, 1]."""

    def __init__(
        self,
        c_dim: int,                             # Conditioning label (C) dimensionality, 0 = none.
        img_resolution: int,                    # Input resolution.
        img_channels: int,                      # Number of image channels.
        architecture: str = "resnet",           # 'orig', 'skip' or 'resnet'.
        channel_base: int = 32768,              # Channels at resolution r = min(channel_base // r, channel_max).
        channel_max: int = 512,                 # Maximum number of channels in any layer.
        num_fp16_res: int = 0,                  # Run the N highest resolutions in float16 (on CUDA).
        conv_clamp: float | None = None,        # Clamp conv outputs to +-X, None = no clamping.
        cmap_dim: int | None = None,            # Mapped label dimensionality, None = channels at 4x4.
        block_kwargs: dict | None = None,       # Arguments for DiscriminatorBlock.
        mapping_kwargs: dict | None = None,     # Arguments for the label MappingNetwork.
        epilogue_kwargs: dict | None = None,    # Arguments for DiscriminatorEpilogue.
    ):
        super().__init__()
        block_kwargs = dict(block_kwargs or {})
        mapping_kwargs = dict(mapping_kwargs or {})
        epilogue_kwargs = dict(epilogue_kwargs or {})
        self.init_kwargs = dict(
            c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels, architecture=architecture,
            channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
            cmap_dim=cmap_dim, block_kwargs=dict(block_kwargs), mapping_kwargs=dict(mapping_kwargs),
            epilogue_kwargs=dict(epilogue_kwargs),
        )
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"Discriminator: img_resolution must be a power of two >= 4, got {img_resolution}")
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < img_resolution else 0, channels[res], channels[res // 2], resolution=res,
                first_layer_idx=layer_idx, use_fp16=(res >= fp16_resolution), **block_kwargs, **common,
            )
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **mapping_kwargs
            )
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None, force_fp32: bool = False, **_: Any):
        check_shape("img", img, [None, self.img_channels, self.img_resolution, self.img_resolution])
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
        cmap = None
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"Discriminator: this discriminator is conditional (c_dim={self.c_dim}); pass c")
            cmap = self.mapping(None, c)
        return self.b4(x, img, cmap)
