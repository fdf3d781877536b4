"""Train the demo bundle's garment parser, and record FICE's 3-class segmenter as a view of it.

The parser is a segmentation network (default: the compact U-Net 'small_unet', fast on a CPU) over the synthetic
world's PARSING_LABELS, the names masking.PARSER_ROLES reads, trained with per-pixel cross-entropy on rendered
people. Its file `parser.pt` is {'state': state_dict}, read by the bundle's 'parser' format. The segmenter needs
no training of its own: its bundle record (format 'parser_view') names the same file and groups the parser's
classes into FICE's background / body / head (head = head + hair), so FICE's head-shape term and FICE mask mode
work with the demo bundle. The cross-entropy weighs the classes by frequency ** -0.5 (class_weights).

Metrics come from the written files, reloaded through the bundle loaders, on held-out renders: the parser's
mean IoU, the view's IoU per FICE class, and the IoU of the auto edit mask for "red shirt" (build_masks from
the parser alone) with the true upper garment.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ficekit.bundle import ModelSpec, load_model
from ficekit.checkpoint_io import atomic_write
from ficekit.instruction import parse_instruction
from ficekit.masking import CATEGORY_RULES, PARSER_ROLES, build_masks
from ficekit.perception.parser_networks import build_parser_network
from ficekit.perception.segmenter import (
    FICE_LABELS,
    INPUT_CONVERSIONS,
    FiceSegmentation,
    ParserSegmenterView,
    SegmentationMasks,
    SegmentationParser,
    parser_view_groups,
)
from ficekit.synthetic.dataset import SyntheticBatch, held_out_seeds, render_batch, training_batches
from ficekit.synthetic.training import Budget, Prefetcher, TrainReport, cosine_factor, forked_rng, set_lr
from ficekit.synthetic.world import DEFAULT_WORLD, PARSING_LABELS, check_world

logger = logging.getLogger(__name__)

PARSER_FILE = "parser.pt"
DEMO_ARCHITECTURE: dict[str, Any] = {"type": "small_unet", "base_channels": 16, "depth": 3}
INPUT_KIND = "imagenet"  # the parser sees (image - ImageNet mean) / std
EVAL_IMAGES = 64  # held-out renders the metrics are computed on
MASK_INSTRUCTION = "red shirt"  # the auto-mask check: category 'upper'


def parser_logits(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits [N,C,H,W] of a parser network for images [N,3,H,W] in [0,1] (its 'out' entry for torchvision's
    dict outputs), resized to the images' size as SegmentationParser does."""
    out = net(INPUT_CONVERSIONS[INPUT_KIND](images))
    if isinstance(out, Mapping):
        out = out["out"]
    if out.shape[-2:] != images.shape[-2:]:
        out = F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return out


def parser_loss(logits: torch.Tensor, parsing: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel cross-entropy of logits [N,C,H,W] against labels [N,H,W] (long), with optional class weights [C]
    (F.cross_entropy's weighted mean)."""
    return F.cross_entropy(logits, parsing, weight=weight)


def class_weights(counts: torch.Tensor, power: float, floor: float = 1e-3) -> torch.Tensor:
    """Cross-entropy class weights [C] proportional to frequency ** -power, from pixel counts per class [C],
    scaled so that the pixel-averaged weight is 1; frequencies below `floor` count as `floor` (a class not seen
    yet gets a bounded weight). power 0 = plain cross-entropy (all ones)."""
    freq = counts.double() / counts.sum().clamp_min(1)
    w = freq.clamp_min(floor) ** -power
    return (w / (w * freq).sum().clamp_min(1e-12)).float()


# ---------------------------------------------------------------------------------------------------
# Metrics.


class _IoU:
    """Intersections and unions per class, accumulated over images."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.inter = torch.zeros(len(names), dtype=torch.float64)
        self.union = torch.zeros(len(names), dtype=torch.float64)
        self.correct = self.total = 0

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        for c in range(len(self.names)):
            p, t = pred == c, target == c
            self.inter[c] += float((p & t).sum())
            self.union[c] += float((p | t).sum())
        self.correct += int((pred == target).sum())
        self.total += target.numel()

    def ious(self) -> dict[str, float]:
        """IoU of every class present in the targets or the predictions."""
        return {n: float(self.inter[c] / self.union[c]) for c, n in enumerate(self.names) if self.union[c] > 0}


@torch.no_grad()
def evaluate_parser(
    parser: SegmentationParser, view: ParserSegmenterView, batches: list[SyntheticBatch]
) -> dict[str, float]:
    """Held-out figures of a loaded parser (SegmentationParser over PARSING_LABELS) and its segmenter view.

    Parser: pixel_accuracy, miou (classes present in ground truth or prediction), iou_<class>. View ('fice_'):
    fice_<class>_iou per FICE class against the ground truth grouped the same way, fice_sum_error (largest
    |sum of the three probabilities - 1|). Mask: mask_iou / mask_recall of the auto edit mask (edit >= 0.5) for
    MASK_INSTRUCTION with the true garments it replaces, over the images that wear an upper garment, with the
    editor's default refinement (4 px dilation and feather: at 64 px a perfect parser scores an IoU near 0.4 and
    a recall of 1); mask_iou_tight: the same without dilation and feathering (near 1 for a perfect parser).
    """
    device = next(itertools.chain(parser.parameters(), parser.buffers())).device
    names = sorted(PARSING_LABELS, key=PARSING_LABELS.get)
    groups = view.class_groups
    to_fice = torch.zeros(len(names), dtype=torch.long)
    for fice_name, members in groups.items():
        for member in members:
            to_fice[PARSING_LABELS[member]] = FICE_LABELS[fice_name]
    parts_iou, fice_iou = _IoU(names), _IoU(list(FICE_LABELS))
    instruction = parse_instruction(MASK_INSTRUCTION)
    garment_names = [n for role in CATEGORY_RULES[instruction.category].garments for n in PARSER_ROLES[role]]
    garment_ids = torch.tensor([PARSING_LABELS[n] for n in garment_names if n in PARSING_LABELS])
    mask_inter = mask_union = mask_true = tight_inter = tight_union = 0
    sum_error = 0.0
    for batch in batches:
        images, parsing = batch.images.to(device), batch.parsing.to(device)
        masks: SegmentationMasks = parser(images)
        parts_iou.add(masks.probs.argmax(dim=1).cpu(), parsing.cpu())
        fice: FiceSegmentation = view(images)
        fice_iou.add(fice.probs.argmax(dim=1).cpu(), to_fice[parsing.cpu()])
        sum_error = max(sum_error, float((fice.probs.sum(dim=1) - 1).abs().max()))
        true = torch.isin(parsing.cpu(), garment_ids)
        wears = (parsing.cpu() == PARSING_LABELS["upper_garment"]).flatten(1).any(dim=1)
        edit = build_masks(instruction, parser=masks, mode="auto").edit[:, 0].cpu() >= 0.5
        tight = build_masks(instruction, parser=masks, mode="auto", dilation_px=0, feather_px=0).edit[:, 0].cpu()
        tight = tight >= 0.5
        mask_inter += int((edit & true)[wears].sum())
        mask_union += int((edit | true)[wears].sum())
        mask_true += int(true[wears].sum())
        tight_inter += int((tight & true)[wears].sum())
        tight_union += int((tight | true)[wears].sum())
    ious = parts_iou.ious()
    metrics = {"pixel_accuracy": parts_iou.correct / max(parts_iou.total, 1), "miou": sum(ious.values()) / len(ious)}
    metrics |= {f"iou_{name}": value for name, value in ious.items()}
    metrics |= {f"fice_{name}_iou": value for name, value in fice_iou.ious().items()}
    metrics["fice_sum_error"] = sum_error
    metrics["mask_iou"] = mask_inter / max(mask_union, 1)
    metrics["mask_recall"] = mask_inter / max(mask_true, 1)
    metrics["mask_iou_tight"] = tight_inter / max(tight_union, 1)
    return metrics


# ---------------------------------------------------------------------------------------------------
# The trainer.


def train_parser(
    out_dir: str | os.PathLike,  # folder the model file is written into (created if missing)
    *,
    steps: int,  # maximum optimisation steps
    time_budget_s: float | None = None,  # wall-clock limit of the training loop; None = steps only
    batch_size: int = 16,  # rendered people per step
    image_size: int = 64,  # render size in px (the editor's working resolution)
    device: str | torch.device = "cpu",  # where to train
    seed: int = 0,  # initialisation and training-data seed (held-out data is fixed)
    progress: bool = True,  # show a tqdm bar
    architecture: Mapping[str, Any] | None = None,  # {'type': PARSER_ARCHITECTURES name, ...}; None = small U-Net
    lr: float = 3e-3,  # Adam learning rate (cosine-decayed to 5% over the budget)
    class_weight_power: float = 0.5,  # class weights ∝ frequency ** -power (see class_weights); 0 = plain CE
    eval_images: int = EVAL_IMAGES,  # held-out renders for the metrics; 0 = no metrics beyond the loss
    world: str = DEFAULT_WORLD,  # synthetic world version of the renders (WORLD_VERSIONS)
) -> list[TrainReport]:
    """Train a parser on rendered people, write `out_dir`/parser.pt, and return two reports: the parser's and
    the segmenter view's.

    Records: ModelSpec('parser.pt', 'parser', {'labels': PARSING_LABELS, 'input_kind': 'imagenet',
    'architecture': ...}) and ModelSpec('parser.pt', 'parser_view', {'parser': <the parser's kwargs>, 'groups':
    {'background': ['background'], 'body': [every other class], 'head': ['head', 'hair']}}). Both are loaded
    back with ficekit.bundle.load_model (shapes checked) before the metrics are computed from them.
    The cross-entropy weighs classes by their frequency in the batches seen so far (rare classes such as hair,
    hands and shoes cover under 1% of the pixels each; with weights ** -0.5 the demo parser's mean IoU after 250
    steps rose from 0.19 to 0.69). Deterministic in `seed` when only `steps` ends the loop; the global RNG state
    is left as it was.
    """
    arch = dict(DEMO_ARCHITECTURE if architecture is None else architecture)
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not class_weight_power >= 0:
        raise ValueError(f"class_weight_power must be >= 0, got {class_weight_power}")
    Budget(steps, time_budget_s)  # validates steps and the time budget before any work
    labels = dict(PARSING_LABELS)
    device = torch.device(device)
    with forked_rng(device):
        torch.manual_seed(seed)
        net = build_parser_network(arch, len(labels)).to(device).train()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    counts = torch.zeros(len(labels), dtype=torch.long, device=device)  # pixels per class seen so far
    loss = torch.zeros(())
    bar = tqdm(total=steps, desc="training parser", disable=not progress)
    start = time.perf_counter()
    budget = Budget(steps, time_budget_s)
    check_world(world)
    with Prefetcher(training_batches(batch_size, image_size, seed, world)) as batches:
        while budget.next():
            batch = next(batches).to(device)
            set_lr(optimizer, lr * cosine_factor(budget))
            counts += torch.bincount(batch.parsing.flatten(), minlength=len(labels))
            weight = class_weights(counts, class_weight_power) if class_weight_power > 0 else None
            loss = parser_loss(parser_logits(net, batch.images), batch.parsing, weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    seconds = time.perf_counter() - start
    logger.info("parser: %d steps in %.1f s (%.2f steps/s)", budget.step, seconds, budget.step / seconds)

    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    atomic_write(out / PARSER_FILE, lambda tmp: torch.save({"state": state}, tmp))
    parser_kwargs = {"labels": labels, "input_kind": INPUT_KIND, "architecture": arch}
    parser_spec = ModelSpec(PARSER_FILE, "parser", parser_kwargs)
    view_kwargs = {"parser": copy.deepcopy(parser_kwargs), "groups": parser_view_groups(labels)}
    view_spec = ModelSpec(PARSER_FILE, "parser_view", view_kwargs)
    with forked_rng(device):  # the loaders initialise the networks randomly before loading
        parser = load_model("parser", parser_spec, out, device)
        view = load_model("segmenter", view_spec, out, device)
    _check_loaded(parser, view, image_size, device)

    metrics = {"loss": loss.item()}
    if eval_images > 0:
        held_out = [
            render_batch(held_out_seeds(eval_images)[i : i + 16], image_size, world) for i in range(0, eval_images, 16)
        ]
        metrics |= evaluate_parser(parser, view, held_out)
    logger.info("parser metrics: %s", {k: round(v, 4) for k, v in metrics.items()})
    parser_metrics = {k: v for k, v in metrics.items() if not k.startswith("fice_")}
    view_metrics = {k: v for k, v in metrics.items() if k.startswith("fice_")}
    settings = {
        "batch_size": batch_size, "image_size": image_size, "seed": seed, "lr": lr, "max_steps": steps, "world": world,
        "time_budget_s": time_budget_s, "class_weight_power": class_weight_power, "eval_images": eval_images,
        "device": str(device),
    }  # fmt: skip
    return [
        TrainReport("parser", parser_spec, budget.step, seconds, parser_metrics, settings),
        TrainReport("segmenter", view_spec, budget.step, seconds, view_metrics, settings | {"view_of": "parser"}),
    ]


@torch.no_grad()
def _check_loaded(parser: nn.Module, view: nn.Module, size: int, device: torch.device) -> None:
    """The reloaded parser and view are a SegmentationParser and a ParserSegmenterView giving [1,C,S,S] /
    [1,3,S,S] probabilities; RuntimeError otherwise."""
    if not isinstance(parser, SegmentationParser) or not isinstance(view, ParserSegmenterView):
        raise RuntimeError(
            f"the bundle loaders returned {type(parser).__name__} / {type(view).__name__}; expected "
            "SegmentationParser / ParserSegmenterView"
        )
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    probs, fice = parser(image).probs, view(image).probs
    if probs.shape != (1, len(PARSING_LABELS), size, size) or fice.shape != (1, len(FICE_LABELS), size, size):
        raise RuntimeError(
            f"reloaded parser / segmenter view give shapes {list(probs.shape)} / {list(fice.shape)}; expected "
            f"[1, {len(PARSING_LABELS)}, {size}, {size}] / [1, {len(FICE_LABELS)}, {size}, {size}]"
        )
