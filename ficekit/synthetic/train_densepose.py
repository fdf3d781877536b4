"""Train the demo bundle's DensePose: a small ficekit DensePoseChartModel on the synthetic world's I/U/V maps.

The model is ficekit's native DensePose R-CNN chart model (ResNet-18 FPN, narrow widths, DEMO_CONFIG) run the
way the editor runs it: one whole-image box per image (FICE's use). Its input conversion (RGB [0,1] -> BGR
0-255 minus the mean, over the std, padded to a multiple of 32) lives inside the model, so training feeds the
rendered [0,1] images as they are. Losses follow DensePose's chart loss, computed on the charts resampled onto
the pixels the ground truth labels (bilinear, at pixel centres, exactly as `masking.densepose_part_maps` pastes
the box grid into the image; with DEMO_CONFIG at 64 px the grid is the pixel grid and the resampling is the
identity):

    coarse  cross-entropy person / background over every pixel
    fine    cross-entropy over the 25 fine channels (background + 24 charts) on the person's pixels
    u, v    smooth-L1 (beta 1) on the person's pixels, on the channel of the ground-truth part

The result is written as a detectron2 model-zoo .pkl (a pickle of {'model': {name: ndarray}, '__author__'}),
which `ficekit.perception.densepose.load_densepose` reads with its restricted unpickler, and its bundle record
names the full config. Metrics come from the written file, reloaded, on held-out renders.

Batches are rendered one step ahead in a background thread (Prefetcher, shared with train_parser). On a 2-core
machine, run the trainers with torch.set_num_threads(1): the render thread then has the other core, and two
OpenMP threads per process on a shared machine can slow each step by an order of magnitude.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ficekit.bundle import ModelSpec, load_model
from ficekit.checkpoint_io import atomic_write
from ficekit.masking import NUM_DENSEPOSE_CHANNELS, densepose_part_maps
from ficekit.perception.densepose import DensePoseChartModel, DensePoseConfig, DensePoseOutput, resolve_config
from ficekit.perception.densepose_checkpoint import save_detectron2_pkl
from ficekit.shapes import check_shape
from ficekit.synthetic.dataset import SyntheticBatch, held_out_seeds, render_batch, training_batches
from ficekit.synthetic.training import Budget, Prefetcher, TrainReport, cosine_factor, forked_rng, set_lr
from ficekit.synthetic.world import DEFAULT_WORLD, check_world

logger = logging.getLogger(__name__)

DENSEPOSE_FILE = "densepose.pkl"
# ResNet-18 FPN with narrow layers. pooler_resolution 16 gives 64 x 64 charts (16 * 2 deconv * 2 upsampling): at
# the demo's 64 px the whole-image box grid is the pixel grid. ROIAlignV2 (aligned) pools at the feature cells'
# centres. pixel_std_bgr is ImageNet's std in 0-255 units, so the from-scratch trunk (whose FrozenBatchNorm is
# the identity) sees inputs of unit scale.
DEMO_CONFIG: dict[str, Any] = {
    "base": "R_50_FPN_s1x",
    "depth": 18,
    "stem_out_channels": 16,
    "res2_out_channels": 16,
    "fpn_channels": 32,
    "decoder_conv_dims": 32,
    "decoder_num_classes": 32,
    "pooler_resolution": 16,
    "pooler_aligned": True,
    "head_num_convs": 3,
    "head_conv_dim": 64,
    "pixel_std_bgr": [57.375, 57.12, 58.395],
}
EVAL_IMAGES = 64  # held-out renders the metrics are computed on


@dataclass(frozen=True)
class DensePoseLossWeights:
    """Weight of each DensePose loss term in the total."""

    coarse: float = 1.0  # person / background cross-entropy
    fine: float = 1.0  # 25-way part cross-entropy on the person
    uv: float = 10.0  # smooth-L1 of U and V (each) on the person, ground-truth part's channel


# ---------------------------------------------------------------------------------------------------
# Charts -> pixels, and the losses.


def charts_to_pixels(charts: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Box-grid maps [K,C,S,S] resampled at the centres of an H x W image's pixels -> [K,C,H,W].

    Bilinear, with the mapping `masking.densepose_part_maps` uses: grid cell i of a box XYXY spans
    [x0 + i*w/S, x0 + (i+1)*w/S); pixels outside a box take its border values. For a whole-image box with
    S = H = W this is the identity.
    """
    check_shape("charts", charts, [None, None, None, None])
    check_shape("boxes", boxes, [charts.shape[0], 4])
    h, w = size
    x0, y0, x1, y1 = (c.to(charts.dtype).unsqueeze(1) for c in boxes.unbind(1))
    xs = torch.arange(w, dtype=charts.dtype, device=charts.device) + 0.5
    ys = torch.arange(h, dtype=charts.dtype, device=charts.device) + 0.5
    gx = (2 * (xs - x0) / (x1 - x0) - 1).unsqueeze(1).expand(-1, h, -1)  # [K,H,W]
    gy = (2 * (ys - y0) / (y1 - y0) - 1).unsqueeze(2).expand(-1, -1, w)
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(charts, grid, mode="bilinear", padding_mode="border", align_corners=False)


def densepose_losses(
    output: DensePoseOutput,
    parts: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """DensePose's chart losses for one box per image against dense ground truth.

    Args:
        output: charts for N boxes, box k on image k (2 coarse channels, 25 fine/U/V channels).
        parts: [N,H,W] long ground-truth part index (0 = background, 1-24 charts).
        u, v: [N,H,W] ground-truth chart coordinates in [0,1] (read on the person's pixels only).

    Returns:
        {'coarse': CE person/background over all pixels, 'fine': CE over 25 channels on the person's pixels,
        'u', 'v': mean smooth-L1 on the person's pixels of the ground-truth part's channel}; the person terms
        are 0 (still differentiable) when no pixel is a person.
    """
    check_shape("parts", parts, [None, None, None])
    n, h, w = parts.shape
    check_shape("u", u, [n, h, w])
    check_shape("v", v, [n, h, w])
    check_shape("output.coarse_segm", output.coarse_segm, [n, 2, None, None])
    check_shape("output.fine_segm", output.fine_segm, [n, NUM_DENSEPOSE_CHANNELS, None, None])
    if not torch.equal(output.batch_index.cpu(), torch.arange(n)):
        raise ValueError(f"output: expected one box per image in image order, got batch_index {output.batch_index}")
    if parts.dtype != torch.long or int(parts.min()) < 0 or int(parts.max()) >= NUM_DENSEPOSE_CHANNELS:
        raise ValueError(f"parts: expected int64 part indices in [0, {NUM_DENSEPOSE_CHANNELS}), got {parts.dtype}")
    # Pixel-frame copies of all four chart maps in one resampling call.
    maps = torch.cat([output.coarse_segm, output.fine_segm, output.u, output.v], dim=1)
    maps = charts_to_pixels(maps, output.boxes, (h, w))
    coarse, fine, pu, pv = maps.split([2, *[NUM_DENSEPOSE_CHANNELS] * 3], dim=1)
    person = parts > 0
    losses = {"coarse": F.cross_entropy(coarse, person.long())}
    if not bool(person.any()):
        zero = fine.sum() * 0
        return losses | {"fine": zero, "u": zero, "v": zero}
    losses["fine"] = F.cross_entropy(fine.permute(0, 2, 3, 1)[person], parts[person])
    index = parts.unsqueeze(1)
    for name, pred, target in (("u", pu, u), ("v", pv, v)):
        est = pred.gather(1, index).squeeze(1)[person]
        losses[name] = F.smooth_l1_loss(est, target[person].to(est.dtype), beta=1.0)
    return losses


def total_loss(losses: Mapping[str, torch.Tensor], weights: DensePoseLossWeights) -> torch.Tensor:
    """Weighted sum of densepose_losses' terms."""
    return weights.coarse * losses["coarse"] + weights.fine * losses["fine"] + weights.uv * (losses["u"] + losses["v"])


# ---------------------------------------------------------------------------------------------------
# Metrics.


@torch.no_grad()
def evaluate_densepose(model: DensePoseChartModel, batches: list[SyntheticBatch]) -> dict[str, float]:
    """Held-out figures of a DensePose model read the way masking reads it (densepose_part_maps, argmax).

    part_accuracy: fraction of person pixels given their part; part_miou: IoU per part (1-24, those present in
    the ground truth or the prediction), averaged; person_iou: IoU of the predicted person (argmax != 0);
    uv_error: mean |dU| + |dV| / 2 on person pixels whose part is right. IoUs are over all images together.
    """
    device = next(model.parameters()).device
    inter = torch.zeros(NUM_DENSEPOSE_CHANNELS, dtype=torch.float64)
    union = torch.zeros(NUM_DENSEPOSE_CHANNELS, dtype=torch.float64)
    correct = person_total = person_inter = person_union = 0
    uv_sum, uv_count = 0.0, 0
    for batch in batches:
        images, parts = batch.images.to(device), batch.parts.to(device)
        n, h, w = parts.shape
        out = model(images)
        pred = densepose_part_maps(out, (h, w), n).argmax(dim=1)
        for c in range(NUM_DENSEPOSE_CHANNELS):
            p, g = pred == c, parts == c
            inter[c] += float((p & g).sum())
            union[c] += float((p | g).sum())
        person = parts > 0
        person_inter += int((person & (pred > 0)).sum())
        person_union += int((person | (pred > 0)).sum())
        right = person & (pred == parts)
        correct += int(right.sum())
        person_total += int(person.sum())
        uv = charts_to_pixels(torch.cat([out.u, out.v], dim=1), out.boxes, (h, w))
        index = parts.unsqueeze(1)
        pu = uv[:, :NUM_DENSEPOSE_CHANNELS].gather(1, index).squeeze(1)
        pv = uv[:, NUM_DENSEPOSE_CHANNELS:].gather(1, index).squeeze(1)
        err = ((pu - batch.u.to(device)).abs() + (pv - batch.v.to(device)).abs()) / 2
        uv_sum += float(err[right].sum())
        uv_count += int(right.sum())
    present = union[1:] > 0
    ious = inter[1:][present] / union[1:][present]
    return {
        "part_accuracy": correct / max(person_total, 1),
        "part_miou": float(ious.mean()) if len(ious) else 0.0,
        "person_iou": person_inter / max(person_union, 1),
        "uv_error": uv_sum / max(uv_count, 1),
    }


# ---------------------------------------------------------------------------------------------------
# The trainer.


def train_densepose(
    out_dir: str | os.PathLike,  # folder the model file is written into (created if missing)
    *,
    steps: int,  # maximum optimisation steps
    time_budget_s: float | None = None,  # wall-clock limit of the training loop; None = steps only
    batch_size: int = 16,  # rendered people per step
    image_size: int = 64,  # render size in px (the editor's working resolution)
    device: str | torch.device = "cpu",  # where to train
    seed: int = 0,  # initialisation and training-data seed (held-out data is fixed)
    progress: bool = True,  # show a tqdm bar
    config: str | Mapping[str, Any] | DensePoseConfig | None = None,  # architecture; None = DEMO_CONFIG
    lr: float = 2e-3,  # Adam learning rate (cosine-decayed to 5% over the budget)
    weights: DensePoseLossWeights | None = None,  # loss weights; None = DensePoseLossWeights()
    eval_images: int = EVAL_IMAGES,  # held-out renders for the metrics; 0 = no metrics beyond the losses
    world: str = DEFAULT_WORLD,  # synthetic world version of the renders (WORLD_VERSIONS)
) -> TrainReport:
    """Train a DensePose chart model on rendered people and write `out_dir`/densepose.pkl.

    Returns the TrainReport whose spec is the bundle record ModelSpec('densepose.pkl', 'detectron2',
    {'config': the full config dict}). Metrics: the last step's losses ('loss', 'loss_coarse', ...), and on
    held-out renders, from the written file reloaded: part_accuracy, part_miou, person_iou, uv_error.
    Deterministic in `seed` when only `steps` ends the loop; the global RNG state is left as it was.
    """
    cfg = resolve_config(DEMO_CONFIG if config is None else config)
    if cfg.num_coarse_segm_channels != 2 or cfg.num_patches + 1 != NUM_DENSEPOSE_CHANNELS:
        raise ValueError(
            "train_densepose trains 2 coarse channels and 25 fine channels (num_coarse_segm_channels=2, "
            f"num_patches=24); got {cfg.num_coarse_segm_channels} and {cfg.num_patches}"
        )
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    weights = weights or DensePoseLossWeights()
    Budget(steps, time_budget_s)  # validates steps and the time budget before any work
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)

    with forked_rng(device):
        torch.manual_seed(seed)
        model = DensePoseChartModel(cfg).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses: dict[str, torch.Tensor] = {}
    bar = tqdm(total=steps, desc="training DensePose", disable=not progress)
    start = time.perf_counter()
    budget = Budget(steps, time_budget_s)
    check_world(world)
    with Prefetcher(training_batches(batch_size, image_size, seed, world)) as batches:
        while budget.next():
            batch = next(batches).to(device)
            set_lr(optimizer, lr * cosine_factor(budget))
            output = model(batch.images)
            losses = densepose_losses(output, batch.parts, batch.u, batch.v)
            loss = total_loss(losses, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    seconds = time.perf_counter() - start
    logger.info("DensePose: %d steps in %.1f s (%.2f steps/s)", budget.step, seconds, budget.step / seconds)

    atomic_write(out / DENSEPOSE_FILE, lambda tmp: save_detectron2_pkl(model, tmp, "ficekit.synthetic.train_densepose"))
    spec = ModelSpec(DENSEPOSE_FILE, "detectron2", {"config": cfg.to_dict()})
    metrics = {"loss": total_loss(losses, weights).item()} | {f"loss_{k}": v.item() for k, v in losses.items()}
    if eval_images > 0:
        with forked_rng(device):  # the loader initialises the model randomly before loading
            loaded = load_model("densepose", spec, out, device)
        held_out = [
            render_batch(held_out_seeds(eval_images)[i : i + 16], image_size, world) for i in range(0, eval_images, 16)
        ]
        metrics |= evaluate_densepose(loaded, held_out)
    logger.info("DensePose metrics: %s", {k: round(v, 4) for k, v in metrics.items()})
    settings = {
        "batch_size": batch_size, "image_size": image_size, "seed": seed, "lr": lr, "max_steps": steps, "world": world,
        "time_budget_s": time_budget_s, "loss_weights": asdict(weights), "eval_images": eval_images,
        "device": str(device),
    }  # fmt: skip
    return TrainReport("densepose", spec, budget.step, seconds, metrics, settings)
