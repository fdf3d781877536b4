"""The compiled edit step (ficekit.fast_step, OptimizeConfig(compile='auto')): it computes what the eager
reference loop computes, is compiled once and reused across edits, and falls back to eager when compiling
fails or no compiler is installed."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from ficekit import fast_step
from ficekit.fast_step import StepFunction, compiler_problem, step_for
from ficekit.objective import ClipTerm, EditTargets, ImageTerm, Objective, WDelta
from ficekit.optimize import OptimizeConfig, optimize_latents
from ficekit.perception.clip import ClipGuide

DEMO = Path(__file__).resolve().parents[1] / "checkpoints" / "demo" / "bundle.json"


class _AffineSynthesis(nn.Module):
    """Image = tanh(mean of the W+ rows · weight): a generator double that dynamo traces in a second."""

    def __init__(self, w_dim: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.weight = nn.Parameter(torch.randn(w_dim, 3 * resolution * resolution) / w_dim**0.5)

    def forward(
        self, ws: torch.Tensor, noise_mode: str = "const", force_fp32: bool = True, fused_modconv: bool | None = None
    ) -> torch.Tensor:
        image = torch.tanh(ws.mean(1) @ self.weight)
        return image.view(ws.shape[0], 3, self.resolution, self.resolution)


class AffineGenerator(nn.Module):
    """The part of the StyleGAN2 Generator interface the W+ loop uses (synthesis, num_ws, w_dim)."""

    def __init__(self, num_ws: int = 4, w_dim: int = 8, resolution: int = 8) -> None:
        super().__init__()
        self.num_ws, self.w_dim, self.img_resolution = num_ws, w_dim, resolution
        self.synthesis = _AffineSynthesis(w_dim, resolution)
        self.requires_grad_(False)


class NoisyTerm(nn.Module):
    """A term that draws random numbers, so the compiled step must consume the RNG as eager does."""

    name = "noisy"

    def forward(self, generated: torch.Tensor, ws: torch.Tensor, targets: EditTargets) -> torch.Tensor:
        return ((generated - torch.rand_like(generated)) ** 2).mean((1, 2, 3)).sum()


def _setup(seed: int = 0, n: int = 2) -> tuple[AffineGenerator, Objective, EditTargets]:
    torch.manual_seed(seed)
    G = AffineGenerator()
    objective = Objective([ImageTerm(), WDelta(), NoisyTerm()], {"img": 30, "w_delta": 1, "noisy": 0.5})
    photo = torch.rand(n, 3, 8, 8)
    targets = objective.prepare(photo, torch.rand(n, 1, 8, 8), None, torch.randn(n, 4, 8))
    return G, objective, targets


def _counting_backend(calls: list[int], inner: str | None = "aot_eager") -> Callable:
    """A torch.compile backend that counts its compilations and hands the graph to `inner` (None: raise)."""

    def backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable:
        calls.append(1)
        if inner is None:
            raise RuntimeError("simulated compiler failure")
        return torch._dynamo.lookup_backend(inner)(gm, example_inputs)

    return backend


def test_compile_failure_falls_back_to_eager_once() -> None:
    G, objective, targets = _setup()
    config = OptimizeConfig(iterations=3)
    reference = optimize_latents(G, objective, targets, config, progress=False)
    calls: list[int] = []
    broken = OptimizeConfig(iterations=3, compile="auto", compile_backend=_counting_backend(calls, inner=None))
    with pytest.warns(UserWarning, match="compile of the edit step failed .*simulated compiler failure"):
        result = optimize_latents(G, objective, targets, broken, progress=False)
    assert not result.compiled and calls == [1]
    # The failed call's random draws are undone, so the run equals the eager reference bit for bit.
    assert result.history == reference.history
    assert torch.equal(result.ws, reference.ws) and torch.equal(result.generated, reference.generated)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second edit neither retries the compiler nor warns again
        again = optimize_latents(G, objective, targets, broken, progress=False)
    assert calls == [1] and torch.equal(again.ws, reference.ws)


def test_errors_in_the_inputs_are_not_taken_for_compiler_failures() -> None:
    G, objective, targets = _setup()
    calls: list[int] = []
    step = StepFunction(G, objective, backend=_counting_backend(calls))
    bad = EditTargets(
        photo=targets.photo[:, :, :4, :4], keep_mask=targets.keep_mask[:, :, :4, :4], body_parts=None, head=None,
        text_features=None, ws_init=targets.ws_init,
    )  # fmt: skip
    with pytest.raises(ValueError, match="generated"):
        step(targets.ws_init.clone().requires_grad_(True), bad)
    assert step.compiled, "a bad input is the caller's error, not a reason to give up compiling"
    before = len(calls)
    out = step(targets.ws_init.clone().requires_grad_(True), targets)  # the next call compiles the whole step
    assert step.compiled_calls == 1 and len(calls) == before + 1, "one graph for the whole step"
    assert out.terms.shape == (3,)


def test_no_compiler_found_runs_eager_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "C++ compiler" in compiler_problem(torch.device("cpu"))
    G, objective, targets = _setup()
    reference = optimize_latents(G, objective, targets, OptimizeConfig(iterations=2), progress=False)
    with pytest.warns(UserWarning, match="needs a C\\+\\+ compiler"):
        result = optimize_latents(G, objective, targets, OptimizeConfig(iterations=2, compile="auto"), progress=False)
    assert not result.compiled and torch.equal(result.ws, reference.ws)


def test_compiled_step_matches_eager_and_is_reused_across_edits() -> None:
    G, objective, targets = _setup()
    calls: list[int] = []
    backend = _counting_backend(calls)
    config = OptimizeConfig(iterations=4, compile="auto", compile_backend=backend)
    reference = optimize_latents(G, objective, targets, OptimizeConfig(iterations=4), progress=False)
    fast = optimize_latents(G, objective, targets, config, progress=False)
    assert fast.compiled and calls == [1]
    assert set(fast.history) == set(reference.history) == {"img", "w_delta", "noisy", "total"}
    for name, values in reference.history.items():
        assert fast.history[name] == pytest.approx(values, rel=1e-5, abs=1e-7), name
    torch.testing.assert_close(fast.ws, reference.ws, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.generated, reference.generated, rtol=1e-5, atol=1e-6)

    # Another edit (new photo, new start, same shapes), as a follow-up round would run: no recompilation.
    _, _, other = _setup(seed=1)
    again = optimize_latents(G, objective, other, config, progress=False)
    assert again.compiled and calls == [1]
    assert step_for(G, objective, backend=backend) is step_for(G, objective, backend=backend)
    expected = optimize_latents(G, objective, other, OptimizeConfig(iterations=4), progress=False)
    torch.testing.assert_close(again.ws, expected.ws, rtol=1e-5, atol=1e-6)


def test_the_step_needs_no_conv_weight_gradients_and_renders_what_the_fused_generator_renders() -> None:
    """The step draws G with unfused modulated convs: no convolution then takes a weight that depends on ws
    (so backward computes no weight gradient), and the image is FICE's fused one up to float rounding."""
    from torch.overrides import TorchFunctionMode

    from ficekit.generator import Generator, synthesize_01

    class ConvWeights(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.grad_flags: list[bool] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in (torch.nn.functional.conv2d, torch.nn.functional.conv_transpose2d):
                self.grad_flags.append(bool(args[1].requires_grad))
            return func(*args, **kwargs)

    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                  synthesis_kwargs={"channel_base": 64, "channel_max": 16}).eval().requires_grad_(False)
    objective = Objective([ImageTerm(), WDelta()], {"img": 30, "w_delta": 1})
    ws = G.mapping(torch.randn(1, 8), None).detach().requires_grad_(True)
    targets = objective.prepare(torch.rand(1, 3, 16, 16), torch.rand(1, 1, 16, 16), None, ws.detach())
    step = StepFunction(G, objective, backend="aot_eager")
    with ConvWeights() as convs:
        out = step.eager(ws, targets)
    assert convs.grad_flags and not any(convs.grad_flags)
    with ConvWeights() as fused_convs:
        fused = synthesize_01(G, ws)
    assert any(fused_convs.grad_flags)  # FICE's fused form: the per-sample weights depend on ws
    torch.testing.assert_close(out.generated, fused, rtol=1e-5, atol=1e-5)


class MeanColourClip(nn.Module):
    """CLIP double: an image's feature is its mean colour, unit length; every text is pure red."""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(images.mean((2, 3)), dim=-1)

    def encode_text(self, texts: object) -> torch.Tensor:
        return torch.tensor([[1.0, 0.0, 0.0]])

    similarity = staticmethod(ClipGuide.similarity)


def test_clip_views_are_drawn_outside_the_graph() -> None:
    """The CLIP views' random numbers enter the compiled graph as inputs (drawn in eager order), so no
    compiler can reorder the draws: the graph holds no random op, and the losses equal the eager ones."""
    torch.manual_seed(0)
    G = AffineGenerator()
    objective = Objective([ImageTerm(), ClipTerm(MeanColourClip(), augment=3)])
    targets = objective.prepare(torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8), "red", torch.randn(2, 4, 8))
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable:
        graphs.append(gm)
        return gm.forward

    config = OptimizeConfig(iterations=3, compile="auto", compile_backend=backend)
    fast = optimize_latents(G, objective, targets, config, progress=False)
    reference = optimize_latents(G, objective, targets, OptimizeConfig(iterations=3), progress=False)
    assert fast.compiled and len(graphs) == 1
    random_ops = [n for n in graphs[0].graph.nodes if "rand" in str(n.target)]
    assert random_ops == []
    for name, values in reference.history.items():
        assert fast.history[name] == pytest.approx(values, rel=1e-6, abs=1e-7), name


def test_compile_options_are_checked() -> None:
    with pytest.raises(ValueError, match="compile"):
        OptimizeConfig(compile="yes")
    with pytest.raises(ValueError, match="compile_mode"):
        OptimizeConfig(compile="auto", compile_mode="fastest")
    assert OptimizeConfig().compile == "off", "the eager reference loop is the default"
    assert fast_step.COMPILE_CHOICES == ("off", "auto")


NO_INDUCTOR = compiler_problem(torch.device("cpu")) is not None


@pytest.mark.slow
@pytest.mark.skipif(NO_INDUCTOR, reason="no working inductor toolchain (C++ compiler) on this machine")
def test_inductor_step_matches_eager_with_random_terms() -> None:
    """The real compiler (inductor, C++ code) on a small step whose term draws random numbers: the compiled
    step draws them in eager order (fallback_random), so losses and latents agree to float rounding."""
    G, objective, targets = _setup()
    reference = optimize_latents(G, objective, targets, OptimizeConfig(iterations=3), progress=False)
    fast = optimize_latents(G, objective, targets, OptimizeConfig(iterations=3, compile="auto"), progress=False)
    assert fast.compiled
    for name, values in reference.history.items():
        assert fast.history[name] == pytest.approx(values, rel=1e-5, abs=1e-6), name
    torch.testing.assert_close(fast.ws, reference.ws, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not DEMO.is_file(), reason="needs the shipped demo bundle (checkpoints/demo)")
@pytest.mark.skipif(NO_INDUCTOR, reason="no working inductor toolchain (C++ compiler) on this machine")
@pytest.mark.skipif(
    os.environ.get("FICEKIT_COMPILE_TESTS") != "1",
    reason="compiles the demo's whole step with inductor (minutes on a CPU); set FICEKIT_COMPILE_TESTS=1",
)
def test_inductor_step_matches_eager_on_the_demo_bundle() -> None:
    """torch.compile (inductor) of the demo's whole step, CLIP views included: same losses for a few steps."""
    from ficekit.pipeline import FicePipeline

    pipe = FicePipeline.from_bundle("demo", device="cpu")
    torch.manual_seed(0)
    photo = torch.rand(1, 3, pipe.resolution, pipe.resolution)
    objective = pipe.objective(pipe.settings())
    keep = torch.ones(1, 1, pipe.resolution, pipe.resolution)
    with torch.no_grad():
        targets = objective.prepare(photo, keep, ["red striped shirt"], pipe.encoder(photo))
    eager = optimize_latents(pipe.generator, objective, targets, OptimizeConfig(iterations=4), progress=False)
    config = OptimizeConfig(iterations=4, compile="auto")
    fast = optimize_latents(pipe.generator, objective, targets, config, progress=False)
    assert fast.compiled
    for name, values in eager.history.items():
        assert fast.history[name] == pytest.approx(values, rel=1e-3, abs=1e-5), name
    torch.testing.assert_close(fast.generated, eager.generated, rtol=1e-3, atol=1e-3)
