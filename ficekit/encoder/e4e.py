"""Encoder4Editing (e4e) with an IR-SE body: maps a photo to a StyleGAN W+ latent.

Parameter names follow omertov/encoder4editing and FICE (`models/e4e/model.py`), so their state
dicts load with strict key matching: `input_layer.{0,1,2}`, `body.<i>.res_layer.<j>`,
`body.<i>.shortcut_layer.<j>`, `styles.<k>.convs.<j>`, `styles.<k>.linear`, `latlayer1`,
`latlayer2`, `latent_avg`.

Data flow (256-px input, IR-SE-50):

    image_01 ─► x*2-1 (area-resize to input_size) ─► input_layer ─► body (4 stages of IR-SE units)
        taps: c1 = end of stage 2 (128 ch, 64²), c2 = end of stage 3 (256 ch, 32²), c3 = end of stage 4 (512 ch, 16²)
        coarse features = c3, middle p2 = up(c3) + latlayer1(c2), fine p1 = up(p2) + latlayer2(c1)
    w0 = styles[0](c3);  W+[i] = w0 + styles[i](features of i) for i ≥ 1;  W+ += latent_avg
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ficekit.shapes import check_shape

# Units per stage of the IR-SE bodies e4e supports (index = depth name).
IR_SE_UNITS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}

# ----------------------------------------------------------------------------
# Body: IR-SE units (ArcFace-style pre-activation residual units with squeeze-excitation).


class SEModule(nn.Module):
    """Squeeze-excitation: rescale each channel by a gate computed from the global average."""

    def __init__(
        self,
        channels: int,  # feature channels in and out
        reduction: int,  # bottleneck ratio of the gate (channels // reduction hidden units)
    ) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)  # [N, C, 1, 1]
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class BottleneckIRSE(nn.Module):
    """One IR-SE unit: BN → conv3x3 → PReLU → conv3x3 (strided) → BN → SE, plus a shortcut."""

    def __init__(
        self,
        in_channels: int,  # channels of the unit's input
        out_channels: int,  # channels of the unit's output ("depth" in e4e)
        stride: int,  # spatial stride of the unit (1 or 2), applied by the second conv and the shortcut
        se_reduction: int = 16,  # squeeze-excitation reduction ratio
    ) -> None:
        super().__init__()
        if in_channels == out_channels:
            # Parameter-free subsampling (e4e uses a 1x1 max-pool: picks every stride-th pixel).
            self.shortcut_layer: nn.Module = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            SEModule(out_channels, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


# ----------------------------------------------------------------------------
# Heads: one GradualStyleBlock per W+ row, and e4e's equalized linear layer.


class EqualLinear(nn.Module):
    """Linear layer with the weight scaled by lr_mul/sqrt(in) at run time (StyleGAN2 equalized lr)."""

    def __init__(
        self,
        in_features: int,  # input width
        out_features: int,  # output width
        lr_mul: float = 1.0,  # learning-rate multiplier (e4e's style heads use 1)
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features).div_(lr_mul))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class GradualStyleBlock(nn.Module):
    """Strided conv3x3 + LeakyReLU(0.01) stack that pools a square feature map to 1x1, then EqualLinear."""

    def __init__(
        self,
        in_channels: int,  # channels of the feature map it reads
        out_channels: int,  # conv width and output width (= w_dim)
        spatial: int,  # side of the square feature map it reads (power of 2); log2(spatial) convs bring it to 1
    ) -> None:
        super().__init__()
        num_pools = round(math.log2(spatial))
        if num_pools < 1 or 2**num_pools != spatial:
            raise ValueError(f"GradualStyleBlock: spatial must be a power of 2 >= 2, got {spatial}")
        self.out_channels = out_channels
        self.spatial = spatial
        layers: list[nn.Module] = []
        for i in range(num_pools):
            layers += [
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel_size=3, stride=2, padding=1),
                nn.LeakyReLU(),
            ]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels, lr_mul=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)  # [N, C, 1, 1]
        return self.linear(x.reshape(x.shape[0], self.out_channels))


def upsample_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """FPN merge as e4e does it: bilinear (align_corners=True) resize of `top` to `lateral`'s size, plus `lateral`."""
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


# ----------------------------------------------------------------------------
# The encoder.


class Encoder4Editing(nn.Module):
    """e4e: IR-SE body + FPN taps + one style head per W+ row; W+ = w0 broadcast + deltas + latent_avg.

    forward(image_01 [N,3,H,W] RGB in [0,1]) -> W+ [N, num_ws, w_dim]. Defaults build FICE's encoder
    (IR-SE-50, 256-px generator, 14 ws). Smaller variants come from `units`, `channels` and `w_dim`.
    """

    def __init__(
        self,
        gan_size: int = 256,  # generator resolution in px; num_ws = 2*log2(gan_size) - 2
        num_layers: int = 50,  # IR-SE depth, one of 50 / 100 / 152 (ignored when `units` is given)
        units: Sequence[int] | None = None,  # IR-SE units in each of the 4 stages; None = from num_layers
        channels: Sequence[int] = (64, 128, 256, 512),  # output channels of the 4 stages (stem = channels[0])
        w_dim: int = 512,  # latent width; also the width of the style heads and FPN laterals
        input_size: int = 256,  # side the image is area-resized to before the body (multiple of 32)
        se_reduction: int = 16,  # squeeze-excitation reduction ratio in every unit
        coarse_ind: int = 3,  # W+ rows [0, coarse_ind) read c3 (e4e: 3)
        middle_ind: int = 7,  # W+ rows [coarse_ind, middle_ind) read p2, the rest read p1 (e4e: 7)
    ) -> None:
        super().__init__()
        if units is None:
            if num_layers not in IR_SE_UNITS:
                raise ValueError(f"Encoder4Editing: num_layers must be one of {sorted(IR_SE_UNITS)}, got {num_layers}")
            units = IR_SE_UNITS[num_layers]
        units = tuple(int(u) for u in units)
        channels = tuple(int(c) for c in channels)
        if len(units) != 4 or min(units) < 1:
            raise ValueError(f"Encoder4Editing: units must be 4 positive counts, got {units}")
        if len(channels) != 4 or min(channels) < se_reduction:
            raise ValueError(
                f"Encoder4Editing: channels must be 4 widths >= se_reduction={se_reduction}, got {channels}"
            )
        log_size = math.log2(gan_size)
        if gan_size < 4 or log_size != int(log_size):
            raise ValueError(f"Encoder4Editing: gan_size must be a power of 2 >= 4, got {gan_size}")
        if input_size < 32 or input_size & (input_size - 1):
            raise ValueError(f"Encoder4Editing: input_size must be a power of 2 >= 32, got {input_size}")
        if not 1 <= coarse_ind <= middle_ind:
            raise ValueError(f"Encoder4Editing: need 1 <= coarse_ind <= middle_ind, got {coarse_ind}, {middle_ind}")

        self.gan_size = gan_size
        self.num_ws = 2 * int(log_size) - 2
        self.w_dim = w_dim
        self.input_size = input_size
        self.coarse_ind = coarse_ind
        self.middle_ind = middle_ind
        self.units = units
        self.channels = channels
        # Plain constructor kwargs, so the architecture can travel with the weights (see save_e4e).
        self.init_kwargs = {
            "gan_size": gan_size,
            "units": list(units),
            "channels": list(channels),
            "w_dim": w_dim,
            "input_size": input_size,
            "se_reduction": se_reduction,
            "coarse_ind": coarse_ind,
            "middle_ind": middle_ind,
        }

        self.input_layer = nn.Sequential(
            nn.Conv2d(3, channels[0], kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.PReLU(channels[0]),
        )
        body: list[nn.Module] = []
        in_ch = channels[0]
        for stage_units, out_ch in zip(units, channels, strict=True):
            for u in range(stage_units):
                body.append(BottleneckIRSE(in_ch, out_ch, stride=2 if u == 0 else 1, se_reduction=se_reduction))
                in_ch = out_ch
        self.body = nn.Sequential(*body)
        # Feature taps: last unit of stages 2, 3, 4 (for IR-SE-50: body indices 6, 20, 23, as in e4e).
        ends = [sum(units[: s + 1]) - 1 for s in range(4)]
        self.tap_indices = (ends[1], ends[2], ends[3])

        # Feature maps after the body have side input_size / 16 (c3), / 8 (p2), / 4 (p1).
        self.styles = nn.ModuleList()
        for i in range(self.num_ws):
            spatial = input_size // (16 if i < coarse_ind else 8 if i < middle_ind else 4)
            self.styles.append(GradualStyleBlock(channels[3], w_dim, spatial))
        self.latlayer1 = nn.Conv2d(channels[2], channels[3], kernel_size=1)
        self.latlayer2 = nn.Conv2d(channels[1], channels[3], kernel_size=1)
        # The generator's mean w per row (e4e's start_from_latent_avg); the encoder predicts offsets from it.
        self.register_buffer("latent_avg", torch.zeros(1, self.num_ws, w_dim))

    def to_input(self, image_01: torch.Tensor) -> torch.Tensor:
        """RGB [0,1] -> e4e's input: [-1,1], area-resized to input_size x input_size when the size differs.

        FICE resizes when the last dimension is not 256; for square images this is the same test, and a
        non-square image is resized too (FICE's heads would fail on it).
        """
        check_shape("image_01", image_01, [None, 3, None, None])
        x = image_01 * 2 - 1
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="area")
        return x

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Body taps (c1, c2, c3) for an already converted input x [N,3,input_size,input_size]."""
        x = self.input_layer(x)
        taps = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.tap_indices:
                taps.append(x)
        c1, c2, c3 = taps
        return c1, c2, c3

    def forward(self, image_01: torch.Tensor, num_deltas: int | None = None) -> torch.Tensor:
        """W+ [N, num_ws, w_dim] for image_01 [N,3,H,W] RGB in [0,1].

        num_deltas: how many rows after the first get their own delta (e4e's progressive training
        stage); None = all (inference, what FICE uses). Rows without a delta repeat w0.
        """
        if num_deltas is None:
            num_deltas = self.num_ws - 1
        if not 0 <= num_deltas <= self.num_ws - 1:
            raise ValueError(f"num_deltas must be in [0, {self.num_ws - 1}] or None, got {num_deltas}")
        c1, c2, c3 = self.features(self.to_input(image_01))
        w0 = self.styles[0](c3)  # [N, w_dim]
        rows = [w0]
        p2 = p1 = None
        for i in range(1, self.num_ws):
            if i > num_deltas:
                rows.append(w0)
                continue
            if i < self.coarse_ind:
                feats = c3
            else:
                if p2 is None:
                    p2 = upsample_add(c3, self.latlayer1(c2))  # middle features
                feats = p2
                if i >= self.middle_ind:
                    if p1 is None:
                        p1 = upsample_add(p2, self.latlayer2(c1))  # fine features
                    feats = p1
            rows.append(w0 + self.styles[i](feats))
        w = torch.stack(rows, dim=1)  # [N, num_ws, w_dim]
        return w + self.latent_avg
