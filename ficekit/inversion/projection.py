"""Optimisation-based inversion: W+ fitted to the photo from the e4e start, NVlabs projector-style schedule.

Adam on W+ with the NVlabs projector's learning-rate ramp (cosine ramp-down over the last quarter, linear
ramp-up over the first 5 %) and its decaying Gaussian exploration noise on the latent (off by default: it is
scaled for a start at the mean w; from an e4e start it only costs accuracy). The projector's per-layer noise
maps are not optimised, so neither is their regulariser: ficekit edits render with the generator's own fixed
`noise_const` buffers (synthesize_01), shared by every photo; a photo's optimised noise could live only in a
copy of the generator, which is what pivotal tuning (pti) makes.
"""

from __future__ import annotations

import logging
import math

import torch

from ficekit.generator import Generator, synthesize_01
from ficekit.progress import progress_bar

from .losses import ReconstructionLoss

logger = logging.getLogger(__name__)

LR_RAMPDOWN = 0.25  # NVlabs projector: fraction of the steps over which the lr ramps down to 0 (cosine)
LR_RAMPUP = 0.05  # NVlabs projector: fraction of the steps over which the lr ramps up from 0 (linear)
NOISE_RAMP = 0.75  # NVlabs projector: fraction of the steps over which the latent noise decays to 0
W_STD_SAMPLES = 1000  # mapped z samples that estimate the spread of w (for the latent noise scale)


def projector_lr(step: int, num_steps: int, base_lr: float) -> float:
    """The NVlabs projector's learning rate at `step` of `num_steps`: base_lr x cosine ramp-down x linear ramp-up."""
    t = step / num_steps
    ramp = min(1.0, (1.0 - t) / LR_RAMPDOWN)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return base_lr * ramp * min(1.0, t / LR_RAMPUP)


def w_spread(G: Generator, rng: torch.Generator) -> float:
    """RMS distance of mapped w from the generator's w_avg (the projector's w_std), from W_STD_SAMPLES z draws."""
    z = torch.randn([W_STD_SAMPLES, G.z_dim], generator=rng).to(G.mapping.w_avg.device)
    with torch.no_grad():
        w = G.mapping(z, None, skip_w_avg_update=True)[:, 0]
    return float((w - G.mapping.w_avg).square().sum(dim=1).mean().sqrt())


def project(
    G: Generator,
    photos: torch.Tensor,
    ws_start: torch.Tensor,
    steps: int,
    loss: ReconstructionLoss,
    rng: torch.Generator,
    lr: float = 0.05,
    latent_noise: float = 0.0,
    progress: bool = True,
) -> tuple[torch.Tensor, list[float]]:
    """W+ [N,num_ws,w_dim] (detached) fitted to photos [N,3,R,R] in [0,1] by `steps` Adam steps from ws_start.

    latent_noise: the projector's initial_noise_factor (NVlabs: 0.05); Gaussian noise of std
    latent_noise x w_std x max(0, 1 - t / 0.75)^2 is added to W+ in each forward pass; 0 = none.
    Returns the fitted W+ and the mean loss over the photos at each step. G is used frozen (never changed).
    """
    w_opt = ws_start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w_opt], betas=(0.9, 0.999), lr=lr)
    noise_std = latent_noise * w_spread(G, rng) if latent_noise > 0 else 0.0
    history: list[float] = []
    for step in progress_bar(range(steps), desc="optimize W+", disable=not progress, leave=False):
        t = step / steps
        for group in optimizer.param_groups:
            group["lr"] = projector_lr(step, steps, lr)
        ws = w_opt
        if noise_std > 0:
            scale = noise_std * max(0.0, 1.0 - t / NOISE_RAMP) ** 2
            ws = w_opt + torch.randn(w_opt.shape, generator=rng).to(w_opt.device) * scale
        per_image = loss(synthesize_01(G, ws), photos)
        optimizer.zero_grad(set_to_none=True)
        per_image.sum().backward()  # the sum keeps each photo's gradient its own
        optimizer.step()
        history.append(float(per_image.detach().mean()))
    logger.debug(
        "optimize: %d steps, loss %.4g -> %.4g",
        steps,
        history[0] if history else math.nan,
        history[-1] if history else math.nan,
    )
    return w_opt.detach(), history
