"""DensePose body parts: the 24 chart names, and the R-CNN's per-box charts as per-pixel part probabilities.

Beside the DensePose model (ficekit.perception.densepose) because they read its output; masking, the
objective's shape term, metrics and the DensePose trainer all use them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ficekit.perception.densepose import DensePoseOutput
from ficekit.shapes import check_shape

# ---------------------------------------------------------------------------------------------------
# DensePose body parts (fine segmentation channels), as documented for DensePose-COCO (`dp_I` in the
# DensePose challenge data format; the same list is in detectron2's DensePose code comments). One DensePose
# maintainer comment swaps the feet (5 right, 6 left); masking treats both feet alike, so it does not matter here.

DENSEPOSE_PARTS: dict[int, str] = {
    0: "background",
    1: "torso",
    2: "torso",
    3: "right hand",
    4: "left hand",
    5: "left foot",
    6: "right foot",
    7: "upper leg right",
    8: "upper leg left",
    9: "upper leg right",
    10: "upper leg left",
    11: "lower leg right",
    12: "lower leg left",
    13: "lower leg right",
    14: "lower leg left",
    15: "upper arm left",
    16: "upper arm right",
    17: "upper arm left",
    18: "upper arm right",
    19: "lower arm left",
    20: "lower arm right",
    21: "lower arm left",
    22: "lower arm right",
    23: "head",
    24: "head",
}
NUM_DENSEPOSE_CHANNELS = len(DENSEPOSE_PARTS)  # 25: background + 24 charts


# ---------------------------------------------------------------------------------------------------
# DensePose charts -> per-pixel part probabilities in the image frame.


def densepose_probabilities(output: DensePoseOutput) -> torch.Tensor:
    """Part probabilities [K,25,S,S] on each box's grid; channels sum to 1.

    Channels 1..24 = softmax(fine)[1..24] * P(person) (FICE's body-part formula), channel 0 = background =
    softmax(coarse)[0] + P(person) * softmax(fine)[0]. P(person) = softmax(coarse)[1] for the 2-channel models
    (the summed part channels for the 15-channel legacy ones).
    """
    check_shape("output.fine_segm", output.fine_segm, [None, NUM_DENSEPOSE_CHANNELS, None, None])
    k, _, s_h, s_w = output.fine_segm.shape
    check_shape("output.coarse_segm", output.coarse_segm, [k, None, s_h, s_w])
    coarse = torch.softmax(output.coarse_segm, dim=1)
    fine = torch.softmax(output.fine_segm, dim=1)
    person = coarse[:, 1:].sum(dim=1, keepdim=True)
    background = coarse[:, :1] + person * fine[:, :1]
    return torch.cat([background, fine[:, 1:] * person], dim=1)


def densepose_part_maps(
    output: DensePoseOutput,
    image_size: tuple[int, int],
    num_images: int | None = None,
) -> torch.Tensor:
    """Per-pixel DensePose part probabilities [N,25,H,W] in the image frame (channels sum to 1); see _paste."""
    return _paste(output, image_size, num_images, with_v=False)[0]


def densepose_part_and_v_maps(
    output: DensePoseOutput,
    image_size: tuple[int, int],
    num_images: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """densepose_part_maps and each chart's V coordinate [N,25,H,W] in the image frame, pasted the same way
    (how far a sleeve reaches along the arm needs V: ficekit.skin)."""
    parts, v = _paste(output, image_size, num_images, with_v=True)
    assert v is not None
    return parts, v


def _paste(
    output: DensePoseOutput,
    image_size: tuple[int, int],
    num_images: int | None,
    with_v: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-pixel DensePose part probabilities [N,25,H,W] in the image frame (channels sum to 1), and with_v each
    chart's V (zeros outside every box).

    Each box's S x S grid (densepose_probabilities) is resampled bilinearly onto the pixels whose centres lie in
    the box (grid cell i spans [x0 + i*w/S, x0 + (i+1)*w/S), as RoIAlign pooled it). Where boxes of one image
    overlap, each pixel takes the box with the highest person probability; pixels outside every box are
    background (channel 0 = 1).

    Args:
        output: DensePose charts for K boxes (boxes XYXY in image pixels, batch_index per box).
        image_size: (H, W) of the input image.
        num_images: N; default 1 + the largest batch_index (required when K = 0).
    """
    h, w = (int(s) for s in image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size: expected positive (H, W), got {tuple(image_size)}")
    probs = densepose_probabilities(output)
    k = probs.shape[0]
    check_shape("output.boxes", output.boxes, [k, 4])
    check_shape("output.batch_index", output.batch_index, [k])
    if num_images is None:
        if k == 0:
            raise ValueError("densepose_part_maps: no boxes, so pass num_images")
        num_images = int(output.batch_index.max()) + 1
    if k and not 0 <= int(output.batch_index.min()) <= int(output.batch_index.max()) < num_images:
        raise ValueError(f"output.batch_index must lie in [0, {num_images}), got {output.batch_index.tolist()}")

    dtype = probs.dtype
    background = torch.zeros(1, NUM_DENSEPOSE_CHANNELS, h, w, dtype=dtype, device=probs.device)
    background[:, 0] = 1
    if with_v:
        check_shape("output.v", output.v, list(probs.shape))
        probs = torch.cat([probs, output.v.to(dtype)], dim=1)
        background = torch.cat([background, torch.zeros_like(background)], dim=1)
    maps = [background for _ in range(num_images)]
    best = [torch.zeros(1, 1, h, w, dtype=dtype, device=probs.device) for _ in range(num_images)]
    for i in range(k):
        x0, y0, x1, y1 = (float(v) for v in output.boxes[i])
        # pixels whose centres (p + 0.5) lie in [x0, x1] x [y0, y1]
        px0, px1 = max(0, math.ceil(x0 - 0.5)), min(w, math.floor(x1 - 0.5) + 1)
        py0, py1 = max(0, math.ceil(y0 - 0.5)), min(h, math.floor(y1 - 0.5) + 1)
        if x1 <= x0 or y1 <= y0 or px1 <= px0 or py1 <= py0:
            continue
        xs = torch.arange(px0, px1, dtype=dtype, device=probs.device) + 0.5
        ys = torch.arange(py0, py1, dtype=dtype, device=probs.device) + 0.5
        gx = 2 * (xs - x0) / (x1 - x0) - 1
        gy = 2 * (ys - y0) / (y1 - y0) - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).unsqueeze(0)  # [1,h',w',(x,y)]
        pasted = F.grid_sample(probs[i : i + 1], grid, mode="bilinear", padding_mode="border", align_corners=False)
        pad = (px0, w - px1, py0, h - py1)
        inside = F.pad(torch.ones_like(pasted[:, :1]), pad)
        pasted = F.pad(pasted, pad)
        person = (1 - pasted[:, :1]) * inside
        n = int(output.batch_index[i])
        take = person > best[n]
        maps[n] = torch.where(take, pasted, maps[n])
        best[n] = torch.where(take, person, best[n])
    pasted = torch.cat(maps, dim=0)
    if not with_v:
        return pasted, None
    return pasted[:, :NUM_DENSEPOSE_CHANNELS], pasted[:, NUM_DENSEPOSE_CHANNELS:]
