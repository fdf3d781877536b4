"""The W+ optimisation loop: Adam on the latent, a learning-rate schedule, callbacks and a progress bar.

FICE (trainer.py, commit 7354216) runs `for i in range(n_iters + 1)`: render G(w), evaluate the objective,
backward, Adam step — 501 steps for n_iters = 500 — and returns the image rendered in the last step, i.e.
G of the latent after 500 updates. `fice_final_step=True` does the same; the last step's backward and
update are skipped because nothing depends on them (FICE computes and discards them), so the returned ws
and image are FICE's. The generator and the objective's models stay frozen: gradients go to ws only.

`compile='auto'` runs the same step as one torch.compile'd graph (ficekit.fast_step): same maths, float
rounding aside, several times fewer per-op overheads; the eager loop (`compile='off'`) is the reference.
A loss or gradient that turns non-finite stops the loop with NonFiniteLossError. Two optional speed-ups change
the result and are off by default: `perception_every` (DensePose/segmenter terms every k-th step) and
`early_stop` (end the loop on a loss plateau, `plateaued`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from ficekit.fast_step import COMPILE_CHOICES, COMPILE_MODES, StepFunction, compiler_problem, step_for
from ficekit.generator import synthesize_01
from ficekit.objective import EditTargets, Objective
from ficekit.progress import progress_bar
from ficekit.shapes import check_shape

logger = logging.getLogger(__name__)

SCHEDULES = ("constant", "cosine", "rampdown")
# Terms that run a perception model on G(w) each step; OptimizeConfig.perception_every can space them out.
PERCEPTION_TERMS = ("shape", "head_shape")
MAX_PERCEPTION_EVERY = 1000
MAX_EARLY_STOP = 10_000  # longest plateau window, in steps
# precision -> autocast dtype of the forward (None = plain float32, the reference).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class OptimizeConfig:
    """Settings of the W+ loop (defaults: FICE's)."""

    iterations: int = 500  # Adam updates of ws (FICE: 500)
    lr: float = 0.05  # base learning rate (FICE: 0.05)
    schedule: str = "constant"  # 'constant' (FICE), 'cosine' or 'rampdown' (NVlabs projector); see learning_rate
    rampdown: float = 0.25  # 'rampdown': fraction of the run over which the rate falls to 0 (NVlabs: 0.25)
    rampup: float = 0.05  # 'rampdown': fraction of the run over which the rate rises from 0 (NVlabs: 0.05)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam betas (FICE: torch defaults)
    seed: int | None = 0  # seeds torch (CPU and ws's CUDA device) inside the run; None = leave the RNG alone
    fice_final_step: bool = True  # iterations + 1 steps as FICE, the last one only rendering and scoring
    compile: str = "off"  # 'off' = eager reference loop; 'auto' = compiled step (fast_step), eager if that fails
    compile_backend: str | Callable = "inductor"  # torch.compile backend for compile='auto' (name or callable)
    compile_mode: str | None = None  # torch.compile mode; 'reduce-overhead' = CUDA graphs (CUDA only)
    precision: str = "fp32"  # 'fp32' (FICE); 'bf16' / 'fp16' = forward under autocast (changes the maths)
    # Evaluate the perception terms (PERCEPTION_TERMS: DensePose and segmenter on G(w)) every k-th step only;
    # between, they hold their last value and give no gradient. 1 = every step (FICE); >1 changes the maths.
    perception_every: int = 1
    # Stop on a loss plateau: once the mean total loss of the last `early_stop` steps is less than
    # early_stop_tol (relative) below the mean of the `early_stop` steps before them (see `plateaued`).
    # 0 = run every step (FICE); > 0 changes the result (fewer steps).
    early_stop: int = 0
    early_stop_tol: float = 0.01

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_CHOICES:
            raise ValueError(f"compile: expected one of {list(COMPILE_CHOICES)}, got {self.compile!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode: expected one of {list(COMPILE_MODES)}, got {self.compile_mode!r}")
        _check_bounded_int("perception_every", self.perception_every, 1, MAX_PERCEPTION_EVERY)
        _check_bounded_int("early_stop", self.early_stop, 0, MAX_EARLY_STOP)
        if isinstance(self.early_stop_tol, bool) or not isinstance(self.early_stop_tol, int | float) or not (
            0 <= self.early_stop_tol < 1
        ):
            raise ValueError(f"early_stop_tol: expected a number in [0, 1), got {self.early_stop_tol!r}")
        if self.iterations < 0:
            raise ValueError(f"iterations: expected >= 0, got {self.iterations}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: unknown {self.schedule!r}; expected one of {list(SCHEDULES)}")
        if not (0 < self.rampdown <= 1 and 0 <= self.rampup <= 1):
            raise ValueError(f"rampdown must be in (0, 1] and rampup in [0, 1], got {self.rampdown}, {self.rampup}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))

    @property
    def steps(self) -> int:
        """Number of loop steps: iterations + 1 with fice_final_step, else iterations."""
        return self.iterations + 1 if self.fice_final_step else self.iterations


def _check_bounded_int(name: str, value: object, low: int, high: int) -> None:
    """Raise ValueError naming `name` unless value is an int (not a bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: expected an int between {low} and {high}, got {value!r}")


def learning_rate(config: OptimizeConfig, step: int) -> float:
    """Learning rate of `step` (0-based), with t = step / iterations:

    constant: lr.
    cosine:   lr · ½(1 + cos(π t)).
    rampdown: NVlabs projector.py: r = min(1, (1 − t)/rampdown); lr · ½(1 − cos(π r)) · min(1, t/rampup)
              (rampup 0 = no ramp-up). The rate is 0 at step 0 when rampup > 0, as in NVlabs.
    """
    if config.schedule == "constant" or config.iterations == 0:
        return config.lr
    t = step / config.iterations
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * t))
    ramp = min(1.0, (1.0 - t) / config.rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if config.rampup > 0:
        ramp = ramp * min(1.0, t / config.rampup)
    return config.lr * ramp


def plateaued(totals: Sequence[float], window: int, tol: float) -> bool:
    """Whether a loss curve has levelled off: with w = window, the mean of its last w values is less than
    tol · |mean of the w values before them| below that mean (False while fewer than 2w values exist).

    Means over windows, not the best value so far: the CLIP term's random views make single steps noisy.
    """
    if window < 1 or len(totals) < 2 * window:
        return False
    recent = sum(totals[-window:]) / window
    before = sum(totals[-2 * window : -window]) / window
    return before - recent < tol * abs(before)


class NonFiniteLossError(ValueError):
    """The loss (or its gradient) became NaN or infinite during optimisation; `step` and `term` say where."""

    def __init__(self, step: int, term: str, value: float | None = None) -> None:
        self.step = step
        self.term = term
        self.value = value
        what = "the gradient of the total loss wrt W+" if term == "gradient" else f"loss term {term!r} = {value}"
        super().__init__(
            f"optimisation stopped at step {step}: {what} is not finite; lower the learning rate or the weights, "
            f"or check the photo and the models"
        )


def _check_finite(step: int, losses: dict[str, float]) -> None:
    """Raise NonFiniteLossError naming the first non-finite weighted term (or 'total')."""
    if math.isfinite(losses["total"]):
        return
    bad = [name for name, value in losses.items() if not math.isfinite(value)]
    raise NonFiniteLossError(step, bad[0], losses[bad[0]])


# ---------------------------------------------------------------------------------------------------
# Callbacks.


class Callback(Protocol):
    """Called after each step's forward: ws [N,num_ws,w_dim] (detached copy) produced `generated`
    [N,3,H,W] in [0,1] (detached), with losses = weighted term values and 'total' as floats."""

    def __call__(self, step: int, ws: torch.Tensor, generated: torch.Tensor, losses: dict[str, float]) -> None: ...


class SnapshotCallback:
    """Calls fn(step, ws, generated, losses) on every step divisible by `every` (0, every, 2·every, ...)."""

    def __init__(
        self,
        every: int,  # interval in steps, >= 1
        fn: Callable[[int, torch.Tensor, torch.Tensor, dict[str, float]], None],  # e.g. saves generated
    ) -> None:
        if every < 1:
            raise ValueError(f"every: expected >= 1, got {every}")
        self.every = every
        self.fn = fn

    def __call__(self, step: int, ws: torch.Tensor, generated: torch.Tensor, losses: dict[str, float]) -> None:
        if step % self.every == 0:
            self.fn(step, ws, generated, losses)


# ---------------------------------------------------------------------------------------------------
# The loop.


@dataclass(eq=False)
class OptimizeResult:
    """Outcome of optimize_latents.

    ws:        [N, num_ws, w_dim] the latent that produced `generated` (detached).
    generated: [N, 3, H, W] G(ws) in [0, 1] (detached), the image FICE stitches.
    history:   weighted term name and 'total' -> one float per step.
    seconds, seconds_per_iteration: wall time of the loop, and per step.
    term_seconds: with an objective built with timing=True, summed forward seconds per term, plus
        'generator' (synthesis forward) and 'backward' (backward and Adam update); else empty. A compiled
        step is one graph: 'step' (generator and terms) and 'backward'.
    compiled:  whether the steps ran compiled code (compile='auto' and a compiler that worked).
    stopped_at: the step at which early stopping (OptimizeConfig.early_stop) ended the loop; None = it ran
        every step. The history then has stopped_at + 1 entries per term, and `generated` is that step's image.
    """

    ws: torch.Tensor
    generated: torch.Tensor
    history: dict[str, list[float]]
    seconds: float
    seconds_per_iteration: float
    term_seconds: dict[str, float] = field(default_factory=dict)
    compiled: bool = False
    stopped_at: int | None = None


class _Stopwatch:
    """Adds up seconds per key, synchronising CUDA around each measurement when enabled."""

    def __init__(self, enabled: bool, device: torch.device) -> None:
        self.enabled = enabled
        self.sync = enabled and device.type == "cuda"
        self.device = device
        self.totals: dict[str, float] = {}
        self._start = 0.0

    def start(self) -> None:
        if self.enabled:
            if self.sync:
                torch.cuda.synchronize(self.device)
            self._start = time.perf_counter()

    def stop(self, key: str) -> None:
        if self.enabled:
            if self.sync:
                torch.cuda.synchronize(self.device)
            self.totals[key] = self.totals.get(key, 0.0) + time.perf_counter() - self._start

    def add(self, seconds: dict[str, float] | None) -> None:
        for key, value in (seconds or {}).items():
            self.totals[key] = self.totals.get(key, 0.0) + value


def _with_held_terms(
    losses: dict[str, float], active: Sequence[str], skipped: Sequence[str], skip: Sequence[str],
    held: dict[str, float],
) -> dict[str, float]:
    """A step's losses in the objective's term order, the terms this step skips (`skip`, a part of `skipped`) at
    their last evaluated value (also in 'total', so the logged curve stays comparable); `held` is updated from
    the steps that evaluated them."""
    for name in skipped:
        if name not in skip:
            held[name] = losses[name]
    out = {name: losses[name] if name not in skip else held[name] for name in active}
    out["total"] = losses["total"] + sum(held[name] for name in skip)
    return out


def _check_inputs(G: nn.Module, targets: EditTargets) -> None:
    ws = targets.ws_init
    check_shape("targets.ws_init", ws, [targets.batch_size, G.num_ws, G.w_dim])
    device = next(G.parameters()).device
    if ws.device != device or targets.photo.device != device:
        raise ValueError(
            f"targets are on {ws.device} (ws_init) / {targets.photo.device} (photo) but G is on {device}; "
            f"move them to one device"
        )


def optimize_latents(
    G: nn.Module,  # StyleGAN2 Generator (frozen: its parameters get no gradient)
    objective: Objective,  # the edit objective
    targets: EditTargets,  # from objective.prepare; ws_init is the starting point
    config: OptimizeConfig | None = None,  # None = OptimizeConfig() (FICE's settings)
    callbacks: Sequence[Callback] = (),  # called after every step's forward
    progress: bool = True,  # show a tqdm bar with the current losses
) -> OptimizeResult:
    """Optimise W+ with Adam so that synthesize_01(G, ws) minimises `objective`; N images together.

    Each step renders G(ws) (const noise, float32), evaluates the objective, back-propagates into ws only
    and takes an Adam step at the scheduled rate. Returns the last rendered image and the ws behind it.
    Raises NonFiniteLossError when a loss or the gradient becomes NaN or infinite (before callbacks see it).
    """
    config = config or OptimizeConfig()
    _check_inputs(G, targets)
    device = targets.ws_init.device
    fork_devices = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices, enabled=config.seed is not None):
        if config.seed is not None:
            torch.manual_seed(config.seed)
        skipped = _perception_skipped(objective, config)
        fast = _step_function(G, objective, config, device)
        light = _step_function(G, objective, config, device, skipped) if fast is not None and skipped else None
        if skipped and light is None:
            fast = None  # no compiled step without the perception terms: every step eager, so all skip alike
        return _run(G, objective, targets, config, callbacks, progress, fast, skipped, light)


def _perception_skipped(objective: Objective, config: OptimizeConfig) -> tuple[str, ...]:
    """The active perception terms that steps between every perception_every-th leave out (none at 1)."""
    if config.perception_every == 1:
        return ()
    skipped = tuple(name for name in objective.active if name in PERCEPTION_TERMS)
    return skipped if len(skipped) < len(objective.active) else ()


def _step_function(
    G: nn.Module, objective: Objective, config: OptimizeConfig, device: torch.device, skip: tuple[str, ...] = ()
) -> StepFunction | None:
    """The cached compiled step for compile='auto', or None (the eager loop) when it is off or cannot work."""
    if config.compile == "off":
        return None
    problem = compiler_problem(device, config.compile_backend)
    if problem is not None:
        warnings.warn(f"compile='auto': {problem}; using the eager step", stacklevel=3)
        return None
    step = step_for(G, objective, backend=config.compile_backend, mode=config.compile_mode, skip=skip)
    return step if step.compiled else None


def _run(
    G: nn.Module,
    objective: Objective,
    targets: EditTargets,
    config: OptimizeConfig,
    callbacks: Sequence[Callback],
    progress: bool,
    fast: StepFunction | None = None,
    skipped: tuple[str, ...] = (),
    light: StepFunction | None = None,
) -> OptimizeResult:
    ws = targets.ws_init.detach().clone().float().requires_grad_(True)
    optimizer = torch.optim.Adam([ws], lr=config.lr, betas=config.betas)
    watch = _Stopwatch(getattr(objective, "timing", False), ws.device)
    history: dict[str, list[float]] = {}
    generated = ws_used = None
    steps = config.steps
    dtype = PRECISIONS[config.precision]
    autocast = torch.autocast(ws.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    start = time.perf_counter()
    bar = progress_bar(range(steps), desc="optimising W+", disable=not progress)
    held: dict[str, float] = {}  # the skipped perception terms' last weighted values
    stopped_at = None
    for step in bar:
        final = config.fice_final_step and step == steps - 1
        skip = skipped if skipped and step % config.perception_every != 0 and not final else ()
        with autocast:
            if fast is None:
                watch.start()
                generated = synthesize_01(G, ws)
                watch.stop("generator")
                value = objective(generated, ws, targets, skip=skip)
                watch.add(value.seconds)
                names = [*value.terms, "total"]
                total = value.total
                numbers = torch.stack([*value.terms.values(), total]).detach().float().cpu().tolist()
            else:
                step_fn = light if skip else fast
                watch.start()
                out = step_fn(ws, targets)
                watch.stop("step")
                generated, total, names = out.generated, out.total, [*step_fn.names, "total"]
                numbers = torch.cat([out.terms.float(), total.float()[None]]).detach().cpu().tolist()
        losses = dict(zip(names, numbers, strict=True))
        if skipped:
            losses = _with_held_terms(losses, objective.active, skipped, skip, held)
        _check_finite(step, losses)
        for name, number in losses.items():
            history.setdefault(name, []).append(number)
        bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
        ws_used = ws.detach().clone()
        for callback in callbacks:
            callback(step, ws_used, generated.detach().float(), losses)
        if final:
            break
        if config.early_stop and plateaued(history["total"], config.early_stop, config.early_stop_tol):
            stopped_at = step
            logger.info("loss plateau: stopped at step %d of %d", step, steps - 1)
            break
        watch.start()
        lr = learning_rate(config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        (ws.grad,) = torch.autograd.grad(total, [ws])
        if not bool(torch.isfinite(ws.grad).all()):
            raise NonFiniteLossError(step, "gradient")
        optimizer.step()
        watch.stop("backward")
    bar.close()
    seconds = time.perf_counter() - start
    steps_run = len(history.get("total", ())) or steps

    if not config.fice_final_step:
        # Render the latent after the last update (no step left to do it): what a plain projector returns.
        with torch.no_grad():
            watch.start()
            generated = synthesize_01(G, ws)
            watch.stop("generator")
        ws_used = ws.detach().clone()
        seconds = time.perf_counter() - start
    per_step = seconds / max(steps_run, 1)
    if history:
        logger.info(
            "optimised %d latent(s): %d steps in %.2f s (%.3f s/step), final total %.4g",
            ws.shape[0],
            steps_run,
            seconds,
            per_step,
            history["total"][-1],
        )
    return OptimizeResult(
        ws=ws_used,
        generated=generated.detach().float(),
        history=history,
        seconds=seconds,
        seconds_per_iteration=per_step,
        term_seconds=dict(watch.totals),
        compiled=fast is not None and fast.compiled,
        stopped_at=stopped_at,
    )
