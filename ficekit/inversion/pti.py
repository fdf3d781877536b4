"""Pivotal tuning (PTI, Roich et al. 2021): a copy of the generator tuned until it renders the photo at the pivot.

The recipe of the PTI paper and its code: Adam (lr 3e-4) on the generator copy's weights; loss = L2 on [-1, 1]
images + LPIPS between G'(pivot) and the photo, plus the locality regulariser: each step a random w
(mapping of a random z, truncation 0.5) is moved from the pivot towards that w by a fixed distance alpha, and
G'(w_r) is held to the frozen G(w_r) by 0.1 L2 + 0.1 LPIPS (rendered without noise), so the tuning stays local
to the pivot and edits around it keep working. Only the synthesis weights are tuned (the mapping network is
not used when editing in W+). The caller's generator is never modified: the tuning works on a deep copy.

PTI's default alpha = 30 is a distance in the W+ of an FFHQ generator (18 x 512 coordinates); by default it is
scaled to keep the same distance per coordinate in this generator's W+ (alpha x sqrt(num_ws x w_dim / 9216)).
PTI also stops early once LPIPS reaches 0.07; here the step count is fixed, so runs are comparable and timed.
"""

from __future__ import annotations

import copy
import logging
import math

import torch

from ficekit.generator import Generator, synthesize_01, to_01
from ficekit.progress import progress_bar

from .losses import ReconstructionLoss

logger = logging.getLogger(__name__)

PTI_LR = 3e-4  # PTI's pti_learning_rate
LOCALITY_ALPHA = 30.0  # PTI's regulizer_alpha, in an 18 x 512 W+ (see locality_distance)
LOCALITY_WEIGHT = 0.1  # PTI's regulizer_l2_lambda and regulizer_lpips_lambda
LOCALITY_PSI = 0.5  # truncation of the random w that the regulariser moves towards
_PTI_WPLUS_SIZE = 18 * 512  # W+ coordinates of the FFHQ generator PTI's alpha was set for


def locality_distance(G: Generator, alpha: float = LOCALITY_ALPHA) -> float:
    """PTI's alpha scaled to G's W+: the same distance per W+ coordinate as alpha in an 18 x 512 W+."""
    return alpha * math.sqrt(G.num_ws * G.w_dim / _PTI_WPLUS_SIZE)


def morph_towards(pivot: torch.Tensor, w: torch.Tensor, distance: float) -> torch.Tensor:
    """PTI's regulariser code: pivot moved `distance` towards w, per image (norm over its whole W+ [num_ws,w_dim])."""
    direction = w - pivot
    norm = direction.flatten(1).norm(dim=1).clamp(min=1e-8).view(-1, *[1] * (direction.dim() - 1))
    return pivot + distance * direction / norm


def tune_generator(
    G: Generator,
    photos: torch.Tensor,
    pivot: torch.Tensor,
    steps: int,
    loss: ReconstructionLoss,
    rng: torch.Generator,
    lr: float = PTI_LR,
    locality_weight: float = LOCALITY_WEIGHT,
    locality_alpha: float | None = None,
    locality_interval: int = 1,
    progress: bool = True,
) -> tuple[Generator, list[float]]:
    """A deep copy of G whose synthesis is tuned `steps` Adam steps so that G'(pivot) reproduces the photos.

    photos [N,3,R,R] in [0,1] and pivot [N,num_ws,w_dim] share one tuned copy (the loss is their mean).
    locality_weight: weight of both locality terms (PTI: 0.1; 0 = no regulariser). locality_alpha: the
    distance of the regulariser's codes from the pivot; None = locality_distance(G) (PTI's 30, scaled).
    locality_interval: apply the regulariser every this many steps (PTI's locality_regularization_interval, 1).
    Returns the tuned copy (eval mode, gradients off) and the mean loss at each step. G is left untouched.
    """
    if locality_interval < 1:
        raise ValueError(f"locality_interval: expected an int >= 1, got {locality_interval}")
    pivot = pivot.detach()
    tuned = copy.deepcopy(G).eval()
    tuned.requires_grad_(False)
    tuned.synthesis.requires_grad_(True)
    optimizer = torch.optim.Adam(tuned.synthesis.parameters(), lr=lr)
    distance = locality_distance(G) if locality_alpha is None else float(locality_alpha)
    locality = ReconstructionLoss(loss.lpips, mse_weight=locality_weight, lpips_weight=locality_weight)
    n = pivot.shape[0]
    history: list[float] = []
    for step in progress_bar(range(steps), desc="tune G (PTI)", disable=not progress, leave=False):
        total = loss(synthesize_01(tuned, pivot), photos).mean()
        if locality_weight > 0 and step % locality_interval == 0:
            z = torch.randn([n, G.z_dim], generator=rng).to(pivot.device)
            with torch.no_grad():
                w_random = G.mapping(z, None, truncation_psi=LOCALITY_PSI, skip_w_avg_update=True)
                w_local = morph_towards(pivot, w_random, distance)
                before = to_01(G.synthesis(w_local, noise_mode="none", force_fp32=True))
            after = to_01(tuned.synthesis(w_local, noise_mode="none", force_fp32=True))
            total = total + locality(after, before).mean()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        history.append(float(total.detach()))
    tuned.requires_grad_(False)
    logger.debug(
        "pti: %d steps, loss %.4g -> %.4g",
        steps,
        history[0] if history else math.nan,
        history[-1] if history else math.nan,
    )
    return tuned, history
