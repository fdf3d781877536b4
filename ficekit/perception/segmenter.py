"""Frozen segmenters that turn an image into named soft masks: FICE's 3-class DeepLabV3 and a generic parser.

FICE's segmenter (FICE `models/segmentation/model.py`, commit 7354216) is torchvision's
`deeplabv3_resnet50(num_classes=3)` without the auxiliary classifier. FICE feeds it the image as is:
[0,1] RGB, no mean/std normalisation, no resizing (`utils.read_image` = `to_tensor`, 256x256 inputs),
takes `model(x)['out']` (logits already upsampled to the input size by torchvision) and applies a
softmax over the channels (background, body, head). The checkpoint `segmentator.pt` is
`{'state': state_dict_of_a_training_module}`: the network's entries under the prefix 'model.' and the
loss's class weights under 'loss.weight', which FICE drops before loading.

A parser is any segmentation network plus a label map from the bundle (class name -> channel) and
optional merged names (e.g. 'head' = face + hair). FICE's segmenter is the parser with the label map
{'background': 0, 'body': 1, 'head': 2} and FICE's input convention.

A bundle without FICE's network can still give FICE its three classes as a view of a parser
(ParserSegmenterView): P(background), P(body), P(head) are sums of the parser's class probabilities over
a partition of its classes (by default head = head + hair, background = background, body = the rest).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ficekit.checkpoint_io import CheckpointError, load_state_dict_strict, load_torch_file, require_keys
from ficekit.shapes import check_shape

logger = logging.getLogger(__name__)

WHAT = "FICE segmenter checkpoint"
FICE_LABELS: dict[str, int] = {"background": 0, "body": 1, "head": 2}
FICE_STATE_KEY = "state"  # top-level key of segmentator.pt holding the training module's state dict
FICE_MODULE_PREFIX = "model."  # FICE's SegModel holds the DeepLabV3 as `self.model`
FICE_DROPPED_KEYS = ("loss.weight",)  # the training loss's class weights, not part of the network
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------------
# Input conversions: [N,3,H,W] RGB in [0,1] -> what the network was trained on.


def to_fice_input(images: torch.Tensor) -> torch.Tensor:
    """FICE's convention: the [0,1] image unchanged (no normalisation, no resizing)."""
    return images


def to_imagenet_input(images: torch.Tensor) -> torch.Tensor:
    """torchvision's convention: (image - ImageNet mean) / ImageNet std, per channel."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


INPUT_CONVERSIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "fice": to_fice_input,
    "imagenet": to_imagenet_input,
}


# ---------------------------------------------------------------------------------------------------
# Outputs.


@dataclass(frozen=True, eq=False)
class SegmentationMasks(Mapping[str, torch.Tensor]):
    """Class probabilities and named soft masks read from them.

    probs:  [N, C, H, W] softmax probabilities (sum to 1 over C), at the input image's resolution.
    labels: class name -> channel index of `probs`.
    groups: merged name -> class names whose probabilities are summed (e.g. 'head' -> face, hair).
    `masks[name]` is a [N, 1, H, W] mask in [0, 1] for a class or a merged name.
    """

    probs: torch.Tensor
    labels: Mapping[str, int]
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def _channels(self, name: str) -> list[int]:
        if name in self.labels:
            return [self.labels[name]]
        if name in self.groups:
            return [self.labels[member] for member in self.groups[name]]
        raise KeyError(f"unknown mask name {name!r}; known names: {list(self)}")

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.merge(name)

    def __iter__(self) -> Iterator[str]:
        yield from self.labels
        yield from self.groups

    def __len__(self) -> int:
        return len(self.labels) + len(self.groups)

    def merge(self, *names: str) -> torch.Tensor:
        """[N,1,H,W] mask of the union of the named classes/groups (each class counted once)."""
        if not names:
            raise ValueError("merge needs at least one mask name")
        channels = sorted({c for name in names for c in self._channels(name)})
        if len(channels) == 1:
            return self.probs[:, channels[0] : channels[0] + 1]
        index = torch.tensor(channels, device=self.probs.device)
        return self.probs.index_select(1, index).sum(dim=1, keepdim=True)


@dataclass(frozen=True, eq=False)
class FiceSegmentation(SegmentationMasks):
    """FICE's segmenter output: probs [N,3,H,W] over (background, body, head); masks are [N,1,H,W]."""

    @property
    def background(self) -> torch.Tensor:
        """[N,1,H,W] probability of background."""
        return self["background"]

    @property
    def body(self) -> torch.Tensor:
        """[N,1,H,W] probability of the body (person without the head); FICE keeps 1 - body fixed."""
        return self["body"]

    @property
    def head(self) -> torch.Tensor:
        """[N,1,H,W] probability of the head; FICE's head-shape loss and stitching use it."""
        return self["head"]


# ---------------------------------------------------------------------------------------------------
# Modules.


def _check_labels(labels: Mapping[str, int], groups: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Validate a label map and its merged names; return the groups as tuples."""
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(f"labels: expected a non-empty mapping name -> channel index, got {labels!r}")
    for name, index in labels.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"labels: names must be non-empty strings, got {name!r}")
        if not isinstance(index, int) or isinstance(index, bool):
            raise ValueError(f"labels: channel index of {name!r} must be an int, got {index!r}")
    indices = sorted(labels.values())
    if indices != list(range(len(labels))):
        raise ValueError(
            f"labels: channel indices must be 0..{len(labels) - 1}, each once (one name per output channel); "
            f"got {dict(labels)}"
        )
    out: dict[str, tuple[str, ...]] = {}
    for name, members in groups.items():
        if name in labels:
            raise ValueError(f"groups: {name!r} is already a class name in labels")
        members = (members,) if isinstance(members, str) else tuple(members)
        unknown = [m for m in members if m not in labels]
        if not members or unknown:
            raise ValueError(f"groups: {name!r} must list class names from labels {list(labels)}; got {list(members)}")
        out[name] = members
    return out


class SegmentationParser(nn.Module):
    """A frozen segmentation network returning named soft masks; differentiable w.r.t. the image.

    forward(images [N,3,H,W] RGB in [0,1]) -> SegmentationMasks with probs [N,C,H,W] at the input
    resolution (logits of another size are bilinearly resized before the softmax). The module stays in
    eval mode (train() is a no-op) with requires_grad False.
    """

    output_type: type[SegmentationMasks] = SegmentationMasks

    def __init__(
        self,
        model: nn.Module,  # network: converted image -> logits [N,C,H,W], or a dict with them under 'out'
        labels: Mapping[str, int],  # class name -> output channel; indices must be exactly 0..C-1
        input_kind: str,  # input conversion: 'fice' = [0,1] image as is, 'imagenet' = ImageNet mean/std
        groups: Mapping[str, Sequence[str]] | None = None,  # merged names, e.g. {'head': ['face', 'hair']}
    ) -> None:
        super().__init__()
        if input_kind not in INPUT_CONVERSIONS:
            raise ValueError(f"input_kind: unknown {input_kind!r}; expected one of {sorted(INPUT_CONVERSIONS)}")
        self.groups = _check_labels(labels, groups or {})
        self.labels = dict(labels)
        self.input_kind = input_kind
        self.model = model
        self.requires_grad_(False)
        super().train(False)

    @property
    def num_classes(self) -> int:
        """Number of output channels C."""
        return len(self.labels)

    @property
    def names(self) -> list[str]:
        """All mask names: classes, then merged names."""
        return [*self.labels, *self.groups]

    def train(self, mode: bool = True) -> SegmentationParser:
        """Frozen model: stays in eval mode whatever `mode` is."""
        return super().train(False)

    def convert_input(self, images: torch.Tensor) -> torch.Tensor:
        """The network's input for [N,3,H,W] RGB images in [0,1] (the one place the convention lives)."""
        return INPUT_CONVERSIONS[self.input_kind](images)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Raw logits [N,C,H,W] at the resolution of `images` [N,3,H,W] in [0,1]."""
        check_shape("images", images, [None, 3, None, None])
        if not images.is_floating_point():
            raise ValueError(f"images: expected a float tensor in [0,1], got dtype {images.dtype}")
        out: Any = self.model(self.convert_input(images))
        if isinstance(out, Mapping):
            if "out" not in out:
                raise ValueError(f"segmentation model returned a dict without 'out' (keys: {list(out)})")
            out = out["out"]
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[1] != self.num_classes:
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"segmentation model output: expected logits [N, {self.num_classes}, H, W] "
                f"(one channel per label {list(self.labels)}), got {got}"
            )
        if out.shape[-2:] != images.shape[-2:]:
            out = F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def forward(self, images: torch.Tensor) -> SegmentationMasks:
        """Softmax probabilities and named masks for `images` [N,3,H,W] RGB in [0,1]."""
        probs = F.softmax(self.logits(images), dim=1)
        return self.output_type(probs=probs, labels=self.labels, groups=self.groups)


class FiceSegmenter(SegmentationParser):
    """FICE's segmenter: DeepLabV3-ResNet50, 3 classes (background, body, head), [0,1] input as is.

    forward(images [N,3,H,W] in [0,1]) -> FiceSegmentation (probs [N,3,H,W]; .background/.body/.head
    are [N,1,H,W]). Matches FICE's SegModel.forward: softmax(model(x)['out'], dim=1).
    """

    output_type = FiceSegmentation

    def __init__(
        self,
        model: nn.Module,  # torchvision DeepLabV3 with 3 output classes (see build_fice_deeplab)
    ) -> None:
        super().__init__(model, FICE_LABELS, input_kind="fice")


def build_fice_deeplab(
    aux_loss: bool = False,  # also build the auxiliary FCN head (FICE's checkpoint has none; output unused)
    num_classes: int = 3,  # output channels; FICE: background, body, head
) -> nn.Module:
    """torchvision deeplabv3_resnet50 with random weights; nothing is downloaded."""
    from torchvision.models.segmentation import deeplabv3_resnet50

    return deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux_loss)


# ---------------------------------------------------------------------------------------------------
# FICE's three classes read off a parser.

VIEW_HEAD_LABELS: tuple[str, ...] = ("head", "hair")  # parser classes FICE's 'head' is made of by default
VIEW_BACKGROUND_LABELS: tuple[str, ...] = ("background",)  # parser classes of FICE's 'background' by default


def parser_view_groups(
    labels: Mapping[str, int],  # the parser's class name -> channel
    head_labels: Sequence[str] = VIEW_HEAD_LABELS,  # classes summed into FICE's 'head' (those present)
    background_labels: Sequence[str] = VIEW_BACKGROUND_LABELS,  # classes summed into 'background' (present)
) -> dict[str, list[str]]:
    """FICE's classes as groups of a parser's classes: {'background': [...], 'body': [...], 'head': [...]}.

    body = every class that is neither head nor background (garments, arms, hands, legs, shoes, ...), so the
    groups partition the parser's classes. Class order follows the parser's channels.
    """
    ordered = sorted(labels, key=lambda name: labels[name])
    head = [n for n in ordered if n in head_labels]
    background = [n for n in ordered if n in background_labels and n not in head]
    body = [n for n in ordered if n not in head and n not in background]
    return {"background": background, "body": body, "head": head}


def check_view_groups(labels: Mapping[str, int], groups: Any) -> dict[str, tuple[str, ...]]:
    """Validate FICE-class groups against a parser's classes; they must partition the classes, so the three
    summed probabilities sum to 1. Returns them as tuples in FICE_LABELS order; ValueError otherwise."""
    if not isinstance(groups, Mapping) or set(groups) != set(FICE_LABELS):
        got = list(groups) if isinstance(groups, Mapping) else type(groups).__name__
        raise ValueError(f"groups: expected exactly the keys {list(FICE_LABELS)} (FICE's classes), got {got}")
    out: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for fice_name in FICE_LABELS:
        members = groups[fice_name]
        if isinstance(members, str) or not isinstance(members, Sequence) or not members:
            raise ValueError(f"groups[{fice_name!r}]: expected a non-empty list of parser class names, got {members!r}")
        for member in members:
            if member not in labels:
                raise ValueError(
                    f"groups[{fice_name!r}]: {member!r} is not a parser class (classes: {list(labels)})"
                )
            if member in seen:
                raise ValueError(f"groups: {member!r} is in both {seen[member]!r} and {fice_name!r}")
            seen[member] = fice_name
        out[fice_name] = tuple(members)
    missing = [name for name in labels if name not in seen]
    if missing:
        raise ValueError(
            f"groups: parser class(es) {missing} are in no group; every class must be in exactly one of "
            f"{list(FICE_LABELS)} so the probabilities sum to 1"
        )
    return out


class ParserSegmenterView(nn.Module):
    """FICE's 3-class segmenter as a view of a parser: images -> FiceSegmentation, like FiceSegmenter.

    forward(images [N,3,H,W] RGB in [0,1]) runs the parser and sums its class probabilities over each group:
    probs[:, k] = sum of the parser's probabilities of groups[FICE class k] (background, body, head), so the
    three channels sum to 1 and .head is exactly the parser's merged head + hair probability. Frozen (eval mode,
    no parameter gradients) and differentiable with respect to the image. No weights of its own: the parser's
    are the view's (state-dict entries 'parser.model.*').
    """

    def __init__(
        self,
        parser: SegmentationParser,  # the frozen parser whose classes are grouped
        groups: Mapping[str, Sequence[str]] | None = None,  # FICE class -> parser classes; None = parser_view_groups
    ) -> None:
        super().__init__()
        if not isinstance(parser, SegmentationParser):
            raise ValueError(f"parser: expected a SegmentationParser, got {type(parser).__name__}")
        if groups is None:
            groups = parser_view_groups(parser.labels)
        self.class_groups = check_view_groups(parser.labels, groups)
        self.parser = parser
        self.labels = dict(FICE_LABELS)
        self.groups: dict[str, tuple[str, ...]] = {}  # no merged names beyond the three classes (as FiceSegmenter)
        self.requires_grad_(False)
        super().train(False)

    @property
    def num_classes(self) -> int:
        """Number of output channels: 3."""
        return len(self.labels)

    @property
    def names(self) -> list[str]:
        """Mask names: background, body, head."""
        return list(self.labels)

    def train(self, mode: bool = True) -> ParserSegmenterView:
        """Frozen model: stays in eval mode whatever `mode` is."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> FiceSegmentation:
        """FICE's (background, body, head) probabilities [N,3,H,W] for `images` [N,3,H,W] RGB in [0,1]."""
        return self.from_masks(self.parser(images))

    def from_masks(self, masks: SegmentationMasks) -> FiceSegmentation:
        """The view of a parser output already computed (so one perception pass runs the parser once)."""
        probs = torch.cat([masks.merge(*self.class_groups[name]) for name in self.labels], dim=1)
        return FiceSegmentation(probs=probs, labels=self.labels, groups=self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.class_groups}"


# ---------------------------------------------------------------------------------------------------
# Loaders.


def _network_state(ckpt: Any, path: str | os.PathLike, what: str, state_key: str | None) -> dict[str, Any]:
    """The network's state dict from a checkpoint: under `state_key`, minus FICE's loss entries and prefix."""
    if state_key is not None:
        require_keys(ckpt, [state_key], path, what)
        state = ckpt[state_key]
    else:
        state = ckpt
    if not isinstance(state, Mapping) or not state:
        where = f"entry {state_key!r}" if state_key is not None else "the file"
        raise CheckpointError(f"{what}: {path}: {where} is a {type(state).__name__}, expected a state dict")
    state = {str(k): v for k, v in state.items() if k not in FICE_DROPPED_KEYS}
    if state and all(k.startswith(FICE_MODULE_PREFIX) for k in state):
        state = {k[len(FICE_MODULE_PREFIX) :]: v for k, v in state.items()}
    return state


def load_segmenter(path: str | os.PathLike, device: str | torch.device = "cpu") -> FiceSegmenter:
    """Load FICE's `segmentator.pt` into a frozen FiceSegmenter.

    Format: {'state': {'model.<torchvision DeepLabV3 key>': tensor, ..., 'loss.weight': [3]}} (a bare
    DeepLabV3 state dict under 'state', without the 'model.' prefix, is read too). The auxiliary head is
    built when the file has 'aux_classifier.*' entries. Raises CheckpointError naming the file for a
    missing, truncated or foreign file, a missing 'state', a wrong class count or mismatched keys/shapes.
    """
    ckpt = load_torch_file(path, WHAT)
    state = _network_state(ckpt, path, WHAT, FICE_STATE_KEY)
    head = state.get("classifier.4.weight")
    if not isinstance(head, torch.Tensor):
        raise CheckpointError(
            f"{WHAT}: {path} has no DeepLabV3 classifier entry 'model.classifier.4.weight' under 'state' "
            f"(first keys: {list(state)[:5]}) — not a FICE segmenter"
        )
    if head.ndim != 4 or head.shape[0] != len(FICE_LABELS):
        raise CheckpointError(
            f"{WHAT}: {path}: 'model.classifier.4.weight' has shape {list(head.shape)}, expected "
            f"[{len(FICE_LABELS)}, 256, 1, 1] (classes {list(FICE_LABELS)})"
        )
    aux = any(k.startswith("aux_classifier.") for k in state)
    net = build_fice_deeplab(aux_loss=aux)
    load_state_dict_strict(net, state, path, WHAT)
    logger.info("loaded FICE segmenter from %s (aux head: %s)", path, aux)
    return FiceSegmenter(net).to(device)


def load_parser(
    path: str | os.PathLike,  # checkpoint file: a state dict, or a dict holding one under `state_key`
    model: nn.Module,  # the network, already built with the architecture the file was saved from
    labels: Mapping[str, int],  # class name -> output channel (from the bundle)
    input_kind: str,  # 'fice' or 'imagenet' (see INPUT_CONVERSIONS)
    groups: Mapping[str, Sequence[str]] | None = None,  # merged names, e.g. {'head': ['face', 'hair']}
    state_key: str | None = "state",  # where the state dict sits in the file; None = the file is the state dict
    device: str | torch.device = "cpu",  # where the parser is put
) -> SegmentationParser:
    """Load weights into `model` (strict keys and shapes) and wrap it as a frozen SegmentationParser.

    Like FICE's file, a leading 'model.' on every key and a 'loss.weight' entry are tolerated.
    Raises CheckpointError naming the file for a missing/truncated/foreign file or mismatched keys/shapes.
    """
    what = "segmentation parser checkpoint"
    ckpt = load_torch_file(path, what)
    state = _network_state(ckpt, path, what, state_key)
    load_state_dict_strict(model, state, path, what)
    return SegmentationParser(model, labels, input_kind=input_kind, groups=groups).to(device)
