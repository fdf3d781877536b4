"""The edit step as one compiled graph: G(ws), every objective term and (through AOTAutograd) the backward.

At the demo's 64 px a step is hundreds of tiny ops, so its time is per-op overhead, not arithmetic;
torch.compile fuses them (and drops what no term uses). `step_for(G, objective)` returns a StepFunction
cached on the objective per (G, backend, mode): every edit and every round of a session with the same shapes
reuses the compiled code, because the targets and the step's random numbers (the CLIP views, drawn ahead in
eager order) are inputs of the graph, not constants baked into it. When no compiler works (no C++ toolchain
for inductor on CPU, no triton on CUDA, an unsupported Python) or compiling fails, the step falls back to the
eager code with one warning and the edit goes on. The eager loop in ficekit.optimize stays the reference."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import types
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ficekit.generator import synthesize_01
from ficekit.objective import EditTargets, Objective
from stylegan2_ops import default_impl

logger = logging.getLogger(__name__)

COMPILE_CHOICES = ("off", "auto")  # 'off' = the eager reference loop; 'auto' = compiled step, eager on failure
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# Targets the compiled graph takes as inputs, in this order (EditTargets fields).
_TARGET_FIELDS = (
    "photo", "keep_mask", "body_parts", "head", "text_features", "ws_init", "texture_mean", "texture_covariance",
    "bare_mask", "skin_rgb", "collage",
)


@dataclass(eq=False)
class StepOutput:
    """One forward of the step: total [] (differentiable wrt ws), terms [K] the weighted terms in
    `StepFunction.names` order (differentiable), generated [N,3,H,W] G(ws) in [0,1]."""

    total: torch.Tensor
    terms: torch.Tensor
    generated: torch.Tensor


def compiler_problem(device: torch.device, backend: str | Callable = "inductor") -> str | None:
    """Why torch.compile with `backend` cannot work on `device` here, or None when it may (cheap checks only:
    a failure while compiling is still caught by StepFunction)."""
    try:
        from torch._dynamo.eval_frame import is_dynamo_supported

        if not is_dynamo_supported():
            return "torch.compile does not support this Python version"
    except ImportError:
        return "this torch has no torch.compile"
    if backend != "inductor":
        return None
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "inductor on CUDA needs triton, which is not installed"
        return None
    if device.type == "cpu":
        compilers = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        if not any(name and shutil.which(name) for name in compilers):
            return "inductor on CPU needs a C++ compiler (g++ or clang++) and none was found"
        return None
    return f"no compiled step for device type {device.type!r}"


class StepFunction:
    """ws [N,num_ws,w_dim] (requires grad) and EditTargets -> StepOutput, compiled with torch.compile.

    The eager function (`eager`) is the same code without the compiler. The first compiled call compiles;
    any failure then (a backend error, a missing toolchain) makes this step eager for good, with a warning.
    """

    def __init__(
        self,
        G: nn.Module,  # StyleGAN2 generator (frozen)
        objective: Objective,  # the edit objective; its active terms and weights are fixed into the graph
        backend: str | Callable = "inductor",  # torch.compile backend ('aot_eager': traces, generates no code)
        mode: str | None = None,  # torch.compile mode; 'reduce-overhead' = CUDA graphs on CUDA
        skip: Collection[str] = (),  # active terms this step leaves out (OptimizeConfig.perception_every)
    ) -> None:
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode: expected one of {list(COMPILE_MODES)}, got {mode!r}")
        self.G = G
        self.objective = objective
        self.names = objective.evaluated(skip)
        self.backend = backend
        self.mode = mode
        self.failure: str | None = None  # why compiling failed, once it did
        self.compiled_calls = 0  # calls answered by compiled code
        self.cuda_graphs = mode == "reduce-overhead"  # torch.compile's mode with CUDA graphs
        self._copies = 0
        self._compiled = self._compile()

    def _compile(self) -> Callable:
        """torch.compile of a private copy of `_forward`. dynamo keeps its cache, its recompile budget and its
        'do not compile' marks per code object; a copy per step keeps other steps' entries and marks out."""
        self._copies += 1
        code = StepFunction._forward.__code__
        code = code.replace(co_name=f"_forward_{id(self):x}_{self._copies}")
        forward = types.MethodType(types.FunctionType(code, globals(), code.co_name), self)
        # fallback_random: random ops (the CLIP views) draw from torch's generator in eager order, so the
        # compiled step sees the same random views as the eager one. dynamic=False: one graph per shape.
        # (torch.compile takes a mode or inductor options, not both.)
        options = {"fallback_random": True} if self.backend == "inductor" and self.mode is None else None
        return torch.compile(forward, backend=self.backend, mode=self.mode, options=options, dynamic=False)

    def _forward(
        self, ws: torch.Tensor, fields: tuple[torch.Tensor | None, ...], noise: dict[str, Any]
    ) -> tuple[torch.Tensor, ...]:
        """G(ws), the active terms and their weighted sum: (total, weighted terms [K], generated)."""
        targets = EditTargets(**dict(zip(_TARGET_FIELDS, fields, strict=True)))
        # Unfused modulated convs: the backward then skips every conv-weight gradient (about a third of the
        # generator's conv arithmetic); the same maths as the eager loop's fused form up to float rounding.
        generated = synthesize_01(self.G, ws, fused_modconv=False)
        raw = self.objective.raw_terms(generated, ws, targets, noise, names=self.names)
        weighted = [raw[name] * self.objective.weights[name] for name in self.names]
        total = sum(weighted)  # the Objective's own summation, term by term in the same order
        return total, torch.stack(weighted), generated

    def eager(self, ws: torch.Tensor, targets: EditTargets) -> StepOutput:
        """The step without the compiler (its terms draw their own random numbers, as in the eager loop)."""
        return StepOutput(*self._forward(ws, _fields(targets), {}))

    def __call__(self, ws: torch.Tensor, targets: EditTargets) -> StepOutput:
        """One forward of the step for `targets` (compiled unless compiling failed before).

        Random numbers that terms can draw ahead (Objective.draw_noise: the CLIP views) are drawn here, in
        the order the eager step draws them, and enter the graph as inputs; so the compiled step sees the
        same random views as the eager one, whatever order the compiler gives the graph's operations.
        """
        if self.failure is not None:
            return self.eager(ws, targets)
        rng = _RngState(ws.device)
        noise = self.objective.draw_noise(targets.photo.shape, ws.device, targets.photo.dtype)
        try:
            if self.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()  # a new step: the last step's graph outputs are free
            with default_impl("ref"):  # the StyleGAN2 ops' torch reference code, which the compiler fuses itself
                out = StepOutput(*self._compiled(ws, _fields(targets), noise))
            if self.cuda_graphs:  # the next replay overwrites graph outputs: keep copies for callbacks and the result
                out.generated = out.generated.clone()
        except Exception as error:  # noqa: BLE001 - any compiler failure falls back; input errors re-raise below
            rng.restore()
            try:
                out = self.eager(ws, targets)
            except Exception:
                # The inputs, not the compiler, are at fault: raise their error. dynamo marked the code it
                # failed to trace as not compilable, so the next call compiles a fresh copy.
                self._compiled = self._compile()
                raise
            self.failure = _describe(error)
            warnings.warn(f"torch.compile of the edit step failed ({self.failure}); using the eager step", stacklevel=2)
            return out
        self.compiled_calls += 1
        return out

    @property
    def compiled(self) -> bool:
        """Whether calls run compiled code (False after a compile failure)."""
        return self.failure is None


def _fields(targets: EditTargets) -> tuple[torch.Tensor | None, ...]:
    return tuple(getattr(targets, name) for name in _TARGET_FIELDS)


def _describe(error: BaseException) -> str:
    """'Type: first line' of the root cause of a compile error (dynamo wraps the backend's own error)."""
    cause = getattr(error, "inner_exception", None) or error.__cause__ or error
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"[:300]


class _RngState:
    """The CPU RNG state (and that of `device` when it is CUDA) at construction; restore() puts it back."""

    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.get_rng_state()
        self.device = device if device.type == "cuda" else None
        self.cuda = torch.cuda.get_rng_state(device) if self.device is not None else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.device is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def step_for(
    G: nn.Module,  # StyleGAN2 generator
    objective: Objective,  # the edit objective
    backend: str | Callable = "inductor",  # torch.compile backend
    mode: str | None = None,  # torch.compile mode
    skip: Collection[str] = (),  # active terms the step leaves out
) -> StepFunction:
    """The cached StepFunction of (G, objective): built once, so later edits and rounds do not recompile.

    The cache lives on the objective (a private attribute), so it goes when the objective goes; a pipeline
    keeps one objective per setting, hence one compiled step per setting and generator.
    """
    steps: dict[tuple[int, str | Callable, str | None, frozenset[str]], StepFunction] = vars(
        objective
    ).setdefault("_compiled_steps", {})
    key = (id(G), backend, mode, frozenset(skip))
    step = steps.get(key)
    if step is None or step.G is not G:
        step = steps[key] = StepFunction(G, objective, backend=backend, mode=mode, skip=skip)
        logger.debug("new compiled step for %s (backend %s, mode %s)", type(G).__name__, backend, mode)
    return step
