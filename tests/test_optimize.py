"""The W+ loop on a tiny random generator: FICE's step count and returned image, schedules, seeding,
callbacks, history, timing, batching, progress output and devices."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from ficekit.generator import Generator, synthesize_01
from ficekit.objective import EditTargets, ImageTerm, Objective
from ficekit.optimize import NonFiniteLossError, OptimizeConfig, SnapshotCallback, learning_rate, optimize_latents


def tiny_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(
        z_dim=16,
        c_dim=0,
        w_dim=16,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 256, "channel_max": 16},
    ).eval()


@pytest.fixture(scope="module")
def G() -> Generator:
    return tiny_generator()


def reconstruction(G: Generator, n: int = 2, seed: int = 0) -> tuple[Objective, EditTargets]:
    """ImageTerm towards G(w_target), starting from another w."""
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w_target = G.mapping(torch.randn(n, G.z_dim, generator=rng), None)
        ws_init = G.mapping(torch.randn(n, G.z_dim, generator=rng), None)
        photo = synthesize_01(G, w_target)
    objective = Objective([ImageTerm()])
    return objective, objective.prepare(photo, torch.ones(n, 1, 16, 16), None, ws_init)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, torch.Tensor, torch.Tensor, dict[str, float]]] = []

    def __call__(self, step: int, ws: torch.Tensor, generated: torch.Tensor, losses: dict[str, float]) -> None:
        self.calls.append((step, ws, generated, losses))


class NoisyTarget(nn.Module):
    """A term that draws random numbers, so seeding is observable."""

    name = "noisy"

    def forward(self, generated: torch.Tensor, ws: torch.Tensor, targets: EditTargets) -> torch.Tensor:
        return ((generated - torch.rand_like(generated)) ** 2).mean((1, 2, 3)).sum()


def test_loss_decreases(G: Generator) -> None:
    objective, targets = reconstruction(G)
    result = optimize_latents(G, objective, targets, OptimizeConfig(iterations=25, lr=0.05), progress=False)
    assert result.history["total"][-1] < 0.3 * result.history["total"][0]
    assert result.generated.shape == (2, 3, 16, 16) and not result.generated.requires_grad


def test_fice_step_count_and_returned_image(G: Generator) -> None:
    """iterations + 1 steps; the result is what FICE's own loop returns (G of the latent after
    `iterations` updates, rendered in the last step), checked bit for bit."""
    objective, targets = reconstruction(G)
    recorder = Recorder()
    config = OptimizeConfig(iterations=4)
    result = optimize_latents(G, objective, targets, config, callbacks=[recorder], progress=False)
    assert [c[0] for c in recorder.calls] == [0, 1, 2, 3, 4]
    assert {k: len(v) for k, v in result.history.items()} == {"img": 5, "total": 5}
    last_ws, last_generated = recorder.calls[-1][1], recorder.calls[-1][2]
    assert torch.equal(result.ws, last_ws) and torch.equal(result.generated, last_generated)
    with torch.no_grad():
        assert torch.equal(result.generated, synthesize_01(G, result.ws))

    # FICE's Trainer.forward, literally: for i in range(n_iters + 1): render, loss, backward, step.
    w = targets.ws_init.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=config.lr)
    for _ in range(config.iterations + 1):
        imgs_gen = synthesize_01(G, w)
        loss = objective(imgs_gen, w, targets).total
        loss.backward(inputs=[w])
        optimizer.step()
        optimizer.zero_grad()
    assert torch.equal(result.generated, imgs_gen.detach())
    assert not torch.equal(result.ws, w.detach())  # FICE's last update is discarded: the result predates it

    plain = optimize_latents(G, objective, targets, OptimizeConfig(iterations=4, fice_final_step=False), progress=False)
    assert len(plain.history["total"]) == 4
    assert torch.equal(plain.ws, result.ws) and torch.equal(plain.generated, result.generated)


def test_generator_and_models_get_no_gradient() -> None:
    G = tiny_generator()  # parameters still require grad
    objective, targets = reconstruction(G)
    optimize_latents(G, objective, targets, OptimizeConfig(iterations=2), progress=False)
    assert all(p.grad is None for p in G.parameters())
    assert not targets.ws_init.requires_grad


def test_seed_makes_runs_repeatable(G: Generator) -> None:
    _, targets = reconstruction(G)
    objective = Objective([NoisyTarget()])
    state = torch.get_rng_state()

    def run(seed: int | None) -> torch.Tensor:
        config = OptimizeConfig(iterations=3, seed=seed)
        return optimize_latents(G, objective, targets, config, progress=False).ws

    first, again, other = run(7), run(7), run(8)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(torch.get_rng_state(), state), "a seeded run must leave the global RNG as it was"
    torch.manual_seed(7)
    assert torch.equal(run(None), first), "seed=None uses the global RNG"


def test_snapshot_callback_steps_and_arguments(G: Generator) -> None:
    objective, targets = reconstruction(G)
    recorder = Recorder()
    result = optimize_latents(
        G, objective, targets, OptimizeConfig(iterations=6), callbacks=[SnapshotCallback(3, recorder)], progress=False
    )
    assert [c[0] for c in recorder.calls] == [0, 3, 6]
    for step, ws, generated, losses in recorder.calls:
        with torch.no_grad():
            assert torch.equal(generated, synthesize_01(G, ws)), "ws must be the latent that produced generated"
        assert losses == {"img": result.history["img"][step], "total": result.history["total"][step]}
    assert torch.equal(recorder.calls[0][1], targets.ws_init)
    with pytest.raises(ValueError, match="every"):
        SnapshotCallback(0, recorder)


def test_schedule_values() -> None:
    constant = OptimizeConfig(iterations=100, lr=0.1)
    assert [learning_rate(constant, s) for s in (0, 50, 100)] == [0.1, 0.1, 0.1]
    cosine = OptimizeConfig(iterations=100, lr=0.1, schedule="cosine")
    assert [learning_rate(cosine, s) for s in (0, 50, 100)] == pytest.approx([0.1, 0.05, 0.0], abs=1e-12)
    ramp = OptimizeConfig(iterations=100, lr=0.1, schedule="rampdown")  # NVlabs: rampdown 0.25, rampup 0.05
    # t=0: ramp-up factor 0; t=0.025: half ramped up; t=0.5: full; t=0.875: cosine half-way down; t=1: 0
    expected = [0.0, 0.05, 0.1, 0.1 * 0.5 * (1 - math.cos(math.pi * 0.5)), 0.0]
    assert [learning_rate(ramp, s) for s in (0, 2.5, 50, 87.5, 100)] == pytest.approx(expected, abs=1e-12)
    no_rampup = OptimizeConfig(iterations=100, lr=0.1, schedule="rampdown", rampup=0)
    assert learning_rate(no_rampup, 0) == 0.1
    with pytest.raises(ValueError, match="schedule"):
        OptimizeConfig(schedule="linear")


def test_schedule_drives_the_optimizer(G: Generator) -> None:
    objective, targets = reconstruction(G)
    # rampdown with ramp-up: step 0's rate is 0, so one iteration leaves ws where it started.
    config = OptimizeConfig(iterations=1, schedule="rampdown")
    assert torch.equal(optimize_latents(G, objective, targets, config, progress=False).ws, targets.ws_init)
    moved = optimize_latents(G, objective, targets, OptimizeConfig(iterations=1), progress=False)
    assert not torch.equal(moved.ws, targets.ws_init)


def test_batch_is_independent_edits(G: Generator) -> None:
    """A batch is optimised as FICE does (per-sample means summed): same as each image alone."""
    objective, targets = reconstruction(G, n=2)
    config = OptimizeConfig(iterations=5)
    both = optimize_latents(G, objective, targets, config, progress=False)
    for i in range(2):
        one = EditTargets(
            photo=targets.photo[i : i + 1],
            keep_mask=targets.keep_mask[i : i + 1],
            body_parts=None,
            head=None,
            text_features=None,
            ws_init=targets.ws_init[i : i + 1],
        )
        alone = optimize_latents(G, objective, one, config, progress=False)
        torch.testing.assert_close(both.ws[i : i + 1], alone.ws, rtol=1e-4, atol=1e-5)


def test_history_timing_and_progress_output(G: Generator, capfd: pytest.CaptureFixture[str]) -> None:
    objective, targets = reconstruction(G)
    timed = Objective([ImageTerm()], timing=True)
    result = optimize_latents(G, timed, targets, OptimizeConfig(iterations=3), progress=False)
    assert set(result.term_seconds) == {"img", "generator", "backward"}
    assert all(s > 0 for s in result.term_seconds.values())
    assert sum(result.term_seconds.values()) <= result.seconds
    assert result.seconds_per_iteration == pytest.approx(result.seconds / 4)
    assert capfd.readouterr() == ("", ""), "progress=False must print nothing"

    untimed = optimize_latents(G, objective, targets, OptimizeConfig(iterations=3), progress=True)
    assert untimed.term_seconds == {}
    out, err = capfd.readouterr()
    assert out == "" and "total=" in err  # the bar (stderr) shows the losses


def test_rejects_mismatched_latents(G: Generator) -> None:
    objective, targets = reconstruction(G)
    bad = EditTargets(
        photo=targets.photo,
        keep_mask=targets.keep_mask,
        body_parts=None,
        head=None,
        text_features=None,
        ws_init=targets.ws_init[:, :3],
    )
    with pytest.raises(ValueError, match="ws_init"):
        optimize_latents(G, objective, bad, OptimizeConfig(iterations=1), progress=False)


@pytest.mark.gpu
def test_cuda_matches_cpu(G: Generator) -> None:
    objective, targets = reconstruction(G)
    config = OptimizeConfig(iterations=5)
    cpu = optimize_latents(G, objective, targets, config, progress=False)
    device = torch.device("cuda")
    G_cuda = tiny_generator().to(device)
    cuda_targets = EditTargets(
        photo=targets.photo.to(device),
        keep_mask=targets.keep_mask.to(device),
        body_parts=None,
        head=None,
        text_features=None,
        ws_init=targets.ws_init.to(device),
    )
    timed = Objective([ImageTerm()], timing=True).to(device)
    cuda = optimize_latents(G_cuda, timed, cuda_targets, config, progress=False)
    assert cuda.ws.device.type == "cuda" and set(cuda.term_seconds) == {"img", "generator", "backward"}
    torch.testing.assert_close(cuda.ws.cpu(), cpu.ws, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(cuda.generated.cpu(), cpu.generated, rtol=1e-3, atol=1e-3)


class NanAtStep(nn.Module):
    """A term that is finite until its `bad_call`-th evaluation, then NaN."""

    name = "fragile"

    def __init__(self, bad_call: int) -> None:
        super().__init__()
        self.bad_call = bad_call
        self.calls = 0

    def forward(self, generated: torch.Tensor, ws: torch.Tensor, targets: EditTargets) -> torch.Tensor:
        self.calls += 1
        value = (generated**2).mean((1, 2, 3)).sum()
        return value * float("nan") if self.calls > self.bad_call else value


class SqrtAtZero(nn.Module):
    """sqrt(|ws − ws|): the value is 0, its gradient NaN (0 · ∞)."""

    name = "kink"

    def forward(self, generated: torch.Tensor, ws: torch.Tensor, targets: EditTargets) -> torch.Tensor:
        return (ws - ws.detach()).abs().sqrt().sum()


def test_non_finite_loss_stops_with_the_step_and_term(G: Generator) -> None:
    _, targets = reconstruction(G)
    objective = Objective([ImageTerm(), NanAtStep(bad_call=2)])
    recorder = Recorder()
    with pytest.raises(NonFiniteLossError, match="step 2: loss term 'fragile' = nan is not finite") as caught:
        optimize_latents(G, objective, targets, OptimizeConfig(iterations=5), callbacks=[recorder], progress=False)
    assert (caught.value.step, caught.value.term) == (2, "fragile") and isinstance(caught.value, ValueError)
    assert [c[0] for c in recorder.calls] == [0, 1], "callbacks never see the non-finite step"


def test_non_finite_gradient_stops_the_loop(G: Generator) -> None:
    _, targets = reconstruction(G)
    objective = Objective([ImageTerm(), SqrtAtZero()])
    with pytest.raises(NonFiniteLossError, match="step 0: the gradient") as caught:
        optimize_latents(G, objective, targets, OptimizeConfig(iterations=3), progress=False)
    assert caught.value.term == "gradient"
