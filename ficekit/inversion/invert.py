"""invert(): photos -> W+ (+ the generator to edit in) by e4e, W+ optimisation or pivotal tuning; the Inversion record.

e4e is FICE's inversion, bit-exact: the encoder's output. `optimize` fits W+ to the photo from there
(projection.py). `pti` takes a pivot (e4e or optimize) and tunes a copy of the generator around it (pti.py);
the edit then optimises W+ in that copy. A batch of N photos shares one tuned copy: the editor renders a
batch through one generator. PTI proper tunes one generator per image; pass one photo per call for that
(the benchmark and an EditSession do).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ficekit.generator import Generator, save_generator
from ficekit.shapes import check_shape

from .losses import ReconstructionLoss
from .projection import project
from .pti import tune_generator

if TYPE_CHECKING:
    from ficekit.eval.metrics import LpipsDistance

logger = logging.getLogger(__name__)

INVERSION_METHODS = ("e4e", "optimize", "pti")
PIVOTS = ("e4e", "optimize")
# Steps and learning rates when none are given, measured on the demo bundle (64 px) on one CPU thread with
# python -m ficekit.eval.inversion: pti reaches e4e + 8 dB within ~10 s of CPU per photo. PTI's own recipe
# (lr 3e-4, up to 350 steps with an LPIPS early stop) is `lr=pti.PTI_LR, steps=350`; at 100 steps 3e-4 gains only
# ~5 dB over e4e on the demo, 3e-3 ~10 dB.
DEFAULT_STEPS = {"e4e": 0, "optimize": 100, "pti": 100}
OPTIMIZE_LR = 0.1  # Adam lr on W+ (the NVlabs projector's initial_learning_rate; also best from the e4e start)
PTI_DEFAULT_LR = 3e-3  # Adam lr on the generator copy for DEFAULT_STEPS["pti"] steps (PTI's 3e-4 is PTI_LR)


@dataclass
class Inversion:
    """The result of inverting photos: where the edit starts and the generator it edits in.

    ws [N,num_ws,w_dim] detached; generator: the module to edit in — the caller's own G for e4e and optimize,
    a tuned deep copy for pti (eval mode, requires_grad_(False)); method; seconds (wall clock of the whole
    inversion); history: the mean loss at each step of the method's own optimisation (empty for e4e);
    pivot_history: the same for an optimize pivot of pti; losses: the loss terms used ('mse', 'lpips',
    'locality'), so a run without LPIPS weights says so; lr: the Adam learning rate of the method's own steps.
    """

    ws: torch.Tensor
    generator: Generator
    method: str
    seconds: float
    history: list[float] = field(default_factory=list)
    steps: int = 0
    pivot: str | None = None
    pivot_history: list[float] = field(default_factory=list)
    losses: tuple[str, ...] = ()
    lr: float | None = None

    @property
    def tuned(self) -> bool:
        """Whether `generator` is a tuned copy (pti) rather than the caller's generator."""
        return self.method == "pti"

    def record(self) -> dict[str, object]:
        """A JSON-ready summary (for report.json): method, steps, pivot, losses, seconds, final loss."""
        return {
            "method": self.method, "steps": self.steps, "lr": self.lr, "pivot": self.pivot, "losses": list(self.losses),
            "seconds": round(self.seconds, 3), "final_loss": self.history[-1] if self.history else None,
        }  # fmt: skip


def _check_steps(name: str, steps: int | None) -> None:
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ValueError(f"{name}: expected an int >= 0 or None (the method's default), got {steps!r}")


def check_inversion_args(method: str, steps: int | None = None, pivot: str = "e4e") -> None:
    """Raise ValueError (one line, naming the choices) for an unknown method or pivot or a bad step count."""
    if method not in INVERSION_METHODS:
        raise ValueError(f"inversion method: expected one of {INVERSION_METHODS}, got {method!r}")
    if pivot not in PIVOTS:
        raise ValueError(f"pti pivot: expected one of {PIVOTS}, got {pivot!r}")
    _check_steps("inversion steps", steps)
    if method == "e4e" and steps:
        raise ValueError(f"inversion steps: e4e is a single encoder pass and takes no steps, got {steps}")


def invert(
    photos: torch.Tensor,
    G: Generator,
    encoder: torch.nn.Module,
    method: str = "e4e",
    steps: int | None = None,
    *,
    seed: int | None = 0,
    progress: bool = True,
    lpips: LpipsDistance | None = None,
    pivot: str = "e4e",
    pivot_steps: int | None = None,
    lr: float | None = None,
    latent_noise: float = 0.0,
    locality_weight: float = 0.1,
    locality_alpha: float | None = None,
    locality_interval: int = 1,
) -> Inversion:
    """Invert photos [N,3,R,R] in [0,1] (R = the generator's resolution) with e4e, optimize or pti.

    steps: the method's optimisation steps; None = DEFAULT_STEPS[method]. seed seeds this call's own
    torch.Generator (latent noise, the locality regulariser's random w; None = a non-deterministic seed); the
    global RNG is never used.
    lpips: a ficekit.eval.metrics.LpipsDistance adds LPIPS to the MSE (None = MSE only; `losses` says which).
    pivot / pivot_steps: pti's pivot ('e4e' or 'optimize') and, for 'optimize', its steps (None = default).
    lr: Adam lr (optimize: OPTIMIZE_LR on W+; pti: PTI_DEFAULT_LR on the generator copy, see DEFAULT_STEPS).
    latent_noise: optimize's projector-style exploration noise factor (0 = off).
    locality_weight / locality_alpha / locality_interval: pti's regulariser (see pti.tune_generator).
    G and encoder are used frozen and never modified.
    """
    check_inversion_args(method, steps, pivot)
    _check_steps("pivot_steps", pivot_steps)
    check_shape("photos", photos, [None, 3, G.img_resolution, G.img_resolution])
    if photos.shape[0] == 0:
        raise ValueError("photos: got an empty batch")
    if not photos.is_floating_point() or float(photos.min()) < -1e-3 or float(photos.max()) > 1.001:
        raise ValueError("photos: expected float images in [0, 1] (ficekit's convention)")
    device = G.mapping.w_avg.device
    photos = photos.to(device=device, dtype=torch.float32)
    steps = DEFAULT_STEPS[method] if steps is None else steps
    rng = torch.Generator()  # CPU generator: samples are drawn there, then moved
    if seed is None:
        rng.seed()
    else:
        rng.manual_seed(int(seed))
    loss = ReconstructionLoss(lpips)

    start = time.perf_counter()
    with torch.no_grad():
        ws = encoder(photos).detach()
    if method == "e4e":
        return Inversion(ws, G, "e4e", time.perf_counter() - start, steps=0)

    history: list[float] = []
    pivot_history: list[float] = []
    if method == "optimize" or pivot == "optimize":
        fit_steps = steps if method == "optimize" else DEFAULT_STEPS["optimize"] if pivot_steps is None else pivot_steps
        fit_lr = lr if (lr is not None and method == "optimize") else OPTIMIZE_LR
        ws, fit_history = project(G, photos, ws, fit_steps, loss, rng, fit_lr, latent_noise, progress)
        if method == "optimize":
            seconds = time.perf_counter() - start
            return Inversion(ws, G, "optimize", seconds, fit_history, steps, losses=loss.terms, lr=fit_lr)
        pivot_history = fit_history
    tune_lr = PTI_DEFAULT_LR if lr is None else lr
    tuned, history = tune_generator(
        G, photos, ws, steps, loss, rng, tune_lr, locality_weight, locality_alpha, locality_interval, progress
    )
    losses = loss.terms + (("locality",) if locality_weight > 0 else ())
    seconds = time.perf_counter() - start
    return Inversion(ws, tuned, "pti", seconds, history, steps, pivot, pivot_history, losses, tune_lr)


def save_tuned_generator(inversion: Inversion, path: str | os.PathLike) -> Path:
    """Write a pti inversion's tuned generator in FICE's generator.pt format (load_generator reads it back).

    The file also holds 'ws' (the pivot W+, [N,num_ws,w_dim]) and 'inversion' (Inversion.record()), so an edit
    can resume from it. Refuses to overwrite a file, and refuses e4e/optimize inversions (they tune nothing).
    """
    if not inversion.tuned:
        raise ValueError(f"save_tuned_generator: a {inversion.method} inversion has no tuned generator (only pti)")
    extra = {"ws": inversion.ws.detach().cpu().clone(), "inversion": inversion.record()}
    return save_generator(inversion.generator, path, extra=extra)
