"""The demo parser trainer, the small U-Net it trains, and the segmenter view recorded beside it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ficekit.bundle import ModelSpec, load_model
from ficekit.instruction import parse_instruction
from ficekit.masking import build_masks
from ficekit.perception.parser_networks import build_parser_network
from ficekit.perception.segmenter import (
    FiceSegmentation,
    ParserSegmenterView,
    SegmentationParser,
    parser_view_groups,
)
from ficekit.perception.small_unet import SmallUNet
from ficekit.synthetic.dataset import held_out_seeds, render_batch
from ficekit.synthetic.train_parser import (
    PARSER_FILE,
    class_weights,
    evaluate_parser,
    parser_logits,
    parser_loss,
    train_parser,
)
from ficekit.synthetic.world import PARSING_LABELS

TINY = {"type": "small_unet", "base_channels": 8, "depth": 2}
GROUPS = {
    "background": ["background"],
    "body": ["upper_garment", "lower_garment", "dress", "outerwear", "arms", "hands", "legs", "shoes"],
    "head": ["head", "hair"],
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: the trainers render batches in a second thread, and on a shared 2-core machine
    two OpenMP threads per process oversubscribe the cores (measured up to 20x slower steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------
# The small U-Net.


@pytest.mark.parametrize(("size", "depth"), [((64, 64), 3), ((37, 50), 3), ((9, 5), 0)])
def test_small_unet_any_size(size: tuple[int, int], depth: int) -> None:
    torch.manual_seed(0)
    net = SmallUNet(5, base_channels=8, depth=depth)
    x = torch.rand(2, 3, *size, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 5, *size)
    out[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_small_unet_options() -> None:
    net = build_parser_network({"type": "small_unet", "base_channels": 8, "depth": 2}, num_classes=11)
    assert isinstance(net, SmallUNet) and net.head.out_channels == 11 and len(net.down) == 3
    with pytest.raises(ValueError, match="cannot be built.*unexpected keyword argument 'width'"):
        build_parser_network({"type": "small_unet", "width": 8}, num_classes=11)
    with pytest.raises(ValueError, match="base_channels must be an int >= 1"):
        SmallUNet(3, base_channels=0)
    with pytest.raises(ValueError, match="depth must be an int >= 0"):
        SmallUNet(3, depth=-1)
    with pytest.raises(ValueError, match="x: dimension 1 is 1"):
        SmallUNet(3)(torch.rand(1, 1, 8, 8))


# ---------------------------------------------------------------------------------------------------
# Metrics, on a parser that knows the answer.


class Oracle(nn.Module):
    """Returns one-hot logits of fixed label maps (the ground truth of a fixed batch)."""

    def __init__(self, parsing: torch.Tensor) -> None:
        super().__init__()
        onehot = F.one_hot(parsing, len(PARSING_LABELS)).permute(0, 3, 1, 2).float()
        self.register_buffer("logits", onehot * 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits + 0 * x.mean()


def test_metrics_of_a_perfect_parser() -> None:
    batch = render_batch(held_out_seeds(8), 64)
    parser = SegmentationParser(Oracle(batch.parsing), PARSING_LABELS, input_kind="imagenet")
    view = ParserSegmenterView(parser, GROUPS)
    metrics = evaluate_parser(parser, view, [batch])
    assert metrics["pixel_accuracy"] == 1 and metrics["miou"] == pytest.approx(1)
    assert metrics["fice_head_iou"] == metrics["fice_body_iou"] == metrics["fice_background_iou"] == 1
    assert metrics["fice_sum_error"] < 1e-5
    # The auto mask for "red shirt" from a perfect parser covers the true top (minus morphology at 64 px).
    # (the editor's 4-px dilation and feathering make the default mask much larger than a 64-px top).
    assert metrics["mask_recall"] > 0.95 and metrics["mask_iou"] > 0.3 and metrics["mask_iou_tight"] > 0.85, metrics
    wrong = SegmentationParser(Oracle(torch.roll(batch.parsing, 1, dims=0)), PARSING_LABELS, input_kind="imagenet")
    worse = evaluate_parser(wrong, ParserSegmenterView(wrong, GROUPS), [batch])
    assert worse["miou"] < 0.8 and worse["mask_iou"] < metrics["mask_iou"]


# ---------------------------------------------------------------------------------------------------
# Training.


def test_loss_decreases_on_a_fixed_batch() -> None:
    batch = render_batch([3, 5, 8, 13], 64)
    torch.manual_seed(0)
    net = build_parser_network(TINY, len(PARSING_LABELS))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        loss = parser_loss(parser_logits(net, batch.images), batch.parsing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.5 * history[0], history


def test_class_weights_by_hand() -> None:
    w = class_weights(torch.tensor([80, 20, 0]), power=0.5)  # frequencies 0.8, 0.2, 0 (floored at 1e-3)
    raw = torch.tensor([0.8**-0.5, 0.2**-0.5, 1e-3**-0.5])
    torch.testing.assert_close(w, raw / (0.8 * raw[0] + 0.2 * raw[1]))
    assert (0.8 * w[0] + 0.2 * w[1]).item() == pytest.approx(1)  # the pixel-averaged weight is 1
    torch.testing.assert_close(class_weights(torch.tensor([80, 20, 0]), power=0), torch.ones(3))
    logits, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    expected = (F.cross_entropy(logits, labels, reduction="none") * w[labels]).sum() / w[labels].sum()
    torch.testing.assert_close(parser_loss(logits, labels, w), expected)


def test_tiny_run_writes_a_loadable_parser_and_view(tmp_path: Path) -> None:
    reports = train_parser(tmp_path, steps=2, batch_size=2, architecture=TINY, progress=False, eval_images=4)
    parser_report, view_report = reports
    assert [r.role for r in reports] == ["parser", "segmenter"]
    assert parser_report.steps == view_report.steps == 2 and parser_report.seconds > 0
    kwargs = {"labels": PARSING_LABELS, "input_kind": "imagenet", "architecture": TINY}
    assert parser_report.spec == ModelSpec(PARSER_FILE, "parser", kwargs)
    assert view_report.spec == ModelSpec(PARSER_FILE, "parser_view", {"parser": kwargs, "groups": GROUPS})
    assert set(parser_report.metrics) >= {"loss", "pixel_accuracy", "miou", "iou_background", "mask_iou"}
    assert set(view_report.metrics) >= {"fice_head_iou", "fice_body_iou", "fice_background_iou"}
    assert [p.name for p in tmp_path.iterdir()] == [PARSER_FILE]  # no temporary file left behind

    # The records survive bundle.json (JSON round trip) and load with the bundle loaders.
    parser_spec, view_spec = (ModelSpec(**json.loads(json.dumps(asdict(r.spec)))) for r in reports)
    parser = load_model("parser", parser_spec, tmp_path)
    view = load_model("segmenter", view_spec, tmp_path)
    assert isinstance(parser, SegmentationParser) and isinstance(view, ParserSegmenterView)
    x = render_batch(held_out_seeds(2), 64).images
    masks, fice = parser(x), view(x)
    assert masks.probs.shape == (2, 11, 64, 64) and isinstance(fice, FiceSegmentation)
    assert fice.probs.shape == (2, 3, 64, 64)
    torch.testing.assert_close(fice.head, masks.merge("head", "hair"), rtol=0, atol=0)
    edit = build_masks(parse_instruction("red shirt"), parser=masks, mode="auto").edit
    assert edit.shape == (2, 1, 64, 64)


def test_time_budget_ends_the_loop(tmp_path: Path) -> None:
    reports = train_parser(
        tmp_path, steps=100_000, time_budget_s=1.0, batch_size=1, architecture=TINY, progress=False, eval_images=0
    )
    assert all(1 <= r.steps < 100_000 for r in reports)
    assert reports[0].seconds < 1.0 + 3.0  # the budget plus at most the step that was running (slow shared CPUs)
    assert set(reports[0].metrics) == {"loss"} and (tmp_path / PARSER_FILE).is_file()


def test_same_seed_same_weights(tmp_path: Path) -> None:
    def run(name: str, seed: int) -> dict[str, torch.Tensor]:
        train_parser(
            tmp_path / name, steps=3, batch_size=2, architecture=TINY, seed=seed, progress=False, eval_images=0
        )
        return torch.load(tmp_path / name / PARSER_FILE, weights_only=True)["state"]

    before = torch.get_rng_state()
    a, b, c = run("a", 0), run("b", 0), run("c", 1)
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is left alone
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_default_view_groups_are_ficekits() -> None:
    assert parser_view_groups(PARSING_LABELS) == GROUPS


def test_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="architecture must be a dict"):
        train_parser(tmp_path / "a", steps=1, architecture={"type": "unet9000"}, progress=False)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        train_parser(tmp_path / "b", steps=0, architecture=TINY, progress=False)
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
def test_a_short_demo_training_gives_usable_masks(tmp_path: Path) -> None:
    """300 steps of the demo parser (about 90 s on 2 CPU cores): the parser, its FICE view and the auto mask
    for "red shirt" on held-out renders (measured: mIoU 0.71, view head IoU 0.74, mask recall 0.94, tight IoU 0.80)."""
    parser_report, view_report = train_parser(tmp_path, steps=300, progress=False, eval_images=32)
    m, v = parser_report.metrics, view_report.metrics
    assert m["miou"] > 0.5 and m["iou_upper_garment"] > 0.5, m
    assert m["mask_recall"] > 0.85 and m["mask_iou_tight"] > 0.6, m
    assert v["fice_head_iou"] > 0.5 and v["fice_body_iou"] > 0.75, v
