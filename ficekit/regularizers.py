"""Latent regularisers: penalties on the W+ latent alone that keep the optimised code near good latents.

Every regulariser is an objective term (see ficekit.objective): `forward(generated, ws, targets)` returns a
scalar, and `penalty(ws)` computes it from ws [N, num_ws, w_dim] alone. All reduce like FICE's terms: a mean
per sample, summed over the batch, so N images optimised together do not pull on each other.

- WDelta (FICE): rows 1..num_ws-1 of W+ towards row 0.
- WMean: distance of every row to the mapping network's mean w, in units of its per-dimension std.
- PNRegularizer (Zhu et al. 2020, "Improved StyleGAN Embedding: Where are the Good Latents?"): the
  squared norm of rows in the whitened "PN" space.
- NoRegularizer: zero.

Regularisers that need the mapping network's statistics sample w themselves (seeded) from the generator.
`build_regularizer(name, G, **kw)` builds one by name from REGULARIZERS; `register_regularizer` adds more.
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ficekit.shapes import check_shape
from stylegan2_ops.bias_act import activation_funcs

logger = logging.getLogger(__name__)

# A factory builds a regulariser from the generator (for sampling its w) and keyword options.
RegularizerFactory = Callable[..., nn.Module]


# ---------------------------------------------------------------------------------------------------
# Sampling the mapping network.


@torch.no_grad()
def sample_w(
    G: nn.Module,  # generator with .mapping(z) -> [B, num_ws, w_dim] and .z_dim
    num_samples: int,  # number of w to draw
    seed: int = 0,  # seed of the z draw (a private torch.Generator; global RNG untouched)
    batch_size: int = 10_000,  # z mapped per call, bounds memory
) -> torch.Tensor:
    """w = mapping(z) for z ~ N(0, I), truncation 1, as float32 [num_samples, w_dim] on G's device.

    z is drawn on the CPU from a seeded generator, so the sample is the same on every device.
    """
    _require_generator(G)
    if num_samples < 1:
        raise ValueError(f"num_samples: expected >= 1, got {num_samples}")
    if getattr(G, "c_dim", 0):
        raise ValueError(f"sample_w: the generator is conditional (c_dim={G.c_dim}); sampling its w needs labels")
    device = next(G.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, num_samples, batch_size):
        z = torch.randn(min(batch_size, num_samples - start), G.z_dim, generator=rng).to(device)
        out.append(G.mapping(z, None, skip_w_avg_update=True)[:, 0].float())
    return torch.cat(out)


def _require_generator(G: Any) -> None:
    if not isinstance(G, nn.Module) or not hasattr(G, "mapping"):
        raise ValueError(f"G: expected a StyleGAN2 Generator (with .mapping) to sample w from, got {type(G).__name__}")


def _last_mapping_activation(G: nn.Module) -> tuple[float, float]:
    """(negative slope, gain) of the mapping network's last layer: w = gain * leaky_relu(x, slope)."""
    mapping = G.mapping
    act = getattr(mapping, f"fc{mapping.num_layers - 1}").activation
    if act == "linear":
        return 1.0, 1.0
    if act == "lrelu":
        spec = activation_funcs[act]
        return spec.def_alpha, spec.def_gain
    raise ValueError(f"PN regulariser: the mapping network ends in {act!r}; only 'lrelu' and 'linear' are invertible")


# ---------------------------------------------------------------------------------------------------
# Regularisers.


class LatentRegularizer(nn.Module, abc.ABC):
    """A penalty on W+ alone; as an objective term it ignores the generated image and the targets."""

    name: str = "latent"

    @abc.abstractmethod
    def penalty(self, ws: torch.Tensor) -> torch.Tensor:
        """Scalar penalty of ws [N, num_ws, w_dim]."""

    def forward(self, generated: torch.Tensor | None, ws: torch.Tensor, targets: Any = None) -> torch.Tensor:
        """The objective-term call: penalty(ws)."""
        check_shape("ws", ws, [None, None, None])
        return self.penalty(ws)


class WDelta(LatentRegularizer):
    """FICE's w_delta: Σ_n mean_{i≥1,d} (ws[n,0,d] − ws[n,i,d])².

    MSE between row 0 repeated and rows 1..num_ws-1, mean over (rows, dims) per sample, summed over the
    batch (FICE `w_delta_loss_fn`). Zero when W+ collapses to a single w.
    """

    name = "w_delta"

    def penalty(self, ws: torch.Tensor) -> torch.Tensor:
        """Scalar w_delta of ws [N, num_ws, w_dim] (num_ws ≥ 2)."""
        if ws.shape[1] < 2:
            raise ValueError(f"ws: w_delta needs at least 2 rows, got shape {list(ws.shape)}")
        ref = ws[:, :1].expand(-1, ws.shape[1] - 1, -1)
        return F.mse_loss(ref, ws[:, 1:], reduction="none").mean((1, 2)).sum()


class WMean(LatentRegularizer):
    """Distance to the mapping network's mean w: Σ_n mean_{i,d} ((ws[n,i,d] − w_mean[d]) / w_std[d])².

    w_mean and w_std are the per-dimension mean and (unbiased) std of mapped samples, as FICE's
    `get_latent_stats` computes them (100000 samples). A typical sampled w scores ≈ 1 per row.
    """

    name = "w_mean"

    def __init__(
        self,
        w_mean: torch.Tensor,  # [w_dim] (or FICE's [1, w_dim]) mean of mapped w
        w_std: torch.Tensor,  # [w_dim] (or [1, w_dim]) per-dimension std of mapped w, all > 0
    ) -> None:
        super().__init__()
        w_mean, w_std = torch.as_tensor(w_mean).float().flatten(), torch.as_tensor(w_std).float().flatten()
        check_shape("w_std", w_std, [w_mean.shape[0]])
        if not bool((w_std > 0).all()):
            raise ValueError("w_std: every entry must be > 0")
        self.register_buffer("w_mean", w_mean)
        self.register_buffer("w_std", w_std)

    @classmethod
    def from_generator(
        cls,
        G: nn.Module,  # generator whose mapping network is sampled
        num_samples: int = 100_000,  # mapped samples (FICE: 100000)
        seed: int = 0,  # seed of the z draw
    ) -> WMean:
        """WMean with mean/std of `num_samples` mapped w (FICE's get_latent_stats)."""
        w = sample_w(G, num_samples, seed)
        return cls(w.mean(0), w.std(0))

    def penalty(self, ws: torch.Tensor) -> torch.Tensor:
        """Scalar penalty of ws [N, num_ws, w_dim]."""
        check_shape("ws", ws, [None, None, self.w_mean.shape[0]])
        return (((ws - self.w_mean) / self.w_std) ** 2).mean((1, 2)).sum()


class PNRegularizer(LatentRegularizer):
    """Zhu et al. 2020's PN-space prior: Σ_n mean_i ‖v̂[n,i]‖² / K.

    Each row w is mapped back through the mapping network's last activation, w = gain · leaky_relu(x, slope)
    (NVlabs: slope 0.2, gain √2), so x = w/gain for w ≥ 0 and w/(gain·slope) for w < 0; then whitened by the
    PCA of x over mapped samples: v̂ = C (x − μ) / σ, with C [K, w_dim] the principal directions and σ [K] the
    std along each (singular value / √(n−1)). The penalty is the squared norm of v̂ per row divided by K (so a
    sampled w scores ≈ 1), averaged over the rows, summed over the batch.
    """

    name = "pn"

    def __init__(
        self,
        mean: torch.Tensor,  # [w_dim] mean μ of the pre-activation samples x
        components: torch.Tensor,  # [K, w_dim] principal directions C (rows, unit length)
        stds: torch.Tensor,  # [K] std σ of x along each direction, all > 0
        negative_slope: float = 0.2,  # slope of the mapping network's last leaky ReLU (1 = linear)
        gain: float = math.sqrt(2),  # gain after that activation (NVlabs lrelu: √2; linear: 1)
    ) -> None:
        super().__init__()
        mean, components, stds = (torch.as_tensor(t).float() for t in (mean, components, stds))
        check_shape("mean", mean, [None])
        check_shape("components", components, [None, mean.shape[0]])
        check_shape("stds", stds, [components.shape[0]])
        if not bool((stds > 0).all()):
            raise ValueError("stds: every entry must be > 0 (a direction without variance cannot be whitened)")
        if negative_slope <= 0 or gain <= 0:
            raise ValueError(f"negative_slope and gain must be > 0, got {negative_slope}, {gain}")
        self.register_buffer("mean", mean)
        self.register_buffer("components", components)
        self.register_buffer("stds", stds)
        self.negative_slope = float(negative_slope)
        self.gain = float(gain)

    def invert_activation(self, ws: torch.Tensor) -> torch.Tensor:
        """x with gain · leaky_relu(x, slope) = ws, elementwise."""
        x = ws / self.gain
        return torch.where(x < 0, x / self.negative_slope, x)

    def whiten(self, ws: torch.Tensor) -> torch.Tensor:
        """Whitened PN coordinates v̂ [..., K] of ws [..., w_dim]."""
        return (self.invert_activation(ws) - self.mean) @ self.components.T / self.stds

    @classmethod
    def from_generator(
        cls,
        G: nn.Module,  # generator whose mapping network is sampled
        num_samples: int = 10_000,  # mapped samples for the PCA (must exceed w_dim)
        seed: int = 0,  # seed of the z draw
    ) -> PNRegularizer:
        """PNRegularizer with the PCA of `num_samples` mapped w, pre-activation, computed in float64."""
        _require_generator(G)
        w_dim = G.mapping.w_dim
        if num_samples <= w_dim:
            raise ValueError(
                f"num_samples: the PCA of {w_dim}-dim w needs more than {w_dim} samples, got {num_samples}"
            )
        slope, gain = _last_mapping_activation(G)
        w = sample_w(G, num_samples, seed).double()
        x = w / gain
        x = torch.where(x < 0, x / slope, x)
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        stds = s / math.sqrt(num_samples - 1)
        return cls(mean, vh, stds, negative_slope=slope, gain=gain)

    def penalty(self, ws: torch.Tensor) -> torch.Tensor:
        """Scalar penalty of ws [N, num_ws, w_dim]."""
        check_shape("ws", ws, [None, None, self.mean.shape[0]])
        return (self.whiten(ws) ** 2).mean((1, 2)).sum()


class NoRegularizer(LatentRegularizer):
    """No latent prior: a zero that keeps ws in the graph (so a term list can still name a regulariser)."""

    name = "none"

    def penalty(self, ws: torch.Tensor) -> torch.Tensor:
        """Zero (scalar, ws's dtype and device)."""
        return ws.sum() * 0


# ---------------------------------------------------------------------------------------------------
# Building by name.


def _w_delta(G: nn.Module | None = None) -> WDelta:
    return WDelta()


def _none(G: nn.Module | None = None) -> NoRegularizer:
    return NoRegularizer()


REGULARIZERS: dict[str, RegularizerFactory] = {
    "w_delta": _w_delta,
    "w_mean": WMean.from_generator,
    "pn": PNRegularizer.from_generator,
    "none": _none,
}


def register_regularizer(name: str, factory: RegularizerFactory, overwrite: bool = False) -> None:
    """Add `factory(G, **kw) -> term` under `name` (the name is also its weight key in an Objective).

    The term it builds must follow the objective-term call `forward(generated, ws, targets) -> scalar`
    (subclass LatentRegularizer and implement penalty(ws) for a penalty on ws alone).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if not callable(factory):
        raise ValueError(f"factory: expected a callable factory(G, **kw), got {type(factory).__name__}")
    if name in REGULARIZERS and not overwrite:
        raise ValueError(f"regularizer {name!r} is already registered; pass overwrite=True to replace it")
    REGULARIZERS[name] = factory


def build_regularizer(name: str, G: nn.Module | None = None, **kwargs: Any) -> nn.Module:
    """The regulariser registered as `name`, built from G (sampled for statistics) and `kwargs`."""
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {name!r}; known: {sorted(REGULARIZERS)}")
    module = REGULARIZERS[name](G, **kwargs)
    logger.debug("built regularizer %r: %s", name, type(module).__name__)
    return module
