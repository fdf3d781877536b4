"""FICE's segmenter loader and the generic segmentation parser."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ficekit.checkpoint_io import CheckpointError
from ficekit.perception.segmenter import (
    FiceSegmentation,
    FiceSegmenter,
    ParserSegmenterView,
    SegmentationMasks,
    SegmentationParser,
    load_parser,
    load_segmenter,
)

torchvision = pytest.importorskip("torchvision")
from torchvision.models.segmentation import deeplabv3_resnet50  # noqa: E402


def _reference_net(aux_loss: bool = False, seed: int = 0) -> nn.Module:
    """A random torchvision DeepLabV3 with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=3, aux_loss=aux_loss)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _fice_file(state: dict[str, torch.Tensor], path: Path, prefix: str = "model.") -> Path:
    """Write `state` in segmentator.pt's layout: the training module's state dict under 'state'."""
    entries = {prefix + k: v for k, v in state.items()}
    entries["loss.weight"] = torch.tensor([0.5, 1.0, 2.0])  # CrossEntropyLoss class weights, dropped by FICE
    torch.save({"state": entries}, path)
    return path


def _tiny_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Same keys and shapes, each tensor a broadcast of one value (tiny on disk; for error paths)."""
    return {k: torch.full((), 0.01, dtype=v.dtype).expand(v.shape) for k, v in state.items()}


@pytest.fixture(scope="module")
def reference() -> nn.Module:
    return _reference_net()


@pytest.fixture(scope="module")
def fice_ckpt(reference: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fice_file(reference.state_dict(), tmp_path_factory.mktemp("seg") / "segmentator.pt")


@pytest.fixture(scope="module")
def segmenter(fice_ckpt: Path) -> FiceSegmenter:
    return load_segmenter(fice_ckpt)


# ---------------------------------------------------------------------------------------------------
# FICE segmenter


def test_matches_torchvision_forward_with_fice_input(segmenter: FiceSegmenter, reference: nn.Module) -> None:
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 48)
    out = segmenter(x)
    with torch.no_grad():
        expected = F.softmax(reference(x)["out"], dim=1)  # FICE: the [0,1] image as is, ['out'], softmax
    assert isinstance(out, FiceSegmentation)
    assert out.probs.shape == (2, 3, 64, 48)
    torch.testing.assert_close(out.probs, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.background, expected[:, 0:1], rtol=0, atol=1e-6)
    torch.testing.assert_close(out.body, expected[:, 1:2], rtol=0, atol=1e-6)
    torch.testing.assert_close(out.head, expected[:, 2:3], rtol=0, atol=1e-6)
    torch.testing.assert_close(out.probs.sum(dim=1), torch.ones(2, 64, 48), rtol=0, atol=1e-5)
    # ImageNet normalisation would give other probabilities: the test would notice a wrong convention.
    with torch.no_grad():
        normalised = F.softmax(reference(to_imagenet(x))["out"], dim=1)
    assert not torch.allclose(out.probs, normalised, atol=1e-3)


def test_frozen_and_differentiable(segmenter: FiceSegmenter) -> None:
    assert not segmenter.training and not segmenter.model.training
    assert all(not p.requires_grad for p in segmenter.parameters())
    segmenter.train()
    assert not segmenter.model.training, "train() must leave the frozen model in eval mode"
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    segmenter(x).head.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    assert all(p.grad is None for p in segmenter.parameters())


def test_aux_head_and_unprefixed_state(tmp_path: Path) -> None:
    ref = _reference_net(aux_loss=True, seed=3)
    state = _tiny_state(ref.state_dict())
    ref.load_state_dict(state)
    path = _fice_file(state, tmp_path / "aux.pt", prefix="")
    seg = load_segmenter(path)
    assert seg.model.aux_classifier is not None
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = F.softmax(ref(x)["out"], dim=1)
    torch.testing.assert_close(seg(x).probs, expected, rtol=0, atol=1e-6)


def test_image_shape_errors(segmenter: FiceSegmenter) -> None:
    with pytest.raises(ValueError, match="images"):
        segmenter(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="dimension 1"):
        segmenter(torch.rand(1, 4, 32, 32))
    with pytest.raises(ValueError, match="float"):
        segmenter(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


@pytest.fixture(scope="module")
def tiny_fice_state(reference: nn.Module) -> dict[str, torch.Tensor]:
    return _tiny_state(reference.state_dict())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_segmenter(tmp_path / "absent.pt")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_segmenter(tmp_path / "empty.pt")


def test_truncated_file(tmp_path: Path, tiny_fice_state: dict[str, torch.Tensor]) -> None:
    full = _fice_file(tiny_fice_state, tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(full[: len(full) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_segmenter(tmp_path / "cut.pt")


def test_foreign_file(tmp_path: Path) -> None:
    (tmp_path / "notes.pt").write_text("not a checkpoint at all\n")
    with pytest.raises(CheckpointError, match="is not a plain torch checkpoint"):
        load_segmenter(tmp_path / "notes.pt")
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list"):
        load_segmenter(tmp_path / "list.pt")


def test_missing_state_key(tmp_path: Path, tiny_fice_state: dict[str, torch.Tensor]) -> None:
    torch.save({"state_dict": tiny_fice_state}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"lacks key\(s\) \['state'\]"):
        load_segmenter(tmp_path / "other.pt")


def test_not_a_deeplab(tmp_path: Path) -> None:
    torch.save({"state": {"model.weight": torch.zeros(3, 3)}}, tmp_path / "linear.pt")
    with pytest.raises(CheckpointError, match="classifier.4.weight"):
        load_segmenter(tmp_path / "linear.pt")


def test_wrong_class_count(tmp_path: Path, tiny_fice_state: dict[str, torch.Tensor]) -> None:
    state = dict(tiny_fice_state)
    state["classifier.4.weight"] = torch.zeros(5, 256, 1, 1)
    state["classifier.4.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match=r"shape \[5, 256, 1, 1\]"):
        load_segmenter(_fice_file(state, tmp_path / "five.pt"))


def test_wrong_shape(tmp_path: Path, tiny_fice_state: dict[str, torch.Tensor]) -> None:
    state = dict(tiny_fice_state)
    state["backbone.conv1.weight"] = torch.zeros(64, 3, 3, 3)
    with pytest.raises(CheckpointError, match="backbone.conv1.weight"):
        load_segmenter(_fice_file(state, tmp_path / "shape.pt"))


def test_missing_and_unexpected_keys(tmp_path: Path, tiny_fice_state: dict[str, torch.Tensor]) -> None:
    state = {k: v for k, v in tiny_fice_state.items() if k != "backbone.layer1.0.conv1.weight"}
    with pytest.raises(CheckpointError, match="1 missing"):
        load_segmenter(_fice_file(state, tmp_path / "missing.pt"))
    state = dict(tiny_fice_state, extra=torch.zeros(1))
    with pytest.raises(CheckpointError, match="unexpected"):
        load_segmenter(_fice_file(state, tmp_path / "extra.pt"))


# ---------------------------------------------------------------------------------------------------
# Generic parser


class FixedLogits(nn.Module):
    """Returns fixed logits for every image and records the input it was given."""

    def __init__(self, logits: torch.Tensor, as_dict: bool = False) -> None:
        super().__init__()
        self.register_buffer("fixed", logits)
        self.as_dict = as_dict
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        self.seen = x.detach().clone()
        out = self.fixed.expand(x.shape[0], -1, -1, -1) + 0 * x.mean()
        return {"out": out, "aux": out} if self.as_dict else out


LABELS = {"background": 0, "face": 1, "hair": 2, "upper_garment": 3}
# Logits [1, 4, 2, 2] chosen by hand; the expected probabilities are their softmax over channels.
KNOWN_LOGITS = torch.tensor(
    [[[[2.0, 0.0], [0.0, -1.0]], [[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [3.0, 0.0]], [[0.0, 2.0], [0.0, 1.0]]]]
)


def test_parser_named_masks_and_merging() -> None:
    parser = SegmentationParser(FixedLogits(KNOWN_LOGITS), LABELS, input_kind="fice", groups={"head": ["face", "hair"]})
    x = torch.rand(2, 3, 2, 2)
    masks = parser(x)
    assert isinstance(masks, SegmentationMasks)
    torch.testing.assert_close(parser.model.seen, x)  # 'fice' passes the [0,1] image unchanged
    e = torch.exp(KNOWN_LOGITS)
    p = (e / e.sum(dim=1, keepdim=True)).expand(2, -1, -1, -1)
    assert list(masks) == ["background", "face", "hair", "upper_garment", "head"] and len(masks) == 5
    torch.testing.assert_close(masks["hair"], p[:, 2:3])
    torch.testing.assert_close(masks["head"], p[:, 1:2] + p[:, 2:3])
    torch.testing.assert_close(masks.merge("head", "hair"), p[:, 1:2] + p[:, 2:3])  # hair counted once
    torch.testing.assert_close(masks.merge("upper_garment", "background"), p[:, 3:4] + p[:, 0:1])
    assert masks["head"].shape == (2, 1, 2, 2) and "head" in masks and "dress" not in masks
    with pytest.raises(KeyError, match=r"'dress'.*known names: \['background', 'face', 'hair'"):
        masks["dress"]
    with pytest.raises(ValueError, match="at least one"):
        masks.merge()


def test_parser_dict_output_imagenet_input_and_upsampling() -> None:
    low = torch.randn(1, 4, 3, 3)
    parser = SegmentationParser(FixedLogits(low, as_dict=True), LABELS, input_kind="imagenet")
    x = torch.rand(1, 3, 12, 12)
    masks = parser(x)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(parser.model.seen, (x - mean) / std)
    up = F.interpolate(low, size=(12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(masks.probs, F.softmax(up, dim=1))


def test_parser_gradients_and_frozen() -> None:
    torch.manual_seed(0)
    parser = SegmentationParser(nn.Conv2d(3, 4, 1), LABELS, input_kind="imagenet")
    assert not parser.training and all(not p.requires_grad for p in parser.parameters())
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    parser(x)["face"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("labels", "groups", "kind", "message"),
    [
        ({}, None, "fice", "non-empty mapping"),
        ({"a": 0, "b": 2}, None, "fice", "must be 0..1"),
        ({"a": 0, "b": 0}, None, "fice", "must be 0..1"),
        ({"a": 0, "b": 1.0}, None, "fice", "must be an int"),
        ({"a": 0, "b": 1}, {"c": ["a", "x"]}, "fice", "must list class names"),
        ({"a": 0, "b": 1}, {"a": ["b"]}, "fice", "already a class name"),
        ({"a": 0, "b": 1}, None, "bgr255", "unknown 'bgr255'"),
    ],
)
def test_parser_bad_configuration(labels: dict, groups: dict | None, kind: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SegmentationParser(nn.Conv2d(3, 2, 1), labels, input_kind=kind, groups=groups)


def test_parser_wrong_channel_count() -> None:
    parser = SegmentationParser(nn.Conv2d(3, 3, 1), LABELS, input_kind="fice")
    with pytest.raises(ValueError, match=r"expected logits \[N, 4, H, W\].*got \[1, 3, 4, 4\]"):
        parser(torch.rand(1, 3, 4, 4))


def test_load_parser(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = nn.Conv2d(3, 4, 1)
    torch.save({"state": {"model." + k: v for k, v in trained.state_dict().items()}}, tmp_path / "parser.pt")
    torch.save(trained.state_dict(), tmp_path / "bare.pt")
    x = torch.rand(1, 3, 5, 5)
    expected = F.softmax(trained(to_imagenet(x)), dim=1).detach()
    for path, key in ((tmp_path / "parser.pt", "state"), (tmp_path / "bare.pt", None)):
        parser = load_parser(path, nn.Conv2d(3, 4, 1), LABELS, input_kind="imagenet", state_key=key)
        torch.testing.assert_close(parser(x).probs, expected)
    with pytest.raises(CheckpointError, match="has shape"):
        load_parser(tmp_path / "parser.pt", nn.Conv2d(3, 4, 3), LABELS, input_kind="imagenet")
    with pytest.raises(CheckpointError, match=r"lacks key\(s\) \['state'\]"):
        load_parser(tmp_path / "bare.pt", nn.Conv2d(3, 4, 1), LABELS, input_kind="imagenet")


def to_imagenet(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


# ---------------------------------------------------------------------------------------------------
# FICE's three classes as a view of a parser

PARSING = {
    "background": 0, "head": 1, "hair": 2, "upper_garment": 3, "lower_garment": 4, "dress": 5, "outerwear": 6,
    "arms": 7, "hands": 8, "legs": 9, "shoes": 10,
}  # fmt: skip
VIEW_GROUPS = {
    "background": ["background"],
    "body": ["upper_garment", "lower_garment", "dress", "outerwear", "arms", "hands", "legs", "shoes"],
    "head": ["head", "hair"],
}
# Hand-made logits [1, 11, 2, 2]: pixel (0,0) mostly head, (0,1) mostly hair, (1,0) shirt, (1,1) background.
VIEW_LOGITS = torch.full((1, 11, 2, 2), -1.0)
VIEW_LOGITS[0, 1, 0, 0], VIEW_LOGITS[0, 2, 0, 1], VIEW_LOGITS[0, 3, 1, 0], VIEW_LOGITS[0, 0, 1, 1] = 3.0, 2.0, 4.0, 5.0
VIEW_LOGITS[0, 2, 0, 0] = 1.0  # some hair at the head pixel too


def test_parser_view_sums_the_parsers_probabilities() -> None:
    parser = SegmentationParser(FixedLogits(VIEW_LOGITS), PARSING, input_kind="imagenet")
    view = ParserSegmenterView(parser)  # default groups: head + hair, background, the rest
    assert view.class_groups == {k: tuple(v) for k, v in VIEW_GROUPS.items()}
    x = torch.rand(2, 3, 2, 2)
    fice, masks = view(x), parser(x)
    assert isinstance(fice, FiceSegmentation) and fice.probs.shape == (2, 3, 2, 2)
    assert view.names == ["background", "body", "head"] and view.num_classes == 3
    p = F.softmax(VIEW_LOGITS, dim=1).expand(2, -1, -1, -1)
    assert torch.equal(fice.head, masks.merge("head", "hair"))  # exactly the parser's head + hair
    torch.testing.assert_close(fice.head, p[:, 1:2] + p[:, 2:3])
    torch.testing.assert_close(fice.background, p[:, 0:1])
    torch.testing.assert_close(fice.body, p[:, 3:].sum(dim=1, keepdim=True))
    torch.testing.assert_close(fice.probs.sum(dim=1), torch.ones(2, 2, 2), rtol=0, atol=1e-6)
    assert fice.probs.argmax(dim=1)[0].tolist() == [[2, 2], [1, 0]]  # head, head (hair), body, background


def test_parser_view_frozen_differentiable_and_fice_masks() -> None:
    from ficekit.masking import fice_masks
    from ficekit.objective import HeadShapeTerm

    torch.manual_seed(0)
    parser = SegmentationParser(nn.Conv2d(3, 11, 1), PARSING, input_kind="imagenet")
    view = ParserSegmenterView(parser, VIEW_GROUPS)
    view.train()
    assert not view.training and not parser.training and all(not p.requires_grad for p in view.parameters())
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    fice = view(x)
    fice.head.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    masks = fice_masks(fice)  # FICE mask mode: keep = 1 - body, blend = 1 - head
    torch.testing.assert_close(masks.keep, 1 - fice.body)
    torch.testing.assert_close(masks.blend, 1 - fice.head)
    HeadShapeTerm(view)  # the head-shape term accepts the view (it has a 'head' mask)
    assert list(view.state_dict()) == ["parser.model.weight", "parser.model.bias"]  # the parser's weights only


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"background": ["background"], "head": ["head", "hair"]}, "exactly the keys"),
        ({**VIEW_GROUPS, "body": VIEW_GROUPS["body"][:-1]}, r"\['shoes'\] are in no group"),
        ({**VIEW_GROUPS, "head": ["head", "hair", "arms"]}, "'arms' is in both"),
        ({**VIEW_GROUPS, "head": ["head", "face"]}, "'face' is not a parser class"),
        ({**VIEW_GROUPS, "background": []}, "non-empty list"),
        ({**VIEW_GROUPS, "background": "background"}, "non-empty list"),
    ],
)
def test_parser_view_groups_must_partition_the_classes(groups: dict, message: str) -> None:
    parser = SegmentationParser(nn.Conv2d(3, 11, 1), PARSING, input_kind="imagenet")
    with pytest.raises(ValueError, match=message):
        ParserSegmenterView(parser, groups)
    with pytest.raises(ValueError, match="expected a SegmentationParser"):
        ParserSegmenterView(nn.Conv2d(3, 11, 1), VIEW_GROUPS)  # type: ignore[arg-type]
