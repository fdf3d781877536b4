"""The StyleGAN2 generator: mapping network (z -> w) and synthesis network (W+ -> image).

NVlabs stylegan2-ada layout and parameter names, so NVlabs and FICE state dicts load strictly.
Images come out NVlabs-style, nominally in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from stylegan2_ops import bias_act, setup_filter, upsample2d
from stylegan2_ops.bias_act import activation_funcs

from ..shapes import check_shape
from .layers import DEFAULT_RESAMPLE_FILTER, Conv2dLayer, FullyConnectedLayer, modulated_conv2d, normalize_2nd_moment

NOISE_MODES = ("const", "random", "none")

# ----------------------------------------------------------------------------- mapping


class MappingNetwork(torch.nn.Module):
    """z (and an optional label c) -> w, broadcast to num_ws rows, with truncation towards w_avg."""

    def __init__(
        self,
        z_dim: int,                           # Input latent (Z) dimensionality, 0 = no latent.
        c_dim: int,                           # Conditioning label (C) dimensionality, 0 = no label.
        w_dim: int,                           # Intermediate latent (W) dimensionality.
        num_ws: int | None,                   # Number of ws to output, None = do not broadcast.
        num_layers: int = 8,                  # Number of fully connected layers.
        embed_features: int | None = None,    # Label embedding size, None = w_dim.
        layer_features: int | None = None,    # Hidden layer size, None = w_dim.
        activation: str = "lrelu",            # Activation function.
        lr_multiplier: float = 0.01,          # Learning-rate multiplier of the layers.
        w_avg_beta: float | None = 0.995,     # Decay of the tracked mean w, None = do not track.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        skip_w_avg_update: bool = False,
    ) -> torch.Tensor:
        x = None
        if self.z_dim > 0:
            check_shape("z", z, [None, self.z_dim])
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"mapping: this generator is conditional (c_dim={self.c_dim}); pass c")
            check_shape("c", c, [None, self.c_dim])
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y

        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError("mapping: truncation needs a tracked w_avg (w_avg_beta is None)")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


# ----------------------------------------------------------------------------- synthesis layers


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution (optionally upsampling x2) + per-pixel noise + bias + activation."""

    def __init__(
        self,
        in_channels: int,                                   # Number of input channels.
        out_channels: int,                                  # Number of output channels.
        w_dim: int,                                         # W dimensionality.
        resolution: int,                                    # Output resolution of this layer.
        kernel_size: int = 3,                               # Convolution kernel size.
        up: int = 1,                                        # Integer upsampling factor.
        use_noise: bool = True,                             # Add per-pixel noise?
        activation: str = "lrelu",                          # Activation function.
        resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,  # Low-pass filter for upsampling.
        conv_clamp: float | None = None,                    # Clamp outputs to +-X, None = no clamping.
        channels_last: bool = False,                        # Store the weight channels-last?
    ):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = activation_funcs[activation].def_gain

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        )
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const", fused_modconv: bool = True, gain: float = 1
    ) -> torch.Tensor:
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength

        x = modulated_conv2d(
            x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
            resample_filter=self.resample_filter, flip_weight=(self.up == 1), fused_modconv=fused_modconv,
        )
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=act_clamp)


class ToRGBLayer(torch.nn.Module):
    """Modulated (not demodulated) 1x1 convolution to image channels."""

    def __init__(
        self,
        in_channels: int,               # Number of input channels.
        out_channels: int,              # Number of image channels.
        w_dim: int,                     # W dimensionality.
        kernel_size: int = 1,           # Convolution kernel size.
        conv_clamp: float | None = None,  # Clamp outputs to +-X, None = no clamping.
        channels_last: bool = False,    # Store the weight channels-last?
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        )
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: (upsampling conv0), conv1, and its toRGB / skip."""

    def __init__(
        self,
        in_channels: int,                                   # Input channels, 0 = first block (learned const).
        out_channels: int,                                  # Output channels.
        w_dim: int,                                         # W dimensionality.
        resolution: int,                                    # Resolution of this block.
        img_channels: int,                                  # Number of image channels.
        is_last: bool,                                      # Is this the last block?
        architecture: str = "skip",                         # 'orig', 'skip' or 'resnet'.
        resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,  # Low-pass filter for upsampling.
        conv_clamp: float | None = None,                    # Clamp conv outputs to +-X, None = no clamping.
        use_fp16: bool = False,                             # Run this block in float16 (on CUDA)?
        fp16_channels_last: bool = False,                   # Channels-last memory format with float16?
        **layer_kwargs: Any,                                # Arguments for SynthesisLayer.
    ):
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"SynthesisBlock: architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2, resample_filter=resample_filter,
                conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp,
            channels_last=self.channels_last, **layer_kwargs,
        )
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(
                out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp, channels_last=self.channels_last
            )
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels, out_channels, kernel_size=1, bias=False, up=2, resample_filter=resample_filter,
                channels_last=self.channels_last,
            )

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        **layer_kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w_iter = iter(ws.unbind(dim=1))
        # float16 only where it is fast and well supported: on CUDA.
        use_fp16 = self.use_fp16 and not force_fp32 and ws.device.type == "cuda"
        dtype = torch.float16 if use_fp16 else torch.float32
        memory_format = torch.channels_last if self.channels_last and use_fp16 else torch.contiguous_format
        if fused_modconv is None:
            fused_modconv = (not self.training) and (dtype == torch.float32 or int(ws.shape[0]) == 1)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        else:
            x = x.to(dtype=dtype, memory_format=memory_format)
            if self.architecture == "resnet":
                y = self.skip(x, gain=math.sqrt(0.5))
                x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
                x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=math.sqrt(0.5), **layer_kwargs)
                x = y.add_(x)
            else:
                x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
                x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y
        return x, img


class SynthesisNetwork(torch.nn.Module):
    """W+ [N, num_ws, w_dim] -> image [N, img_channels, R, R]; one SynthesisBlock per resolution 4..R."""

    def __init__(
        self,
        w_dim: int,                 # W dimensionality.
        img_resolution: int,        # Output resolution (a power of two >= 4).
        img_channels: int,          # Number of image channels.
        channel_base: int = 32768,  # Channels at resolution r = min(channel_base // r, channel_max).
        channel_max: int = 512,     # Maximum number of channels in any layer.
        num_fp16_res: int = 0,      # Run the N highest resolutions in float16 (on CUDA).
        **block_kwargs: Any,        # Arguments for SynthesisBlock (architecture, conv_clamp, ...).
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"SynthesisNetwork: img_resolution must be a power of two >= 4, got {img_resolution}")
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                img_channels=img_channels, is_last=is_last, use_fp16=(res >= fp16_resolution), **block_kwargs,
            )
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", force_fp32: bool = False, **block_kwargs: Any):
        check_shape("ws", ws, [None, self.num_ws, self.w_dim])
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"synthesis: noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            cur_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, cur_ws, force_fp32=force_fp32, noise_mode=noise_mode, **block_kwargs)
        return img


# ----------------------------------------------------------------------------- generator


class Generator(torch.nn.Module):
    """StyleGAN2 generator: `mapping(z) -> ws`, `synthesis(ws) -> image in [-1, 1]`.

    `init_kwargs` holds the constructor arguments, which is what FICE's generator.pt stores
    (as 'G_kwargs') so the architecture travels with the weights.
    """

    def __init__(
        self,
        z_dim: int,                                 # Input latent (Z) dimensionality.
        c_dim: int,                                 # Conditioning label (C) dimensionality, 0 = none.
        w_dim: int,                                 # W dimensionality.
        img_resolution: int,                        # Output resolution.
        img_channels: int,                          # Number of image channels.
        mapping_kwargs: dict | None = None,         # Arguments for MappingNetwork.
        synthesis_kwargs: dict | None = None,       # Arguments for SynthesisNetwork.
    ):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.init_kwargs = dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
            mapping_kwargs=dict(mapping_kwargs), synthesis_kwargs=dict(synthesis_kwargs),
        )
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        **synthesis_kwargs: Any,
    ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)


def to_01(img: torch.Tensor) -> torch.Tensor:
    """Generator output (NVlabs convention, nominally [-1, 1]) to ficekit's [0, 1] images, unclamped as FICE does."""
    return img * 0.5 + 0.5


def synthesize_01(G: Generator, ws: torch.Tensor, fused_modconv: bool | None = None) -> torch.Tensor:
    """G(W+) as [N, 3, H, W] in [0, 1] the way FICE renders during editing: const noise, float32.

    fused_modconv: None = the generator's own choice (FICE's: one grouped conv per layer in eval mode); False
    scales activations around the shared frozen conv weight instead, the same maths up to float rounding, and
    then a backward pass needs no gradient of the conv weights (they depend on ws only in the fused form).
    """
    return to_01(G.synthesis(ws, noise_mode="const", force_fp32=True, fused_modconv=fused_modconv))
