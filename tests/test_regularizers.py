"""The literature's latent regularisers (l2_init, w_plus_var, mahalanobis), each on a value known by hand."""

from __future__ import annotations

import math

import pytest
import torch

from ficekit import regularizers
from ficekit.generator import Generator
from ficekit.objective import EditTargets, build_objective
from ficekit.regularizers import (
    REGULARIZERS,
    L2Init,
    Mahalanobis,
    PNRegularizer,
    WDelta,
    WPlusVar,
    build_regularizer,
    sample_w,
)


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(
        z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
        mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 256, "channel_max": 16},
    ).eval()  # fmt: skip


def targets(ws_init: torch.Tensor) -> EditTargets:
    n = ws_init.shape[0]
    return EditTargets(torch.zeros(n, 3, 2, 2), torch.ones(n, 1, 2, 2), None, None, None, ws_init)


def test_the_new_regularizers_are_registered_by_name() -> None:
    assert {"l2_init", "w_plus_var", "mahalanobis"} <= set(REGULARIZERS)
    assert isinstance(build_regularizer("l2_init"), L2Init)
    assert isinstance(build_regularizer("w_plus_var"), WPlusVar)
    assert isinstance(build_regularizer("mahalanobis", tiny_generator(), num_samples=50), Mahalanobis)
    assert "pn_mahalanobis" not in REGULARIZERS  # pn already is Zhu et al.'s P_N Mahalanobis prior (see below)


# ---------------------------------------------------------------------------------------------------
# l2_init: StyleCLIP's ‖w − w_init‖².


def test_l2_init_known_value_and_gradient() -> None:
    ws_init = torch.zeros(2, 2, 2)
    ws = torch.tensor([[[1.0, 3.0], [0.0, 0.0]], [[2.0, 0.0], [0.0, 0.0]]], requires_grad=True)
    # sample 0: squares 1, 9, 0, 0 -> mean 2.5; sample 1: 4, 0, 0, 0 -> mean 1; summed over the batch: 3.5
    value = L2Init()(None, ws, targets(ws_init))
    assert value.item() == pytest.approx(3.5)
    value.backward()
    torch.testing.assert_close(ws.grad, 2 * ws.detach() / 4)  # d/dw mean((w − w0)²) over 4 entries
    assert L2Init().penalty(ws_init + 1, ws_init).item() == pytest.approx(2.0)  # 1 per sample


def test_l2_init_reads_the_objectives_ws_init() -> None:
    """Objective passes its targets to every term, so l2_init sees the edit's starting W+ as it is."""
    objective = build_objective(None, None, None, None, weights={"l2_init": 2.0}, regularizer="l2_init")
    ws_init = torch.full((1, 3, 2), 1.0)
    prepared = objective.prepare(torch.zeros(1, 3, 2, 2), torch.ones(1, 1, 2, 2), None, ws_init)
    ws = torch.full((1, 3, 2), 3.0)  # every entry 2 away from ws_init: mean square 4
    value = objective(torch.zeros(1, 3, 2, 2), ws, prepared)
    assert value.raw["l2_init"].item() == pytest.approx(4.0) and value.total.item() == pytest.approx(8.0)


def test_l2_init_refuses_missing_or_mismatched_ws_init() -> None:
    with pytest.raises(ValueError, match="ws_init"):
        L2Init()(None, torch.zeros(1, 2, 2), object())
    with pytest.raises(ValueError, match="ws_init"):
        L2Init().penalty(torch.zeros(1, 2, 2), torch.zeros(1, 3, 2))


# ---------------------------------------------------------------------------------------------------
# w_plus_var: the spread of the W+ rows.


def test_w_plus_var_two_rows_known_variance() -> None:
    # rows (1, 3) and (3, 7): mean (2, 5), deviations ±1 and ±2 -> variances 1 and 4 -> mean over dims 2.5
    ws = torch.tensor([[[1.0, 3.0], [3.0, 7.0]], [[5.0, 5.0], [5.0, 5.0]]])
    assert WPlusVar()(None, ws).item() == pytest.approx(2.5)  # the collapsed second sample adds 0
    # Two rows: w_delta is mean_d (a − b)², four times the variance.
    assert WDelta()(None, ws[:1]).item() == pytest.approx(4 * 2.5)


def test_w_plus_var_three_rows_is_the_population_variance() -> None:
    ws = torch.tensor([[[0.0], [3.0], [6.0]]])  # mean 3, squared deviations 9, 0, 9 -> 6
    assert WPlusVar()(None, ws).item() == pytest.approx(6.0)


# ---------------------------------------------------------------------------------------------------
# mahalanobis: distance to the W distribution.


def test_mahalanobis_known_distances_for_a_known_gaussian() -> None:
    reg = Mahalanobis(torch.tensor([1.0, -1.0]), torch.tensor([[2.0, 1.0], [1.0, 2.0]]), ridge=0)
    # Σ⁻¹ = [[2, −1], [−1, 2]] / 3: offset (1, 1) -> 2/3, offset (1, −1) -> 2, offset (0, 0) -> 0
    rows = torch.tensor([[2.0, 0.0], [2.0, -2.0], [1.0, -1.0]])
    torch.testing.assert_close(reg.squared_distance(rows), torch.tensor([2 / 3, 2.0, 0.0]))
    ws = rows[:2][None]  # one sample, two rows: mean d² = 4/3, divided by w_dim = 2 -> 2/3
    assert reg(None, ws).item() == pytest.approx(2 / 3)
    diagonal = Mahalanobis(torch.zeros(2), torch.diag(torch.tensor([4.0, 1.0])), ridge=0)
    assert diagonal.squared_distance(torch.tensor([2.0, 1.0])).item() == pytest.approx(2.0)  # 4/4 + 1/1


def test_mahalanobis_regularises_a_singular_covariance() -> None:
    singular = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # no variance along (1, −1)
    with pytest.raises(ValueError, match="positive definite"):
        regularizers._regularised_cholesky(torch.tensor([[1.0, 2.0], [2.0, 1.0]]), 0.0)  # indefinite: no ridge helps
    reg = Mahalanobis(torch.zeros(2), singular, ridge=1e-4)
    along = reg.squared_distance(torch.tensor([1.0, 1.0])).item()  # variance 2 (+ tiny ridge) along (1, 1)
    across = reg.squared_distance(torch.tensor([1.0, -1.0])).item()  # ridge variance only: huge but finite
    assert along == pytest.approx(1.0, rel=1e-3) and math.isfinite(across) and across > 1e3


def test_mahalanobis_from_generator_matches_its_samples_and_is_cached(monkeypatch) -> None:
    G = tiny_generator()
    reg = build_regularizer("mahalanobis", G, num_samples=400, seed=2, ridge=0.0)
    w = sample_w(G, 400, seed=2).double()
    covariance = torch.cov(w.T)
    torch.testing.assert_close(reg.mean.double(), w.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close((reg.cholesky @ reg.cholesky.T).double(), covariance, atol=1e-4, rtol=1e-4)
    # The samples' own mean d² / w_dim is (n − 1)/n: the sample covariance whitens them exactly.
    assert reg(None, w.float()[None]).item() == pytest.approx(399 / 400, rel=1e-3)

    calls = []
    monkeypatch.setattr(regularizers, "sample_w", lambda *a, **k: calls.append(a) or sample_w(*a, **k))
    again = build_regularizer("mahalanobis", G, num_samples=400, seed=2, ridge=0.0)
    assert calls == [] and torch.equal(again.cholesky, reg.cholesky)  # cached for this generator
    build_regularizer("mahalanobis", G, num_samples=400, seed=3, ridge=0.0)
    build_regularizer("mahalanobis", tiny_generator(1), num_samples=400, seed=2, ridge=0.0)
    assert len(calls) == 2  # another seed, another generator: sampled afresh
    with pytest.raises(ValueError, match="more than 8 samples"):
        build_regularizer("mahalanobis", G, num_samples=8)


def test_mahalanobis_gradient_is_the_whitened_offset() -> None:
    covariance = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    reg = Mahalanobis(torch.zeros(2), covariance, ridge=0)
    ws = torch.tensor([[[1.0, 2.0]]], requires_grad=True)
    reg(None, ws).backward()  # d/dw (wᵀ Σ⁻¹ w / 2) = Σ⁻¹ w
    torch.testing.assert_close(ws.grad[0, 0], torch.linalg.solve(covariance, torch.tensor([1.0, 2.0])))


def test_pn_is_the_mahalanobis_distance_in_p_space() -> None:
    """Zhu et al.'s P_N prior whitens by PCA; with every component kept that is the Mahalanobis distance of
    the pre-activation x, so a separate 'pn_mahalanobis' would be `pn` again."""
    G = tiny_generator()
    pn = PNRegularizer.from_generator(G, num_samples=300, seed=1)
    x = pn.invert_activation(sample_w(G, 300, seed=1)).double()
    in_p_space = Mahalanobis(x.mean(0), torch.cov(x.T), ridge=0)
    ws = torch.randn(2, 3, 8)
    expected = in_p_space(None, pn.invert_activation(ws))
    assert pn(None, ws).item() == pytest.approx(expected.item(), rel=1e-4)
