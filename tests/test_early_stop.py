"""OptimizeConfig.early_stop: the W+ loop stops once its loss has levelled off (off by default)."""

from __future__ import annotations

import pytest
import torch

from ficekit import edit as edit_cli
from ficekit.bundle import EditDefaults
from ficekit.generator import Generator, synthesize_01
from ficekit.objective import EditTargets, ImageTerm, Objective
from ficekit.optimize import OptimizeConfig, optimize_latents, plateaued
from ficekit.pipeline import join_histories
from ficekit.settings import edit_settings


def tiny_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2},
                     synthesis_kwargs={"channel_base": 256, "channel_max": 16}).eval()  # fmt: skip


@pytest.fixture(scope="module")
def G() -> Generator:
    return tiny_generator()


def problem(G: Generator) -> tuple[Objective, EditTargets]:
    """Reconstruct another latent's image: a loss that falls fast, then levels off."""
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        photo = synthesize_01(G, G.mapping(torch.randn(1, G.z_dim, generator=rng), None))
        ws_init = G.mapping(torch.randn(1, G.z_dim, generator=rng), None)
    objective = Objective({"img": ImageTerm()}, weights={"img": 1.0})
    return objective, objective.prepare(photo, torch.ones(1, 1, 16, 16), None, ws_init)


def test_plateau_on_known_curves() -> None:
    assert not plateaued([5.0, 4.0, 3.0], 2, 0.01)  # fewer than two windows
    assert not plateaued([4.0, 4.0, 2.0, 2.0], 2, 0.01)  # mean 4 -> 2: a 50 % fall
    assert plateaued([2.0, 2.0, 2.0, 2.0], 2, 0.01)  # flat
    assert plateaued([2.0, 2.0, 2.5, 2.5], 2, 0.01)  # rising
    # mean 10 -> 9.95: a 0.5 % fall, under 1 % but over 0.1 %
    assert plateaued([10.0, 10.0, 9.9, 10.0], 2, 0.01) and not plateaued([10.0, 10.0, 9.9, 10.0], 2, 0.001)
    assert plateaued([9.0, 1.0, 1.0, 1.0, 1.0], 2, 0.01)  # only the last 2w values count
    assert not plateaued([1.0, 1.0], 0, 0.01)


def test_off_by_default_and_unchanged(G: Generator) -> None:
    objective, targets = problem(G)
    reference = optimize_latents(G, objective, targets, OptimizeConfig(iterations=60, lr=0.1), progress=False)
    assert reference.stopped_at is None and len(reference.history["total"]) == 61
    assert OptimizeConfig().early_stop == 0
    # a window longer than the run never fills: the same run as without early stopping, step for step
    long_window = optimize_latents(G, objective, targets, OptimizeConfig(iterations=60, lr=0.1, early_stop=31),
                                   progress=False)  # fmt: skip
    assert long_window.stopped_at is None and long_window.history == reference.history
    assert torch.equal(long_window.ws, reference.ws)


def test_stops_at_the_first_plateau_and_returns_that_step(G: Generator) -> None:
    objective, targets = problem(G)
    full = optimize_latents(G, objective, targets, OptimizeConfig(iterations=200, lr=0.1), progress=False)
    window, tol = 10, 0.05
    expected = next(s for s in range(len(full.history["total"])) if plateaued(full.history["total"][: s + 1], window, tol))
    assert expected < 200  # the curve does level off, so the test means something
    result = optimize_latents(G, objective, targets, OptimizeConfig(iterations=200, lr=0.1, early_stop=window,
                              early_stop_tol=tol), progress=False)  # fmt: skip
    assert result.stopped_at == expected
    assert result.history["total"] == full.history["total"][: expected + 1]  # the same run, cut short
    with torch.no_grad():
        torch.testing.assert_close(result.generated, synthesize_01(G, result.ws))  # the image of the latent returned
    assert result.history["total"][-1] > full.history["total"][-1]  # it gave up some loss for the time


def test_bad_values_are_refused_in_one_line() -> None:
    for bad in (-1, 2.5, True, 10**6):
        with pytest.raises(ValueError, match="early_stop"):
            OptimizeConfig(early_stop=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="early_stop"):
            edit_settings(EditDefaults(), early_stop=bad)
    for bad in (-0.1, 1.0, float("nan"), "x"):
        with pytest.raises(ValueError, match="early_stop_tol"):
            OptimizeConfig(early_stop_tol=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="early_stop_tol"):
            edit_settings(EditDefaults(), early_stop_tol=bad)
    settings = edit_settings(EditDefaults(early_stop=25, early_stop_tol=0.02))
    assert (settings.early_stop, settings.early_stop_tol) == (25, 0.02)


def test_cli_flags_reach_the_settings() -> None:
    args = edit_cli.build_parser().parse_args(["--text", "red shirt", "--early-stop", "30", "--early-stop-tol", "0.005"])
    settings = edit_settings(EditDefaults(), **edit_cli._overrides(args))
    assert (settings.early_stop, settings.early_stop_tol) == (30, 0.005)
    default = edit_settings(EditDefaults(), **edit_cli._overrides(edit_cli.build_parser().parse_args(["--text", "x"])))
    assert default.early_stop == 0


def test_batches_that_stopped_at_different_steps_join_with_held_losses() -> None:
    joined = join_histories([{"total": [3.0, 2.0, 1.0], "img": [1.0, 1.0, 0.5]}, {"total": [5.0, 4.0], "img": [2.0, 2.0]}])
    assert joined == {"total": [8.0, 6.0, 5.0], "img": [3.0, 3.0, 2.5]}  # the second batch's last loss held at step 2
    assert join_histories([{"total": [1.0]}]) == {"total": [1.0]} and join_histories([]) == {}
