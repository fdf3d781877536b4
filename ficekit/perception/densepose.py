"""DensePose R-CNN chart models (detectron2 DensePose, IUV charts) in native PyTorch; no detectron2 needed.

Inference path only, given boxes: ResNet-FPN backbone -> DensePose decoder (or multi-level pooling for the
legacy models) -> RoIAlign -> DensePoseV1ConvXHead -> chart predictor, numerically as detectron2 computes it.
Official detectron2 checkpoints (.pkl model zoo files, .pth state dicts) load unchanged: parameter names are
detectron2's. FICE uses the body-part probabilities of one whole-image box as its pose-preservation signal.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ficekit.checkpoint_io import CheckpointError, load_state_dict_strict
from ficekit.perception.densepose_backbone import FPN, RESNET_BLOCKS, Conv2dNorm, ResNet
from ficekit.perception.densepose_checkpoint import WHAT, read_state_dict
from ficekit.perception.roi_align import boxes_to_rois, multilevel_roi_align
from ficekit.shapes import check_shape

logger = logging.getLogger(__name__)

# Fine-segmentation charts FICE's shape loss keeps (its `body_indexes`): 1-2 torso, 3-4 hands, 15-22 arms,
# 23-24 head; legs and feet (5-14) are left out. Channel 0 is background.
FICE_BODY_PARTS: tuple[int, ...] = (1, 2, 3, 4, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24)

# Checkpoint entries the given-box inference path never reads (RPN, box head); ignored, listed in a debug log.
IGNORED_PREFIXES: tuple[str, ...] = (
    "proposal_generator.",
    "roi_heads.box_head.",
    "roi_heads.box_predictor.",
    "pixel_mean",
    "pixel_std",
)


@dataclass(frozen=True)
class DensePoseConfig:
    """Architecture of a DensePose R-CNN chart model (the detectron2 config fields that shape inference)."""

    depth: int = 50  # ResNet depth: 18, 34, 50, 101, 152.
    stem_out_channels: int = 64  # MODEL.RESNETS.STEM_OUT_CHANNELS.
    res2_out_channels: int = 256  # MODEL.RESNETS.RES2_OUT_CHANNELS (64 for depth 18/34).
    bottleneck_channels: int = 64  # NUM_GROUPS * WIDTH_PER_GROUP (bottleneck blocks only).
    stride_in_1x1: bool = True  # MODEL.RESNETS.STRIDE_IN_1X1 (True for the MSRA weights).
    fpn_channels: int = 256  # MODEL.FPN.OUT_CHANNELS.
    decoder_on: bool = True  # DECODER_ON: merge p2-p5 first; False = legacy multi-level pooling.
    decoder_conv_dims: int = 256  # DECODER_CONV_DIMS.
    decoder_num_classes: int = 256  # DECODER_NUM_CLASSES (channels of the merged map).
    decoder_common_stride: int = 4  # DECODER_COMMON_STRIDE (stride of the merged map).
    pooler_resolution: int = 28  # POOLER_RESOLUTION (RoIAlign output size).
    pooler_sampling_ratio: int = 2  # POOLER_SAMPLING_RATIO (0 = adaptive).
    pooler_aligned: bool = False  # False = POOLER_TYPE 'ROIAlign', True = 'ROIAlignV2'.
    head_num_convs: int = 8  # NUM_STACKED_CONVS.
    head_conv_dim: int = 512  # CONV_HEAD_DIM.
    head_kernel: int = 3  # CONV_HEAD_KERNEL.
    num_coarse_segm_channels: int = 2  # NUM_COARSE_SEGM_CHANNELS (2 = fg/bg, 15 = legacy parts).
    num_patches: int = 24  # NUM_PATCHES (fine channels = num_patches + 1).
    deconv_kernel: int = 4  # DECONV_KERNEL of the predictor's ConvTranspose2d.
    up_scale: int = 2  # UP_SCALE of the final bilinear upsampling.
    pixel_mean_bgr: tuple[float, float, float] = (103.53, 116.28, 123.675)  # MODEL.PIXEL_MEAN (BGR, 0-255).
    pixel_std_bgr: tuple[float, float, float] = (1.0, 1.0, 1.0)  # MODEL.PIXEL_STD (BGR).
    size_divisibility: int = 32  # Pad bottom/right to a multiple of this (FPN needs 32).

    def __post_init__(self) -> None:
        if self.depth not in RESNET_BLOCKS:
            raise ValueError(f"DensePoseConfig.depth must be one of {sorted(RESNET_BLOCKS)}, got {self.depth}")
        if self.decoder_common_stride not in (4, 8, 16, 32):
            raise ValueError(
                f"DensePoseConfig.decoder_common_stride must be 4, 8, 16 or 32, got {self.decoder_common_stride}"
            )
        if self.size_divisibility % 32 != 0:
            raise ValueError(
                f"DensePoseConfig.size_divisibility must be a multiple of 32, got {self.size_divisibility}"
            )
        if len(self.pixel_mean_bgr) != 3 or len(self.pixel_std_bgr) != 3:
            raise ValueError("DensePoseConfig.pixel_mean_bgr and pixel_std_bgr need 3 values each (B, G, R)")

    @property
    def output_size(self) -> int:
        """Side of the predicted charts: pooler_resolution * 2 (deconv) * up_scale; 112 for the s1x models."""
        return self.pooler_resolution * 2 * self.up_scale

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-friendly) that `resolve_config` turns back into this config."""
        return dataclasses.asdict(self)


_LEGACY: dict[str, Any] = {"decoder_on": False, "num_coarse_segm_channels": 15, "pooler_resolution": 14}
# detectron2 projects/DensePose/configs/densepose_rcnn_<name>.yaml (IUV chart models without confidences).
CONFIGS: dict[str, DensePoseConfig] = {
    "R_50_FPN_s1x": DensePoseConfig(depth=50),
    "R_101_FPN_s1x": DensePoseConfig(depth=101),
    "R_50_FPN_s1x_legacy": DensePoseConfig(depth=50, **_LEGACY),
    "R_101_FPN_s1x_legacy": DensePoseConfig(depth=101, **_LEGACY),
}


def resolve_config(config: str | Mapping[str, Any] | DensePoseConfig) -> DensePoseConfig:
    """A DensePoseConfig from a name in CONFIGS (a 'densepose_rcnn_' prefix / '.yaml' suffix is fine), a dict
    of DensePoseConfig fields (missing fields take the R_50_FPN_s1x values; 'base' may name another start), or
    a config as is."""
    if isinstance(config, DensePoseConfig):
        return config
    if isinstance(config, str):
        name = config.removeprefix("densepose_rcnn_").removesuffix(".yaml")
        if name not in CONFIGS:
            raise ValueError(f"unknown DensePose config {config!r}; known: {sorted(CONFIGS)} (or pass a dict)")
        return CONFIGS[name]
    if isinstance(config, Mapping):
        fields = dict(config)
        base = resolve_config(fields.pop("base", "R_50_FPN_s1x"))
        known = {f.name for f in dataclasses.fields(DensePoseConfig)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown DensePose config field(s) {unknown}; known: {sorted(known)}")
        for key in ("pixel_mean_bgr", "pixel_std_bgr"):
            if key in fields:
                fields[key] = tuple(float(x) for x in fields[key])
        return dataclasses.replace(base, **fields)
    raise ValueError(f"DensePose config must be a name, a dict or a DensePoseConfig, got {type(config).__name__}")


# ----------------------------------------------------------------------------------------------------------------


def to_detectron2_input(
    image: torch.Tensor,
    pixel_mean_bgr: torch.Tensor,
    pixel_std_bgr: torch.Tensor,
    size_divisibility: int,
) -> torch.Tensor:
    """RGB [0,1] [N,3,H,W] -> detectron2's input: BGR 0-255, minus mean, over std, zero-padded bottom/right to a
    multiple of `size_divisibility` (the only place this model's input convention lives)."""
    x = image.flip(1) * 255.0
    x = (x - pixel_mean_bgr.view(1, 3, 1, 1)) / pixel_std_bgr.view(1, 3, 1, 1)
    h, w = x.shape[-2:]
    pad_h = (-h) % size_divisibility
    pad_w = (-w) % size_divisibility
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


class Decoder(nn.Module):
    """Panoptic-FPN style merge of p2..p5: per level conv3x3+ReLU (+ bilinear x2) stages down to the common
    stride, summed, then a 1x1 conv (`roi_heads.decoder.*`)."""

    def __init__(
        self,
        in_channels: int,  # Channels of each pyramid level.
        conv_dims: int,  # Width of the per-level conv stages.
        num_classes: int,  # Output channels of the 1x1 predictor.
        common_stride: int,  # Stride every level is brought to.
        levels: Sequence[int],  # Pyramid levels to merge, e.g. (2, 3, 4, 5) = strides 4..32.
    ) -> None:
        super().__init__()
        self.levels = tuple(levels)
        common_level = common_stride.bit_length() - 1
        for level in self.levels:
            ops: list[nn.Module] = []
            for k in range(max(1, level - common_level)):
                ops.append(Conv2dNorm(in_channels if k == 0 else conv_dims, conv_dims, 3, padding=1, relu=True))
                if level != common_level:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.add_module(f"p{level}", nn.Sequential(*ops))
        self.predictor = Conv2dNorm(conv_dims, num_classes, 1)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = None
        for level in self.levels:
            y = getattr(self, f"p{level}")(features[f"p{level}"])
            x = y if x is None else x + y
        return self.predictor(x)


class DensePoseV1ConvXHead(nn.Module):
    """Stack of conv + ReLU layers on pooled features (`body_conv_fcn1..n`)."""

    def __init__(
        self,
        in_channels: int,  # Channels of the pooled features.
        hidden_dim: int = 512,  # Width of every conv.
        kernel_size: int = 3,  # Square kernel; padding keeps the size.
        num_convs: int = 8,  # Number of stacked convs.
    ) -> None:
        super().__init__()
        self.num_convs = num_convs
        for i in range(num_convs):
            conv = nn.Conv2d(in_channels if i == 0 else hidden_dim, hidden_dim, kernel_size, padding=kernel_size // 2)
            self.add_module(f"body_conv_fcn{i + 1}", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.num_convs):
            x = F.relu(getattr(self, f"body_conv_fcn{i + 1}")(x))
        return x


class DensePoseChartPredictor(nn.Module):
    """ConvTranspose2d (stride 2) to coarse segm / fine segm / U / V, then bilinear upsampling by `up_scale`."""

    def __init__(
        self,
        in_channels: int,  # Channels of the head output.
        coarse_channels: int = 2,  # Coarse segmentation channels (2 = background/foreground).
        num_patches: int = 24,  # Body charts; fine segmentation, U and V get num_patches + 1 channels.
        kernel_size: int = 4,  # Transposed-conv kernel (padding kernel/2 - 1, so exactly x2).
        up_scale: int = 2,  # Bilinear upsampling factor after the transposed convs.
    ) -> None:
        super().__init__()
        pad = kernel_size // 2 - 1

        def deconv(out_channels: int) -> nn.ConvTranspose2d:
            return nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=2, padding=pad)

        self.ann_index_lowres = deconv(coarse_channels)
        self.index_uv_lowres = deconv(num_patches + 1)
        self.u_lowres = deconv(num_patches + 1)
        self.v_lowres = deconv(num_patches + 1)
        self.up_scale = up_scale

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.up_scale, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            self._up(self.ann_index_lowres(x)),
            self._up(self.index_uv_lowres(x)),
            self._up(self.u_lowres(x)),
            self._up(self.v_lowres(x)),
        )


class DensePoseROIHeads(nn.Module):
    """The DensePose branch of detectron2's DensePoseROIHeads: decoder, pooler, head, predictor (`roi_heads.*`)."""

    def __init__(
        self,
        config: DensePoseConfig,  # Architecture; the head reads the pooler/decoder/head/predictor fields.
        levels: Sequence[int],  # FPN levels the head sees (p2..p5).
    ) -> None:
        super().__init__()
        self.levels = tuple(levels)
        self.decoder_on = config.decoder_on
        if config.decoder_on:
            self.decoder = Decoder(
                config.fpn_channels,
                config.decoder_conv_dims,
                config.decoder_num_classes,
                config.decoder_common_stride,
                self.levels,
            )
            head_in = config.decoder_num_classes
            self.scales = [1.0 / 2 ** self.levels[0]]  # detectron2 pools the merged map at p2's scale
        else:
            head_in = config.fpn_channels
            self.scales = [1.0 / 2**level for level in self.levels]
        self.pooler_resolution = config.pooler_resolution
        self.sampling_ratio = config.pooler_sampling_ratio
        self.aligned = config.pooler_aligned
        self.densepose_head = DensePoseV1ConvXHead(
            head_in, config.head_conv_dim, config.head_kernel, config.head_num_convs
        )
        self.densepose_predictor = DensePoseChartPredictor(
            config.head_conv_dim,
            config.num_coarse_segm_channels,
            config.num_patches,
            config.deconv_kernel,
            config.up_scale,
        )

    def forward(
        self, features: Mapping[str, torch.Tensor], rois: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.decoder_on:
            maps = [self.decoder(features)]
        else:
            maps = [features[f"p{level}"] for level in self.levels]
        pooled = multilevel_roi_align(
            maps, rois, self.pooler_resolution, self.scales, self.sampling_ratio, self.aligned
        )
        return self.densepose_predictor(self.densepose_head(pooled))


# ----------------------------------------------------------------------------------------------------------------


@dataclass
class DensePoseOutput:
    """Chart predictions for K boxes, each on a S x S grid over its box (S = 112 for the s1x models).

    coarse_segm: [K, 2, S, S] logits, background / person (15 channels for the legacy models).
    fine_segm:   [K, 25, S, S] logits, background + 24 body charts.
    u, v:        [K, 25, S, S] chart coordinates per chart (raw regressions, nominally in [0, 1]).
    boxes:       [K, 4] the boxes (XYXY, input-image pixels) the charts cover.
    batch_index: [K] int64, the image each box belongs to.
    """

    coarse_segm: torch.Tensor
    fine_segm: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    boxes: torch.Tensor
    batch_index: torch.Tensor

    def body_parts(self, indices: Sequence[int] = FICE_BODY_PARTS) -> torch.Tensor:
        """FICE's body probabilities [K, len(indices), S, S]: softmax(fine)[:, indices] * P(person).

        P(person) = softmax(coarse)[:, 1] for the 2-channel models (exactly FICE's formula); for the 15-channel
        legacy models it is the summed probability of the 14 part channels.
        """
        n_fine = self.fine_segm.shape[1]
        index = list(indices)
        if not index or any(not 0 <= i < n_fine for i in index):
            raise ValueError(f"body_parts: indices must be non-empty and in [0, {n_fine}), got {index}")
        person = torch.softmax(self.coarse_segm, dim=1)[:, 1:].sum(dim=1, keepdim=True)
        return select_channels(torch.softmax(self.fine_segm, dim=1), index) * person


def select_channels(x: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
    """x[:, indices] as slices of its contiguous runs, concatenated: the same values, and a backward that
    writes each run back as a slice (advanced indexing's backward is a scatter-add, a slow serial loop in
    compiled CPU code: 4 of the compiled edit step's 58 ms at the demo's size)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1]:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    if len(runs) == len(indices) and len(runs) > 1:  # no two neighbours: plain indexing is as good
        return x[:, list(indices)]
    parts = [x[:, start:stop] for start, stop in runs]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class DensePoseChartModel(nn.Module):
    """DensePose R-CNN chart model evaluated on given boxes: image [N,3,H,W] RGB in [0,1] -> DensePoseOutput.

    Frozen after `load_densepose` (eval mode, no parameter gradients); differentiable with respect to the image.
    """

    def __init__(
        self,
        config: str | Mapping[str, Any] | DensePoseConfig = "R_50_FPN_s1x",  # Architecture (see resolve_config).
    ) -> None:
        super().__init__()
        self.config = resolve_config(config)
        cfg = self.config
        bottom_up = ResNet(
            cfg.depth,
            cfg.stem_out_channels,
            cfg.res2_out_channels,
            cfg.bottleneck_channels,
            cfg.stride_in_1x1,
        )
        self.backbone = FPN(bottom_up, cfg.fpn_channels)
        self.roi_heads = DensePoseROIHeads(cfg, self.backbone.levels)
        # Not in the state dict (detectron2 stores them non-persistent too); they follow .to(device).
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean_bgr), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std_bgr), persistent=False)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """The model's input convention (BGR 0-255, mean-subtracted, padded); see to_detectron2_input."""
        return to_detectron2_input(image, self.pixel_mean, self.pixel_std, self.config.size_divisibility)

    def forward(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> DensePoseOutput:
        """Charts for `boxes` on `image`.

        Args:
            image: [N, 3, H, W] float RGB in [0, 1].
            boxes: None = one whole-image box [0, 0, W, H] per image (FICE's use); a [N, 4] tensor = one XYXY box
                per image; or a list of N tensors [K_i, 4] (K_i may be 0). Pixels of `image`.

        Returns:
            DensePoseOutput for the K = sum K_i boxes, in image order.
        """
        check_shape("image", image, [None, 3, None, None])
        if not image.is_floating_point():
            raise ValueError(f"image: expected a float tensor RGB in [0, 1], got dtype {image.dtype}")
        n, _, h, w = image.shape
        # Boxes stay float32 (float64 for float64 images) so pixel coordinates keep sub-pixel precision.
        box_dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
        rois = boxes_to_rois(self._box_list(boxes, n, h, w, image.device, box_dtype))
        k = rois.shape[0]
        if k == 0:
            s, cfg = self.config.output_size, self.config
            empty = image.new_zeros
            return DensePoseOutput(
                coarse_segm=empty(0, cfg.num_coarse_segm_channels, s, s),
                fine_segm=empty(0, cfg.num_patches + 1, s, s),
                u=empty(0, cfg.num_patches + 1, s, s),
                v=empty(0, cfg.num_patches + 1, s, s),
                boxes=empty(0, 4),
                batch_index=torch.zeros(0, dtype=torch.int64, device=image.device),
            )
        features = self.backbone(self.preprocess(image))
        coarse, fine, u, v = self.roi_heads(features, rois)
        return DensePoseOutput(coarse, fine, u, v, boxes=rois[:, 1:], batch_index=rois[:, 0].long())

    @staticmethod
    def _box_list(
        boxes: torch.Tensor | Sequence[torch.Tensor] | None,
        n: int,
        h: int,
        w: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> list[torch.Tensor]:
        """Boxes as a list of N [K_i, 4] tensors on `device`; None = the whole image once per image."""
        if boxes is None:
            whole = torch.tensor([[0.0, 0.0, float(w), float(h)]], dtype=dtype, device=device)
            return [whole] * n
        if isinstance(boxes, torch.Tensor):
            check_shape("boxes", boxes, [n, 4])
            return [b.view(1, 4).to(device=device, dtype=dtype) for b in boxes]
        if not isinstance(boxes, Sequence) or len(boxes) != n:
            raise ValueError(
                f"boxes: expected None, a [N, 4] tensor or a list of N={n} tensors [K_i, 4], got "
                f"{type(boxes).__name__}{f' of length {len(boxes)}' if isinstance(boxes, Sequence) else ''}"
            )
        out = []
        for i, b in enumerate(boxes):
            b = torch.as_tensor(b)
            check_shape(f"boxes[{i}]", b, [None, 4])
            out.append(b.to(device=device, dtype=dtype))
        return out


# ----------------------------------------------------------------------------------------------------------------


def load_densepose(
    path: str | os.PathLike,
    config: str | Mapping[str, Any] | DensePoseConfig = "R_50_FPN_s1x",
    device: str | torch.device = "cpu",
) -> DensePoseChartModel:
    """Build the model for `config`, load a detectron2 checkpoint (.pkl model zoo file or .pth/.pt state dict)
    into it unchanged, and return it frozen (eval, requires_grad False) on `device`.

    Entries of the detector parts the given-box path never runs (RPN, box head, pixel mean/std) are ignored;
    any other unknown entry, a missing entry or a shape mismatch raises CheckpointError naming file and key.
    """
    model = DensePoseChartModel(config)
    state = read_state_dict(path)
    own = model.state_dict()
    ignored = [k for k in state if k not in own and k.startswith(IGNORED_PREFIXES)]
    unexpected = [k for k in state if k not in own and not k.startswith(IGNORED_PREFIXES)]
    if unexpected:
        raise CheckpointError(
            f"{WHAT}: {path} has {len(unexpected)} entr{'y' if len(unexpected) == 1 else 'ies'} the config "
            f"{_config_name(model.config)} does not describe (first: {unexpected[0]!r}); wrong config, or a model "
            "with confidences / DeepLab head / CSE embeddings, which this loader does not support"
        )
    if ignored:
        logger.debug("%s: ignored %d entries not used for given-box inference: %s", path, len(ignored), ignored)
    load_state_dict_strict(model, {k: v for k, v in state.items() if k in own}, path, WHAT)
    model.eval().requires_grad_(False)
    logger.debug("loaded DensePose %s from %s", _config_name(model.config), path)
    return model.to(device)


def _config_name(config: DensePoseConfig) -> str:
    for name, known in CONFIGS.items():
        if known == config:
            return name
    return f"custom({config.to_dict()})"
