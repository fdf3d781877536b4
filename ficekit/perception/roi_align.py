"""RoIAlign in pure torch: vectorised, gather-based bilinear sampling that is differentiable on any device.

Numerics follow torchvision.ops.roi_align (the op detectron2 calls): the same sample positions, the same
border rules and the same averaging, so detectron2 checkpoints see the features they were trained on.
"""

from __future__ import annotations

import torch

from ficekit.shapes import check_shape


def boxes_to_rois(boxes: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-image XYXY boxes ([K_i, 4] each) into rois [sum K_i, 5] = (image index, x0, y0, x1, y1)."""
    rois = []
    for index, b in enumerate(boxes):
        check_shape(f"boxes[{index}]", b, [None, 4])
        rois.append(torch.cat([torch.full_like(b[:, :1], float(index)), b], dim=1))
    return torch.cat(rois, dim=0)


def _axis_samples(
    start: torch.Tensor,
    length: torch.Tensor,
    pooled: int,
    sampling_ratio: int,
    size: int,
    aligned: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sampling along one axis: low/high indices and their weights, each [K, pooled * max_grid].

    The weights already hold the bilinear factor, the out-of-range mask and 1/grid (this axis's share of
    the average), so the 2-D result is the sum over both axes of products of per-axis terms.
    """
    if not aligned:
        length = length.clamp(min=1.0)
    bin_size = length / pooled
    if sampling_ratio > 0:
        grid = torch.full_like(length, float(sampling_ratio))
        max_grid = sampling_ratio
    else:
        grid = torch.ceil(length / pooled)
        max_grid = max(int(grid.max().item()), 1) if grid.numel() > 0 else 1
    dtype, device = start.dtype, start.device
    p = torch.arange(pooled, dtype=dtype, device=device).view(1, pooled, 1)
    g = torch.arange(max_grid, dtype=dtype, device=device).view(1, 1, max_grid)
    start, bin_size, grid = start.view(-1, 1, 1), bin_size.view(-1, 1, 1), grid.view(-1, 1, 1)
    # Same expression and order as torchvision: start + p * bin + (g + 0.5) * bin / grid.
    pos = start + p * bin_size + (g + 0.5) * bin_size / grid.clamp(min=1.0)  # [K, P, G]
    keep = (g < grid) & (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0.0)
    low = pos.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    pos = torch.where(at_edge, low.to(dtype), pos)
    frac = pos - low.to(dtype)
    scale = keep.to(dtype) / grid.clamp(min=1.0)
    k = start.shape[0]
    return (
        low.reshape(k, -1),
        high.reshape(k, -1),
        ((1.0 - frac) * scale).reshape(k, -1),
        (frac * scale).reshape(k, -1),
    )


def roi_align(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """Average of bilinear samples in each output bin of each box, as torchvision.ops.roi_align computes it.

    Args:
        features: [N, C, H, W] feature maps.
        rois: [K, 5] rows of (image index, x0, y0, x1, y1) in input-image pixels.
        output_size: pooled size P (or (Ph, Pw)).
        spatial_scale: feature-map pixels per image pixel (1/stride).
        sampling_ratio: samples per bin along each axis; <= 0 = ceil(box size / P) per box.
        aligned: False = detectron2 'ROIAlign' (legacy, no half-pixel shift, boxes at least 1 px);
            True = 'ROIAlignV2' (shift by -0.5 pixel).

    Returns:
        [K, C, Ph, Pw] pooled features; differentiable with respect to `features`.
    """
    check_shape("features", features, [None, None, None, None])
    check_shape("rois", rois, [None, 5])
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    n, c, h, w = features.shape
    k = rois.shape[0]
    if k == 0:
        return features.new_zeros(0, c, ph, pw)
    # Sample positions in float32 at least (float16 cannot resolve sub-pixel offsets on large maps).
    rois = rois.to(torch.float64 if features.dtype == torch.float64 else torch.float32)
    offset = 0.5 if aligned else 0.0
    x0 = rois[:, 1] * spatial_scale - offset
    y0 = rois[:, 2] * spatial_scale - offset
    x1 = rois[:, 3] * spatial_scale - offset
    y1 = rois[:, 4] * spatial_scale - offset
    y_lo, y_hi, wy_lo, wy_hi = _axis_samples(y0, y1 - y0, ph, sampling_ratio, h, aligned)
    x_lo, x_hi, wx_lo, wx_hi = _axis_samples(x0, x1 - x0, pw, sampling_ratio, w, aligned)
    gy, gx = y_lo.shape[1] // ph, x_lo.shape[1] // pw

    # Rows: gather the two neighbouring feature rows of every y sample and blend them -> [K, Sy, C, W].
    wy_lo, wy_hi, wx_lo, wx_hi = (t.to(features.dtype) for t in (wy_lo, wy_hi, wx_lo, wx_hi))
    image = rois[:, 0].long().view(k, 1)
    rows = features.permute(0, 2, 1, 3).reshape(n * h, c, w)
    blended = rows[image * h + y_lo] * wy_lo[..., None, None] + rows[image * h + y_hi] * wy_hi[..., None, None]
    # Columns: gather the two neighbouring columns of every x sample and blend -> [K, Sy, C, Sx].
    sy, sx = y_lo.shape[1], x_lo.shape[1]
    cols_lo = blended.gather(3, x_lo.view(k, 1, 1, sx).expand(k, sy, c, sx))
    cols_hi = blended.gather(3, x_hi.view(k, 1, 1, sx).expand(k, sy, c, sx))
    samples = cols_lo * wx_lo.view(k, 1, 1, sx) + cols_hi * wx_hi.view(k, 1, 1, sx)
    # Sum the samples of each bin (weights already divide by the grid): [K, Ph, Gy, C, Pw, Gx] -> [K, C, Ph, Pw].
    pooled = samples.view(k, ph, gy, c, pw, gx).sum(dim=(2, 5))
    return pooled.permute(0, 2, 1, 3).contiguous()


def assign_boxes_to_levels(
    rois: torch.Tensor,
    min_level: int,
    max_level: int,
    canonical_box_size: float = 224.0,
    canonical_level: int = 4,
) -> torch.Tensor:
    """FPN level of each roi (Eqn. 1 of the FPN paper, as detectron2's ROIPooler), as an offset from min_level."""
    check_shape("rois", rois, [None, 5])
    area = (rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])
    level = torch.floor(canonical_level + torch.log2(torch.sqrt(area) / canonical_box_size + 1e-8))
    return level.clamp(min=min_level, max=max_level).to(torch.int64) - min_level


def multilevel_roi_align(
    features: list[torch.Tensor],
    rois: torch.Tensor,
    output_size: int,
    scales: list[float],
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """RoIAlign over an FPN pyramid: each roi is pooled from the level its size selects (detectron2 ROIPooler)."""
    if len(features) != len(scales):
        raise ValueError(f"multilevel_roi_align: {len(features)} feature maps but {len(scales)} scales")
    if len(features) == 1:
        return roi_align(features[0], rois, output_size, scales[0], sampling_ratio, aligned)
    min_level = round(-torch.log2(torch.tensor(scales[0])).item())
    max_level = round(-torch.log2(torch.tensor(scales[-1])).item())
    levels = assign_boxes_to_levels(rois, min_level, max_level)
    c = features[0].shape[1]
    out = features[0].new_zeros(rois.shape[0], c, output_size, output_size)
    for level, (feat, scale) in enumerate(zip(features, scales, strict=True)):
        index = torch.nonzero(levels == level).flatten()
        if index.numel() > 0:
            out = out.index_copy(0, index, roi_align(feat, rois[index], output_size, scale, sampling_ratio, aligned))
    return out
