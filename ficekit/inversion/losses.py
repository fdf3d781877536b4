"""The reconstruction loss of optimisation-based inversion: MSE in the generator's [-1, 1] + LPIPS when available.

Both the W+ projection and pivotal tuning fit G's rendering to a photo with this loss (PTI's pt_l2 and
pt_lpips terms: MSE on NVlabs-range images, LPIPS-Alex); PTI's locality regulariser uses it with 0.1 weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ficekit.eval.metrics import LpipsDistance


class ReconstructionLoss:
    """Per-image loss [N] = mse_weight * MSE(a, b) on [-1, 1] images + lpips_weight * LPIPS(a, b).

    Images come in ficekit's [0, 1] convention; the MSE is taken after mapping both to [-1, 1] (x 2 - 1), the
    range PTI's L2 weight was chosen for, so it is 4 x the [0, 1] MSE. `lpips` is a ficekit LpipsDistance whose
    inner lpips network is called with gradients (LpipsDistance itself measures without them); None = MSE only.
    """

    def __init__(self, lpips: LpipsDistance | None = None, mse_weight: float = 1.0, lpips_weight: float = 1.0) -> None:
        if mse_weight < 0 or lpips_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got mse {mse_weight}, lpips {lpips_weight}")
        self.lpips = lpips
        self.mse_weight = float(mse_weight)
        self.lpips_weight = float(lpips_weight)

    @property
    def terms(self) -> tuple[str, ...]:
        """Names of the terms in use: ('mse',) or ('mse', 'lpips') — what an Inversion records."""
        return ("mse", "lpips") if self.lpips is not None and self.lpips_weight > 0 else ("mse",)

    def __call__(self, generated_01: torch.Tensor, target_01: torch.Tensor) -> torch.Tensor:
        """Loss per image [N] between generated [N,3,H,W] and target [N,3,H,W] images in [0, 1] (differentiable)."""
        diff = (generated_01 - target_01) * 2  # the difference of the [-1, 1] images
        loss = self.mse_weight * diff.square().flatten(1).mean(dim=1)
        if "lpips" in self.terms:
            network = self.lpips.model  # lpips.LPIPS: normalize=True maps [0, 1] inputs to its [-1, 1]
            loss = loss + self.lpips_weight * network(generated_01, target_01, normalize=True).flatten()
        return loss
