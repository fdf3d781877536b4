"""OptimizeConfig.perception_every: the DensePose/segmenter terms run every k-th step only (off by default)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from ficekit import edit as edit_cli
from ficekit.bundle import EditDefaults
from ficekit.fast_step import step_for
from ficekit.generator import Generator, synthesize_01
from ficekit.objective import EditTargets, ImageTerm, Objective
from ficekit.optimize import OptimizeConfig, optimize_latents
from ficekit.settings import edit_settings


def tiny_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2},
                     synthesis_kwargs={"channel_base": 256, "channel_max": 16}).eval()  # fmt: skip


class CountingShape(nn.Module):
    """Stands in for the DensePose term ('shape'): mean red channel towards 0, counting its evaluations."""

    name = "shape"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, generated: torch.Tensor, ws: torch.Tensor, targets: EditTargets) -> torch.Tensor:
        self.calls += 1
        return generated[:, 0].mean((1, 2)).sum()


@pytest.fixture(scope="module")
def G() -> Generator:
    return tiny_generator()


def problem(G: Generator) -> tuple[Objective, CountingShape, EditTargets]:
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        photo = synthesize_01(G, G.mapping(torch.randn(2, G.z_dim, generator=rng), None))
        ws_init = G.mapping(torch.randn(2, G.z_dim, generator=rng), None)
    shape = CountingShape()
    objective = Objective({"img": ImageTerm(), "shape": shape}, weights={"img": 1.0, "shape": 5.0})
    return objective, shape, objective.prepare(photo, torch.ones(2, 1, 16, 16), None, ws_init)


def run(G: Generator, every: int, iterations: int = 7, **config):
    objective, shape, targets = problem(G)
    result = optimize_latents(G, objective, targets, OptimizeConfig(iterations=iterations, lr=0.05,
                              perception_every=every, **config), progress=False)  # fmt: skip
    return result, shape.calls


def test_default_is_every_step_and_unchanged(G: Generator) -> None:
    objective, shape, targets = problem(G)
    reference = optimize_latents(G, objective, targets, OptimizeConfig(iterations=7, lr=0.05), progress=False)
    assert shape.calls == 8  # FICE: iterations + 1 steps, every term each step
    result, calls = run(G, 1)
    assert calls == 8 and result.history == reference.history and torch.equal(result.ws, reference.ws)


def test_perception_terms_run_every_kth_step_and_hold_their_value(G: Generator) -> None:
    result, calls = run(G, 3)
    assert calls == 4  # steps 0, 3, 6 and the final scoring step 7
    shape, total, img = result.history["shape"], result.history["total"], result.history["img"]
    assert shape[1] == shape[2] == shape[0] and shape[4] == shape[5] == shape[3]
    assert shape[3] != shape[0] and shape[7] != shape[6]  # evaluated again, on the edited latent
    assert total == pytest.approx([a + b for a, b in zip(img, shape, strict=True)], rel=1e-6)
    reference, _ = run(G, 1)
    assert not torch.equal(result.ws, reference.ws)  # the skipped steps had no shape gradient: other maths


def test_compiled_step_spaces_them_out_the_same_way(G: Generator) -> None:
    eager, _ = run(G, 3)
    compiled, calls = run(G, 3, compile="auto", compile_backend="aot_eager")
    assert compiled.compiled
    assert compiled.history["shape"] == pytest.approx(eager.history["shape"], rel=1e-5)
    assert compiled.history["total"] == pytest.approx(eager.history["total"], rel=1e-5)


def test_a_light_step_that_failed_to_compile_means_an_eager_loop(G: Generator) -> None:
    eager, _ = run(G, 3)
    objective, _, targets = problem(G)
    step_for(G, objective, backend="aot_eager", skip=("shape",)).failure = "simulated compiler failure"
    config = OptimizeConfig(iterations=7, lr=0.05, perception_every=3, compile="auto", compile_backend="aot_eager")
    result = optimize_latents(G, objective, targets, config, progress=False)
    assert not result.compiled
    assert result.history["shape"] == pytest.approx(eager.history["shape"], rel=1e-6)


def test_bad_values_are_refused_in_one_line() -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="perception_every"):
            OptimizeConfig(perception_every=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="perception_every"):
            edit_settings(EditDefaults(), perception_every=bad)
    assert edit_settings(EditDefaults(perception_every=4)).perception_every == 4


def test_cli_flag_reaches_the_settings() -> None:
    args = edit_cli.build_parser().parse_args(["--text", "red shirt", "--perception-every", "4"])
    assert edit_cli._overrides(args)["perception_every"] == 4
    assert edit_settings(EditDefaults(), **edit_cli._overrides(args)).perception_every == 4
