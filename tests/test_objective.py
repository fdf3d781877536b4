"""Objective terms and latent regularisers: each on a hand-built case with a known value, and FICE's
trainer.py losses transcribed literally and compared with build_objective on random tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ficekit.generator import Generator, synthesize_01
from ficekit.objective import (
    FICE_WEIGHTS,
    REGULARIZERS,
    ClipTerm,
    EditTargets,
    HeadShapeTerm,
    ImageTerm,
    LatentRegularizer,
    NoRegularizer,
    Objective,
    PNRegularizer,
    ShapeTerm,
    WDelta,
    WMean,
    build_objective,
    build_regularizer,
    random_views,
    register_regularizer,
    sample_w,
)
from ficekit.perception.clip import ClipGuide
from ficekit.perception.densepose import FICE_BODY_PARTS, DensePoseChartModel, DensePoseOutput
from ficekit.perception.segmenter import FiceSegmenter, SegmentationParser
from stylegan2_ops.bias_act import bias_act
from tests.tiny_models import TINY_DENSEPOSE


def tiny_generator(seed: int = 0, **mapping: object) -> Generator:
    torch.manual_seed(seed)
    return Generator(
        z_dim=16,
        c_dim=0,
        w_dim=16,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs={"num_layers": 2, **mapping},
        synthesis_kwargs={"channel_base": 256, "channel_max": 16},
    ).eval()


def targets_for(photo: torch.Tensor, keep: torch.Tensor | None = None, **fields: torch.Tensor) -> EditTargets:
    n, _, h, w = photo.shape
    return EditTargets(
        photo=photo,
        keep_mask=torch.ones(n, 1, h, w) if keep is None else keep,
        body_parts=fields.get("body_parts"),
        head=fields.get("head"),
        text_features=fields.get("text_features"),
        ws_init=fields.get("ws_init", torch.zeros(n, 4, 2)),
    )


# ---------------------------------------------------------------------------------------------------
# Small models with known outputs (test doubles for the perception models).


class MeanColourClip(nn.Module):
    """CLIP double: an image's feature is its mean colour, unit length; texts map to given features."""

    similarity = staticmethod(ClipGuide.similarity)

    def __init__(self, texts: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.texts = texts

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(images.mean((2, 3)), dim=-1)

    def encode_text(self, texts: str | list[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else texts
        return F.normalize(torch.stack([self.texts[t] for t in texts]), dim=-1)


class MeanPersonDensePose(nn.Module):
    """DensePose double: P(person) = the image's mean, fine logits fixed (channel 1 twice as likely)."""

    def __init__(self, size: int = 4) -> None:
        super().__init__()
        self.size = size

    def forward(self, images: torch.Tensor) -> DensePoseOutput:
        n, s = images.shape[0], self.size
        p = images.mean((1, 2, 3)).view(n, 1, 1, 1).expand(n, 1, s, s)
        coarse = torch.cat([torch.zeros_like(p), torch.logit(p)], dim=1)  # softmax(...)[:, 1] = p
        fine = torch.zeros(n, 25, s, s)
        fine[:, 1] = math.log(2)
        return DensePoseOutput(coarse, fine, fine, fine, torch.zeros(n, 4), torch.arange(n))


class RedIsHead(nn.Module):
    """Segmentation double: logits over (background, body, head) whose softmax head prob = red channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x[:, :1]
        return torch.cat([torch.zeros_like(p), torch.zeros_like(p), torch.log(2 * p / (1 - p))], dim=1)


class Raises(nn.Module):
    name = "raises"

    def prepare(self, photo: torch.Tensor, texts: object) -> dict[str, torch.Tensor]:
        raise AssertionError("a zero-weight term must not be prepared")

    def forward(self, *args: object) -> torch.Tensor:
        raise AssertionError("a zero-weight term must not be computed")


# ---------------------------------------------------------------------------------------------------
# Each term on a known value.


def test_image_term_known_value() -> None:
    photo = torch.zeros(2, 3, 4, 4)
    generated = torch.stack([torch.full((3, 4, 4), 0.5), torch.full((3, 4, 4), 1.0)])
    keep = torch.zeros(2, 1, 4, 4)
    keep[..., :2] = 1  # left half kept: half of each image counts
    value = ImageTerm()(generated, None, targets_for(photo, keep))
    # per sample: mean over pixels of keep·(0.5² or 1²) = 0.125 and 0.5; summed over the batch
    assert value.item() == pytest.approx(0.125 + 0.5)
    with pytest.raises(ValueError, match="generated"):
        ImageTerm()(generated[:, :, :2], None, targets_for(photo, keep))


def test_w_delta_known_value() -> None:
    ws = torch.zeros(2, 5, 3)
    ws[0, 1:] = 1.0  # rows 1..4 differ from row 0 by 1 in every dim
    ws[1, 1:] = 2.0
    ws[1, 0] = 1.0  # ... and by 1 here
    ws[1, 4] = 4.0  # except one row off by 3: mean of (1, 1, 1, 9) = 3
    assert WDelta()(None, ws).item() == pytest.approx(1.0 + 3.0)
    assert WDelta()(None, torch.randn(1, 1, 3).expand(2, 6, 3)).item() == 0
    with pytest.raises(ValueError, match="at least 2 rows"):
        WDelta()(None, torch.zeros(1, 1, 3))


def test_clip_term_known_cosines() -> None:
    clip = MeanColourClip({"red": torch.tensor([1.0, 0, 0]), "green": torch.tensor([0, 1.0, 0])})
    red = torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    yellow = torch.tensor([1.0, 1, 0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    generated = torch.cat([red, yellow])
    term = ClipTerm(clip)
    one = targets_for(generated, **term.prepare(generated, "red"))
    assert term(generated, None, one).item() == pytest.approx(0 + (1 - 1 / math.sqrt(2)))
    two = targets_for(generated, **term.prepare(generated, ["red", "green"]))
    # cosines [[1, 0], [1/√2, 1/√2]]; Σ(1 − cos)
    assert term(generated, None, two).item() == pytest.approx(1 + 2 * (1 - 1 / math.sqrt(2)))
    with pytest.raises(ValueError, match="text_features"):
        term(generated, None, targets_for(generated))
    with pytest.raises(ValueError, match="texts"):
        term.prepare(generated, None)


def test_random_views_are_the_image_without_shift_scale_or_noise(monkeypatch) -> None:
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    views = random_views(images, 3)
    assert views.shape == (6, 3, 8, 8)
    views.sum().backward()  # differentiable: the optimiser's gradient reaches G(w) through every view
    assert images.grad is not None and images.grad.abs().sum() > 0
    for name in ("VIEW_SHIFT", "VIEW_SCALE", "VIEW_NOISE"):
        monkeypatch.setattr("ficekit.objective." + name, 0.0)
    still = random_views(images.detach(), 3)
    torch.testing.assert_close(still, images.detach().repeat(3, 1, 1, 1), atol=1e-5, rtol=0)


def test_random_views_shift_scale_and_noise_within_their_bounds(monkeypatch) -> None:
    torch.manual_seed(0)
    flat = torch.full((1, 3, 32, 32), 0.5)
    noise = random_views(flat, 64) - 0.5  # a flat image only gets the noise (border padding)
    assert noise.std().item() == pytest.approx(0.02, rel=0.05)
    monkeypatch.setattr("ficekit.objective.VIEW_NOISE", 0.0)
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32).contiguous()
    views = random_views(ramp, 64)
    centre_shift = (views[:, 0, 16, 15:17].mean(dim=1) - ramp[0, 0, 16, 15:17].mean()).abs()
    # The two centre pixels average out the zoom; a shift of t grid units moves the ramp by t * 16 / 31.
    assert 0.5 * 0.08 * 16 / 31 < centre_shift.max().item() <= 0.08 * 16 / 31 + 1e-4
    assert views.min() >= 0 and views.max() <= 1  # bilinear with border padding: no values outside the image's


def test_clip_term_with_views_averages_them() -> None:
    """A flat colour's views differ only by zero-mean noise, so the mean-colour CLIP's loss barely moves; with
    augment 0 the term is FICE's exactly."""
    clip = MeanColourClip({"red": torch.tensor([1.0, 0, 0])})
    yellow = torch.tensor([1.0, 1, 0]).view(1, 3, 1, 1).expand(2, 3, 16, 16).contiguous()
    plain, viewed = ClipTerm(clip), ClipTerm(clip, augment=8)
    targets = targets_for(yellow, **plain.prepare(yellow, "red"))
    expected = 2 * (1 - 1 / math.sqrt(2))
    assert plain(yellow, None, targets).item() == pytest.approx(expected)
    torch.manual_seed(0)
    assert viewed(yellow, None, targets).item() == pytest.approx(expected, abs=2e-3)
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="augment"):
            ClipTerm(clip, augment=bad)
    objective = build_objective(
        None, clip, None, None, weights={"clip": 1, "none": 0}, regularizer="none", clip_augment=3
    )
    assert objective.terms["clip"].augment == 3


def test_clip_term_on_the_edit_region_scores_g_over_the_kept_photo() -> None:
    clip = MeanColourClip({"red": torch.tensor([1.0, 0, 0])})
    photo = torch.tensor([1.0, 1, 0]).view(1, 3, 1, 1).expand(2, 3, 16, 16).contiguous()  # yellow
    generated = torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1).expand(2, 3, 16, 16).contiguous().requires_grad_()  # red
    keep = torch.zeros(2, 1, 16, 16)
    keep[..., :8] = 1  # the left half is kept: the delivered picture is yellow there, red on the right
    term = ClipTerm(clip, region="edit")
    targets = targets_for(photo, keep, **term.prepare(photo, "red"))
    # mean colour of the composite (1, 0.5, 0): cosine with red 1/sqrt(1.25), per image
    loss = term(generated, None, targets)
    assert loss.item() == pytest.approx(2 * (1 - 1 / math.sqrt(1.25)), rel=1e-6)
    assert ClipTerm(clip)(generated, None, targets).item() == pytest.approx(0, abs=1e-6)  # FICE: G(w) alone, red
    (grad,) = torch.autograd.grad(loss, generated)
    assert grad[..., :8].abs().max() == 0 and grad[..., 8:].abs().max() > 0  # kept pixels get no gradient
    with pytest.raises(ValueError, match="clip region"):
        ClipTerm(clip, region="garment")
    objective = build_objective(
        None, clip, None, None, weights={"clip": 1, "none": 0}, regularizer="none", clip_region="edit"
    )
    assert objective.terms["clip"].region == "edit"


def test_shape_term_known_value() -> None:
    densepose = MeanPersonDensePose()
    photo = torch.full((2, 3, 8, 8), 0.5)
    generated = torch.stack([torch.full((3, 8, 8), 0.75), torch.full((3, 8, 8), 0.25)])
    term = ShapeTerm(densepose)
    targets = targets_for(photo, **term.prepare(photo))
    assert targets.body_parts.shape == (2, len(FICE_BODY_PARTS), 4, 4)
    # body = P(person)·softmax(fine)[indices]: channel 1 has 2/26, every other channel 1/26; ΔP = ±0.25
    fine = torch.tensor([2 / 26] + [1 / 26] * (len(FICE_BODY_PARTS) - 1))
    expected = 2 * 0.25**2 * (fine**2).mean().item()
    assert term(generated, None, targets).item() == pytest.approx(expected, rel=1e-5)
    only_one = ShapeTerm(densepose, indices=(1,))
    targets = targets_for(photo, **only_one.prepare(photo))
    assert only_one(generated, None, targets).item() == pytest.approx(2 * (0.25 * 2 / 26) ** 2, rel=1e-5)


def test_head_shape_term_known_value_fice_segmenter_and_parser() -> None:
    photo = torch.full((2, 3, 4, 4), 0.5)
    generated = photo.clone()
    generated[0, 0] = 0.75  # head prob 0.75 vs 0.5 everywhere in sample 0
    generated[1, 0, :2] = 0.1  # 0.1 vs 0.5 on half of sample 1
    expected = 0.25**2 + 0.5 * 0.4**2
    term = HeadShapeTerm(FiceSegmenter(RedIsHead()))
    targets = targets_for(photo, **term.prepare(photo))
    torch.testing.assert_close(targets.head, photo[:, :1])
    assert term(generated, None, targets).item() == pytest.approx(expected, rel=1e-5)

    # A parser whose 'head' merges face and hair: same probabilities split over two classes.
    class SplitHead(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = RedIsHead()(x)
            half = logits[:, 2:] - math.log(2)  # face and hair each get half of the head
            return torch.cat([logits[:, :1] + math.log(2), half, half], dim=1)  # rest = background + body

    parser = SegmentationParser(
        SplitHead(), {"rest": 0, "face": 1, "hair": 2}, "fice", groups={"head": ["face", "hair"]}
    )
    term = HeadShapeTerm(parser)
    targets = targets_for(photo, **term.prepare(photo))
    assert term(generated, None, targets).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="'head' mask"):
        HeadShapeTerm(SegmentationParser(SplitHead(), {"rest": 0, "face": 1, "hair": 2}, "fice"))


def test_w_mean_known_value() -> None:
    reg = WMean(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0]]))  # FICE's [1, w_dim] stats work
    ws = torch.tensor([[[2.0, 2.0], [1.0, 6.0]], [[1.0, 2.0], [1.0, 2.0]]])
    # sample 0: standardised (1, 0), (0, 2) -> mean of squares 1.25; sample 1 at the mean -> 0
    assert reg(None, ws).item() == pytest.approx(1.25)
    with pytest.raises(ValueError, match="w_std"):
        WMean(torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="ws"):
        reg(None, torch.zeros(1, 2, 3))


def test_w_mean_from_generator_matches_sampled_stats() -> None:
    G = tiny_generator()
    reg = build_regularizer("w_mean", G, num_samples=500, seed=3)
    w = sample_w(G, 500, seed=3)
    torch.testing.assert_close(reg.w_mean, w.mean(0))
    torch.testing.assert_close(reg.w_std, w.std(0))
    torch.testing.assert_close(sample_w(G, 500, seed=3), w)
    assert not torch.equal(sample_w(G, 500, seed=4), w)


def test_pn_known_value_and_exact_inverse_of_nvlabs_lrelu() -> None:
    reg = PNRegularizer(torch.zeros(2), torch.eye(2), torch.tensor([1.0, 2.0]))
    s = math.sqrt(2)
    # x = (1, -2) -> w = √2·lrelu(x) = (√2, -0.4√2); whitened (1, -1): mean square 1
    # x = (0, 4)  -> w = (0, 4√2);                   whitened (0, 2):  mean square 2
    ws = torch.tensor([[[s, -0.4 * s], [0.0, 4 * s]]])
    assert reg(None, ws).item() == pytest.approx(1.5)
    x = torch.randn(1000)
    torch.testing.assert_close(reg.invert_activation(bias_act(x, act="lrelu", impl="ref")), x)


def test_pn_from_generator_whitens_its_samples() -> None:
    G = tiny_generator()
    n = 400
    reg = build_regularizer("pn", G, num_samples=n, seed=1)
    assert (reg.negative_slope, reg.gain) == (0.2, pytest.approx(math.sqrt(2)))
    v = reg.whiten(sample_w(G, n, seed=1)).double()
    torch.testing.assert_close(v.mean(0), torch.zeros(16, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(v.T @ v / (n - 1), torch.eye(16, dtype=torch.float64), atol=1e-3, rtol=0)
    # The penalty of the samples themselves (as N = n single-row latents): Σ_n ‖v̂_n‖²/K = n − 1.
    assert reg(None, sample_w(G, n, seed=1)[:, None]).item() == pytest.approx(n - 1, rel=1e-4)
    linear = build_regularizer("pn", tiny_generator(activation="linear"), num_samples=100)
    assert (linear.negative_slope, linear.gain) == (1.0, 1.0)
    with pytest.raises(ValueError, match="more than 16 samples"):
        build_regularizer("pn", G, num_samples=16)


def test_no_regularizer_is_zero_with_a_gradient() -> None:
    ws = torch.randn(2, 3, 4, requires_grad=True)
    value = NoRegularizer()(None, ws)
    value.backward()
    assert value.item() == 0 and torch.equal(ws.grad, torch.zeros_like(ws))


def test_regularizer_registry() -> None:
    assert set(REGULARIZERS) >= {"w_delta", "w_mean", "pn", "none"}
    with pytest.raises(ValueError, match="known: .*'pn'.*'w_delta'"):
        build_regularizer("l2", None)

    class L2(LatentRegularizer):
        name = "l2"

        def __init__(self, scale: float) -> None:
            super().__init__()
            self.scale = scale

        def penalty(self, ws: torch.Tensor) -> torch.Tensor:
            return self.scale * (ws**2).mean((1, 2)).sum()

    register_regularizer("l2", lambda G, scale=2.0: L2(scale))
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_regularizer("l2", lambda G: L2(1.0))
        assert build_regularizer("l2", None)(None, torch.ones(2, 3, 4)).item() == 4.0
        objective = build_objective(None, None, None, None, weights={"img": 1, "l2": 0.5}, regularizer="l2")
        value = objective(torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 4), targets_for(torch.zeros(1, 3, 2, 2)))
        assert value.terms["l2"].item() == pytest.approx(1.0) and value.raw["l2"].item() == pytest.approx(2.0)
        register_regularizer("l2", lambda G: L2(1.0), overwrite=True)
        assert build_regularizer("l2", None)(None, torch.ones(1, 3, 4)).item() == 1.0
    finally:
        REGULARIZERS.pop("l2", None)


# ---------------------------------------------------------------------------------------------------
# Objective.


def test_objective_weights_skipping_and_timing() -> None:
    photo = torch.zeros(1, 3, 2, 2)
    generated = torch.ones(1, 3, 2, 2)
    ws = torch.zeros(1, 3, 2)
    ws[0, 1:] = 1
    objective = Objective([ImageTerm(), WDelta(), Raises()], {"img": 3, "raises": 0})
    assert objective.weights == {"img": 3.0, "w_delta": 1.0, "raises": 0.0} and objective.active == ["img", "w_delta"]
    targets = objective.prepare(photo, torch.ones(1, 1, 2, 2), None, ws)
    value = objective(generated, ws, targets)
    assert set(value.terms) == set(value.raw) == {"img", "w_delta"} and value.seconds is None
    assert value.raw["img"].item() == 1 and value.terms["img"].item() == 3
    assert value.terms["w_delta"].item() == 1 and value.total.item() == 4

    assert {k: v.item() for k, v in objective.raw_terms(generated, ws, targets).items()} == {"img": 1, "w_delta": 1}

    timed = Objective({"img": ImageTerm(), "reg": WDelta()}, {"img": 1}, timing=True)
    value = timed(generated, ws, targets)
    assert set(value.seconds) == {"img", "reg"} and all(s >= 0 for s in value.seconds.values())
    assert value.total.item() == 2 and value.raw["reg"].item() == 1, "timing changes nothing but the clock"
    with pytest.raises(ValueError, match=r"unknown term\(s\) \['imgg'\]; known terms: \['img', 'w_delta'\]"):
        Objective([ImageTerm(), WDelta()], {"imgg": 1})
    with pytest.raises(ValueError, match="nothing to optimise"):
        Objective([ImageTerm()], {"img": 0})
    with pytest.raises(ValueError, match="unique"):
        Objective([ImageTerm(), ImageTerm()])


def test_objective_checks_inputs() -> None:
    objective = Objective([ImageTerm()])
    with pytest.raises(ValueError, match="keep_mask"):
        objective.prepare(torch.zeros(2, 3, 4, 4), torch.ones(2, 1, 4, 3), None, torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="ws_init"):
        objective.prepare(torch.zeros(2, 3, 4, 4), torch.ones(2, 1, 4, 4), None, torch.zeros(1, 4, 2))
    targets = objective.prepare(torch.zeros(2, 3, 4, 4), torch.ones(2, 1, 4, 4), None, torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="generated"):
        objective(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 2), targets)

    class Vector(nn.Module):
        name = "vector"

        def forward(self, generated: torch.Tensor, ws: torch.Tensor, targets: EditTargets) -> torch.Tensor:
            return generated.mean((1, 2, 3))

    with pytest.raises(ValueError, match="'vector' returned \\[2\\], expected a scalar"):
        Objective([Vector()])(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 2), targets)


def test_build_objective_terms_and_weights() -> None:
    clip = MeanColourClip({"red": torch.tensor([1.0, 0, 0])})
    densepose, segmenter = MeanPersonDensePose(), FiceSegmenter(RedIsHead())
    objective = build_objective(None, clip, densepose, segmenter)
    assert list(objective.terms) == ["img", "shape", "head_shape", "w_delta", "clip"]  # FICE's summation order
    assert objective.weights == dict(FICE_WEIGHTS)
    with pytest.raises(TypeError):
        FICE_WEIGHTS["clip"] = 2  # read-only

    G = tiny_generator()
    pn = build_objective(G, clip, densepose, segmenter, regularizer="pn", regularizer_kwargs={"num_samples": 100})
    assert list(pn.terms) == ["img", "shape", "head_shape", "pn", "clip"] and pn.weights["pn"] == 1
    with pytest.raises(ValueError, match="unknown term\\(s\\) \\['w_delta'\\].*regularizer is 'pn'"):
        build_objective(G, clip, densepose, segmenter, weights=FICE_WEIGHTS, regularizer="pn")
    with pytest.raises(ValueError, match="unknown regularizer 'l1'"):
        build_objective(G, clip, densepose, segmenter, regularizer="l1")

    no_models = build_objective(None, clip, None, None, weights={"clip": 1, "img": 30, "shape": 0, "w_delta": 0})
    assert list(no_models.terms) == ["img", "clip"]
    with pytest.raises(ValueError, match="'shape' term has weight 10 but densepose is None"):
        build_objective(None, clip, None, segmenter)
    assert list(build_objective(None, clip, None, None, {"clip": 1}, regularizer="none").terms) == ["clip"]
    custom = build_objective(None, None, None, None, {"img": 1, "w_delta": 2}, regularizer=WDelta())
    assert custom.weights == {"img": 1.0, "w_delta": 2.0}


def test_prepare_uses_the_terms_models() -> None:
    clip = MeanColourClip({"red": torch.tensor([1.0, 0, 0])})
    objective = build_objective(None, clip, MeanPersonDensePose(), FiceSegmenter(RedIsHead()))
    photo = torch.rand(2, 3, 8, 8) * 0.8 + 0.1
    targets = objective.prepare(photo, torch.ones(2, 1, 8, 8), "red", torch.zeros(2, 4, 16))
    torch.testing.assert_close(targets.text_features, torch.tensor([[1.0, 0, 0]]))
    torch.testing.assert_close(targets.head, photo[:, :1])
    torch.testing.assert_close(targets.body_parts, MeanPersonDensePose()(photo).body_parts())
    off = build_objective(None, clip, None, None, {"clip": 1, "img": 1, "shape": 0, "head_shape": 0})
    targets = off.prepare(photo, torch.ones(2, 1, 8, 8), "red", torch.zeros(2, 4, 16))
    assert targets.body_parts is None and targets.head is None


# ---------------------------------------------------------------------------------------------------
# FICE's trainer.py losses, transcribed literally (FICE commit 7354216), against build_objective.


def fice_img_loss_fn(im1, im2):
    loss = F.mse_loss(im1, im2, reduction="none")
    loss = loss.mean((1, 2, 3)).sum()
    return loss


def fice_shape_loss_fn(im1, im2):
    loss = F.mse_loss(im1, im2, reduction="none")
    loss = loss.mean((1, 2, 3)).sum()
    return loss


def fice_clip_loss_fn(clip_similarity):
    loss = (1 - clip_similarity).sum()
    return loss


def fice_w_delta_loss_fn(w):
    N = w.size(1)
    w_ref = w[:, 0].unsqueeze(1).repeat(1, N - 1, 1)
    w_tar = w[:, 1:]
    loss = F.mse_loss(w_ref, w_tar, reduction="none")
    loss = loss.mean((1, 2)).sum()
    return loss


def fice_densenet_body(densepose, imgs, body_indexes=(1, 2, 3, 4, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24)):
    """FICE DenseNet.forward's probability arithmetic on the chart model's whole-image-box logits."""
    out = densepose(imgs)
    coarse = torch.softmax(out.coarse_segm, dim=1)
    coarse = coarse[:, 1].unsqueeze(1)
    fine = torch.softmax(out.fine_segm, dim=1)
    fine = fine * coarse
    return fine[:, list(body_indexes)]


def test_reproduces_fice_losses_term_for_term() -> None:
    open_clip_config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    pytest.importorskip("open_clip")
    from ficekit.perception.clip import load_clip

    torch.manual_seed(0)
    clip = load_clip("tiny", model_config=open_clip_config)
    densepose = DensePoseChartModel(TINY_DENSEPOSE).eval().requires_grad_(False)
    segmenter = FiceSegmenter(nn.Conv2d(3, 3, 3, padding=1)).requires_grad_(False)
    G = tiny_generator(seed=1).requires_grad_(False)
    photo = torch.rand(2, 3, 16, 16)
    ws_init = G.mapping(torch.randn(2, 16), None) + 0.3 * torch.randn(2, G.num_ws, 16)
    sentence = "a red dress"

    # FICE Trainer.init and one step of Trainer.forward.
    with torch.no_grad():
        text_feats = clip.encode_text(sentence).view(1, -1)
        shape_real = fice_densenet_body(densepose, photo)
        _, body_mask, head_mask = segmenter(photo).probs.split(1, dim=1)
    img_mask = 1 - body_mask
    fice_w = ws_init.clone().requires_grad_(True)
    imgs_gen = synthesize_01(G, fice_w)
    body_shape = fice_densenet_body(densepose, imgs_gen)
    _, _, head_shape = segmenter(imgs_gen).probs.split(1, dim=1)
    loss_dict = {}
    loss_dict["img"] = fice_img_loss_fn(img_mask * imgs_gen, img_mask * photo)
    loss_dict["shape"] = fice_shape_loss_fn(shape_real, body_shape)
    loss_dict["head_shape"] = fice_shape_loss_fn(head_mask, head_shape)
    loss_dict["w_delta"] = fice_w_delta_loss_fn(fice_w)
    clip_sim = clip.encode_image(imgs_gen) @ text_feats.T
    loss_dict["clip"] = fice_clip_loss_fn(clip_sim)
    weights_dict = {"clip": 1, "img": 30, "shape": 10, "head_shape": 1, "w_delta": 1}
    loss_dict_scaled = {k: loss_dict[k] * weights_dict[k] for k in loss_dict}
    loss = sum(loss_dict_scaled.values())
    loss.backward()

    objective = build_objective(G, clip, densepose, segmenter)
    targets = objective.prepare(photo, 1 - segmenter(photo).body, sentence, ws_init)
    ws = ws_init.clone().requires_grad_(True)
    value = objective(synthesize_01(G, ws), ws, targets)
    value.total.backward()

    assert set(value.terms) == set(loss_dict_scaled)
    for name, expected in loss_dict_scaled.items():
        assert expected.item() > 0, name
        torch.testing.assert_close(value.terms[name], expected, rtol=1e-6, atol=0, msg=name)
        torch.testing.assert_close(value.raw[name], loss_dict[name], rtol=1e-6, atol=0, msg=name)
    torch.testing.assert_close(value.total, loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(ws.grad, fice_w.grad, rtol=1e-5, atol=1e-6 * fice_w.grad.abs().max().item())
