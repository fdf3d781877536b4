"""The demo DensePose trainer: chart resampling, the losses on hand-made cases, tiny runs, budget, determinism."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from ficekit.bundle import ModelSpec, load_model
from ficekit.masking import densepose_part_maps, densepose_probabilities
from ficekit.perception.densepose import DensePoseChartModel, DensePoseOutput
from ficekit.perception.densepose_checkpoint import read_pkl, read_state_dict
from ficekit.synthetic.dataset import render_batch
from ficekit.synthetic.train_densepose import (
    DENSEPOSE_FILE,
    DensePoseLossWeights,
    charts_to_pixels,
    densepose_losses,
    total_loss,
    train_densepose,
)
from ficekit.synthetic.training import Prefetcher

# A very small chart model (the demo's layout, narrower): 64 x 64 charts, so the box grid is the 64-px pixel grid.
TINY = {
    "depth": 18, "stem_out_channels": 8, "res2_out_channels": 8, "fpn_channels": 16, "decoder_conv_dims": 16,
    "decoder_num_classes": 16, "head_num_convs": 1, "head_conv_dim": 16, "pooler_resolution": 16,
    "pooler_aligned": True, "pixel_std_bgr": [57.375, 57.12, 58.395],
}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: the trainers render batches in a second thread, and on a shared 2-core machine
    two OpenMP threads per process oversubscribe the cores (measured up to 20x slower steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _output(coarse: torch.Tensor, fine: torch.Tensor, u: torch.Tensor, v: torch.Tensor, size: int) -> DensePoseOutput:
    """Charts for one whole-image box per image of a size x size image."""
    n = coarse.shape[0]
    boxes = torch.tensor([[0.0, 0.0, size, size]]).expand(n, 4)
    return DensePoseOutput(coarse, fine, u, v, boxes=boxes, batch_index=torch.arange(n))


# ---------------------------------------------------------------------------------------------------
# Charts -> pixels.


def test_charts_to_pixels_identity_when_grid_is_pixel_grid() -> None:
    charts = torch.randn(2, 5, 8, 8)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0]] * 2)
    torch.testing.assert_close(charts_to_pixels(charts, boxes, (8, 8)), charts, rtol=0, atol=1e-6)


def test_charts_to_pixels_matches_the_inference_paste() -> None:
    """Training reads the charts at the pixels where densepose_part_maps pastes them (8 x 8 grid, 20 x 20 image)."""
    torch.manual_seed(0)
    charts = (torch.randn(2, 2, 8, 8), torch.randn(2, 25, 8, 8), torch.rand(2, 25, 8, 8), torch.rand(2, 25, 8, 8))
    out = _output(*charts, 20)
    expected = densepose_part_maps(out, (20, 20), 2)
    got = charts_to_pixels(densepose_probabilities(out), out.boxes, (20, 20))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # A box that is not the whole image: cell centres land where the box says.
    box = torch.tensor([[4.0, 2.0, 12.0, 10.0]])
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8)  # value = grid column
    pix = charts_to_pixels(ramp, box, (12, 16))
    assert pix[0, 0, 5, 4 + 3].item() == pytest.approx(3.0)  # pixel x = 7 (centre 7.5) is grid column 3


# ---------------------------------------------------------------------------------------------------
# Losses on hand-made cases (4 x 4 image, charts on the pixel grid).

PARTS = torch.tensor([[[0, 0, 0, 0], [0, 2, 2, 0], [0, 15, 23, 0], [0, 0, 0, 0]]])
GT_U = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(1)) * (PARTS > 0)
GT_V = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(2)) * (PARTS > 0)


def _charts(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random charts whose U/V on the ground-truth part's channel equal the ground truth at person pixels."""
    g = torch.Generator().manual_seed(seed)
    coarse, fine = torch.randn(1, 2, 4, 4, generator=g), torch.randn(1, 25, 4, 4, generator=g)
    u, v = torch.rand(1, 25, 4, 4, generator=g) * 3, torch.rand(1, 25, 4, 4, generator=g) * 3
    person = PARTS[0] > 0
    for y, x in person.nonzero().tolist():
        u[0, PARTS[0, y, x], y, x] = GT_U[0, y, x]
        v[0, PARTS[0, y, x], y, x] = GT_V[0, y, x]
    return coarse, fine, u, v


def test_uv_loss_only_on_person_pixels_of_the_true_part() -> None:
    coarse, fine, u, v = _charts()
    losses = densepose_losses(_output(coarse, fine, u, v, 4), PARTS, GT_U, GT_V)
    assert losses["u"].item() == 0 and losses["v"].item() == 0  # other channels and background are random
    u2 = u.clone()
    u2[0, 2, 1, 1] += 0.5  # the true part's channel at a person pixel: smooth-L1 0.5 * 0.5^2 over 4 pixels
    u2[0, 7, 1, 2] += 5.0  # another part's channel: not read
    u2[0, 2, 0, 0] += 5.0  # a background pixel: not read
    losses = densepose_losses(_output(coarse, fine, u2, v, 4), PARTS, GT_U, GT_V)
    assert losses["u"].item() == pytest.approx(0.5 * 0.25 / 4, abs=1e-6) and losses["v"].item() == 0
    u2[0, 23, 2, 2] += 3.0  # beyond beta = 1: the linear branch |d| - 0.5
    losses = densepose_losses(_output(coarse, fine, u2, v, 4), PARTS, GT_U, GT_V)
    assert losses["u"].item() == pytest.approx((0.5 * 0.25 + 2.5) / 4, abs=1e-6)


def test_segmentation_losses_by_hand() -> None:
    coarse, fine, u, v = _charts()
    losses = densepose_losses(_output(coarse, fine, u, v, 4), PARTS, GT_U, GT_V)
    person = PARTS[0] > 0
    log_coarse = coarse[0].log_softmax(dim=0)
    expected_coarse = -log_coarse[person.long(), torch.arange(4)[:, None], torch.arange(4)[None, :]].mean()
    log_fine = fine[0].log_softmax(dim=0)
    expected_fine = -torch.stack([log_fine[PARTS[0, y, x], y, x] for y, x in person.nonzero().tolist()]).mean()
    assert losses["coarse"].item() == pytest.approx(expected_coarse.item(), abs=1e-5)
    assert losses["fine"].item() == pytest.approx(expected_fine.item(), abs=1e-5)
    fine2 = fine.clone()
    fine2[0, :, 0, 0] = torch.randn(25) * 10  # fine logits on a background pixel are not read
    assert densepose_losses(_output(coarse, fine2, u, v, 4), PARTS, GT_U, GT_V)["fine"].item() == pytest.approx(
        losses["fine"].item(), abs=1e-6
    )


def test_losses_without_person_pixels_are_zero_and_differentiable() -> None:
    coarse, fine, u, v = (t.requires_grad_() for t in _charts())
    losses = densepose_losses(_output(coarse, fine, u, v, 4), torch.zeros_like(PARTS), GT_U * 0, GT_V * 0)
    assert losses["fine"].item() == losses["u"].item() == losses["v"].item() == 0
    sum(losses.values()).backward()
    assert coarse.grad is not None and coarse.grad.abs().sum() > 0


def test_losses_check_their_inputs() -> None:
    coarse, fine, u, v = _charts()
    with pytest.raises(ValueError, match="output.coarse_segm"):
        densepose_losses(_output(torch.zeros(1, 15, 4, 4), fine, u, v, 4), PARTS, GT_U, GT_V)
    with pytest.raises(ValueError, match="parts"):
        densepose_losses(_output(coarse, fine, u, v, 4), PARTS.float(), GT_U, GT_V)


# ---------------------------------------------------------------------------------------------------
# Training.


def test_loss_decreases_on_a_fixed_batch() -> None:
    batch = render_batch([3, 5, 8, 13], 64)
    torch.manual_seed(0)
    model = DensePoseChartModel(TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(30):
        losses = densepose_losses(model(batch.images), batch.parts, batch.u, batch.v)
        loss = total_loss(losses, DensePoseLossWeights())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()} | {"total": loss.item()})
    first, last = history[0], history[-1]
    assert last["total"] < 0.7 * first["total"], (first, last)  # measured: about 0.5
    assert last["coarse"] < 0.85 * first["coarse"] and last["fine"] < 0.9 * first["fine"], (first, last)


def test_tiny_run_writes_a_loadable_detectron2_pkl(tmp_path: Path) -> None:
    report = train_densepose(tmp_path, steps=2, batch_size=2, config=TINY, progress=False, eval_images=4)
    assert report.role == "densepose" and report.steps == 2 and report.seconds > 0
    config = DensePoseChartModel(TINY).config.to_dict()
    assert report.spec == ModelSpec(DENSEPOSE_FILE, "detectron2", {"config": config})
    assert set(report.metrics) >= {"loss", "loss_coarse", "loss_fine", "loss_u", "loss_v", "part_accuracy",
                                   "part_miou", "person_iou", "uv_error"}  # fmt: skip
    assert all(0 <= report.metrics[k] <= 1 for k in ("part_accuracy", "part_miou", "person_iou"))
    assert report.config["seed"] == 0 and report.config["batch_size"] == 2
    raw = read_pkl(tmp_path / DENSEPOSE_FILE)  # detectron2 model-zoo layout, read by the restricted unpickler
    assert set(raw) == {"model", "__author__"} and "backbone.bottom_up.stem.conv1.weight" in raw["model"]
    assert [p.name for p in tmp_path.iterdir()] == [DENSEPOSE_FILE]  # no temporary file left behind
    spec = ModelSpec(**json.loads(json.dumps(asdict(report.spec))))  # the record as bundle.json keeps it
    model = load_model("densepose", spec, tmp_path)
    assert isinstance(model, DensePoseChartModel) and not model.training
    for size in (64, 48):  # the editor's size, and one the model pads to a multiple of 32
        out = model(torch.rand(2, 3, size, size))
        assert out.fine_segm.shape == (2, 25, 64, 64)
        assert densepose_part_maps(out, (size, size), 2).shape == (2, 25, size, size)


def test_time_budget_ends_the_loop(tmp_path: Path) -> None:
    report = train_densepose(
        tmp_path, steps=100_000, time_budget_s=1.0, batch_size=1, config=TINY, progress=False, eval_images=0
    )
    assert 1 <= report.steps < 100_000
    assert report.seconds < 1.0 + 3.0  # the budget plus at most the step that was running (slow shared CPUs)
    assert (tmp_path / DENSEPOSE_FILE).is_file() and set(report.metrics) == {"loss", "loss_coarse", "loss_fine",
                                                                             "loss_u", "loss_v"}  # fmt: skip


def test_same_seed_same_weights(tmp_path: Path) -> None:
    def run(name: str, seed: int) -> dict[str, torch.Tensor]:
        train_densepose(tmp_path / name, steps=3, batch_size=2, config=TINY, seed=seed, progress=False, eval_images=0)
        return read_state_dict(tmp_path / name / DENSEPOSE_FILE)

    before = torch.get_rng_state()
    a, b, c = run("a", 0), run("b", 0), run("c", 1)
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is left alone
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_coarse_segm_channels=2"):
        train_densepose(tmp_path / "a", steps=1, config={**TINY, "num_coarse_segm_channels": 15}, progress=False)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        train_densepose(tmp_path / "b", steps=0, config=TINY, progress=False)
    assert not list(tmp_path.iterdir())  # nothing written


def test_prefetcher_keeps_order_and_forwards_errors() -> None:
    def items():
        yield from range(5)
        raise RuntimeError("render failed")

    with Prefetcher(items(), depth=2) as p:
        assert [next(p) for _ in range(5)] == list(range(5))
        with pytest.raises(RuntimeError, match="render failed"):
            next(p)
    with Prefetcher(iter(range(1000)), depth=2) as p:  # closing early stops the thread
        assert next(p) == 0
    assert not p._thread.is_alive()


@pytest.mark.slow
def test_a_short_demo_training_learns_the_parts(tmp_path: Path) -> None:
    """300 steps of the demo DensePose (about 2 minutes on 2 CPU cores), held-out renders (measured: part
    accuracy 0.72, part mIoU 0.43, person IoU 0.70, U/V error 0.064)."""
    report = train_densepose(tmp_path, steps=300, progress=False, eval_images=32)
    m = report.metrics
    assert m["part_accuracy"] > 0.6 and m["part_miou"] > 0.3 and m["person_iou"] > 0.6 and m["uv_error"] < 0.1, m
