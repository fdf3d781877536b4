"""Latent regularisers: penalties on the W+ latent alone that keep the optimised code near good latents.

Every regulariser is an objective term (see ficekit.objective): `forward(generated, ws, targets)` returns a
scalar, and `penalty(ws)` computes it from ws [N, num_ws, w_dim] alone (L2Init, whose penalty also needs the
starting W+, reads it from targets.ws_init). All reduce like FICE's terms: a mean
per sample, summed over the batch, so N images optimised together do not pull on each other.

- WDelta (FICE): rows 1..num_ws-1 of W+ towards row 0.
- WMean: distance of every row to the mapping network's mean w, in units of its per-dimension std.
- PNRegularizer (Zhu et al. 2020, "Improved StyleGAN Embedding: Where are the Good Latents?"): the
  squared norm of rows in the whitened "PN" space.
  Zhu et al.'s P_N prior is the Mahalanobis distance in P space (PCA whitening is a Cholesky-free way to
  invert the covariance), so `pn` already is the "pn_mahalanobis" regulariser; no separate one exists.
- NoRegularizer: zero.
- L2Init (StyleCLIP's optimisation mode): squared distance of W+ to the edit's starting W+ (targets.ws_init).
- WPlusVar (e4e-style): variance of the W+ rows around their mean.
- Mahalanobis: squared Mahalanobis distance of every row to the W distribution (mean and full covariance of
  mapped samples, cached per generator).

Regularisers that need the mapping network's statistics sample w themselves (seeded) from the generator.
`build_regularizer(name, G, **kw)` builds one by name from REGULARIZERS; `register_regularizer` adds more.
"""

from __future__ import annotations

import abc
import logging
import math
import weakref
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


class L2Init(nn.Module):
    """StyleCLIP's optimisation-mode prior: Σ_n mean_{i,d} (ws[n,i,d] − ws_init[n,i,d])².

    ws_init is the edit's starting W+ (the inversion of the photo), read from targets.ws_init. StyleCLIP sums
    over every entry (`((w_init − w)**2).sum()`, λ = 0.008); this is that sum divided by num_ws·w_dim, the mean
    per sample like every ficekit term, so StyleCLIP's λ is weight = 0.008·num_ws·w_dim here.
    """

    name = "l2_init"

    def penalty(self, ws: torch.Tensor, ws_init: torch.Tensor) -> torch.Tensor:
        """Scalar penalty of ws [N, num_ws, w_dim] against the starting ws_init of the same shape."""
        check_shape("ws", ws, [None, None, None])
        check_shape("ws_init", ws_init, list(ws.shape))
        return F.mse_loss(ws, ws_init.to(ws.dtype), reduction="none").mean((1, 2)).sum()

    def forward(self, generated: torch.Tensor | None, ws: torch.Tensor, targets: Any) -> torch.Tensor:
        """The objective-term call: penalty(ws, targets.ws_init)."""
        ws_init = getattr(targets, "ws_init", None)
        if ws_init is None:
            raise ValueError("l2_init: the targets carry no ws_init (the starting W+); build them with Objective.prepare")
        return self.penalty(ws, ws_init)


class WPlusVar(LatentRegularizer):
    """Spread of the W+ rows (e4e-style progressive prior): Σ_n mean_d (1/num_ws) Σ_i (ws[n,i,d] − w̄[n,d])².

    w̄[n] is the mean of sample n's rows; the variance is the population one (divide by num_ws), averaged over
    the dims. Zero when W+ collapses to a single w. Unlike w_delta, no row is the anchor: two rows a and b
    score mean_d ((a_d − b_d) / 2)², where w_delta scores mean_d (a_d − b_d)².
    """

    name = "w_plus_var"

    def penalty(self, ws: torch.Tensor) -> torch.Tensor:
        """Scalar penalty of ws [N, num_ws, w_dim]."""
        return ws.var(dim=1, unbiased=False).mean(1).sum()


# Mapped-w statistics per generator: the generator object -> {(num_samples, seed, ridge): (mean, cholesky)}.
# Weak keys, so a generator that is dropped takes its statistics with it.
_W_GAUSSIANS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int, float], tuple[torch.Tensor, torch.Tensor]]]
_W_GAUSSIANS = weakref.WeakKeyDictionary()


def _regularised_cholesky(covariance: torch.Tensor, ridge: float) -> torch.Tensor:
    """Lower Cholesky factor of covariance + ridge·(mean variance)·I; the ridge grows ×10 until it factors."""
    dim = covariance.shape[0]
    scale = float(covariance.diagonal().mean().clamp_min(torch.finfo(covariance.dtype).tiny))
    eye = torch.eye(dim, dtype=covariance.dtype, device=covariance.device)
    for attempt in range(8):
        factor, info = torch.linalg.cholesky_ex(covariance + ridge * 10**attempt * scale * eye)
        if int(info) == 0:
            return factor
    raise ValueError(f"covariance: not positive definite even with a ridge of {ridge * 10**7:g} x its mean variance")


class Mahalanobis(LatentRegularizer):
    """Distance to the W distribution: Σ_n mean_i d²(ws[n,i]) / w_dim, d²(w) = (w − μ)ᵀ (Σ + εI)⁻¹ (w − μ).

    μ and Σ are the mean and (unbiased) covariance of mapped samples w = mapping(z), z ~ N(0, I); ε = ridge ×
    the mean variance keeps Σ invertible. d² comes from a Cholesky solve, d² = ‖L⁻¹ (w − μ)‖² with
    L Lᵀ = Σ + εI. Divided by w_dim, a sampled w scores ≈ 1 per row (E[d²] = w_dim for a Gaussian W). Unlike
    `pn` it works in W itself, not in the pre-activation P space where Zhu et al. find W Gaussian.
    """

    name = "mahalanobis"

    def __init__(
        self,
        mean: torch.Tensor,  # [w_dim] mean μ of mapped w
        covariance: torch.Tensor | None = None,  # [w_dim, w_dim] covariance Σ (or pass its factor `cholesky`)
        ridge: float = 1e-6,  # ε as a fraction of the mean variance, added to Σ's diagonal
        cholesky: torch.Tensor | None = None,  # [w_dim, w_dim] lower factor of Σ + εI, when already computed
    ) -> None:
        super().__init__()
        mean = torch.as_tensor(mean).float().flatten()
        if (covariance is None) == (cholesky is None):
            raise ValueError("Mahalanobis: pass exactly one of covariance and cholesky")
        if not ridge >= 0:
            raise ValueError(f"ridge: expected >= 0, got {ridge}")
        if cholesky is None:
            covariance = torch.as_tensor(covariance).double()
            check_shape("covariance", covariance, [mean.shape[0], mean.shape[0]])
            cholesky = _regularised_cholesky((covariance + covariance.T) / 2, ridge)
        check_shape("cholesky", torch.as_tensor(cholesky), [mean.shape[0], mean.shape[0]])
        self.register_buffer("mean", mean)
        self.register_buffer("cholesky", torch.as_tensor(cholesky).float())

    @classmethod
    def from_generator(
        cls,
        G: nn.Module,  # generator whose mapping network is sampled
        num_samples: int = 10_000,  # mapped samples for mean and covariance (must exceed w_dim)
        seed: int = 0,  # seed of the z draw
        ridge: float = 1e-6,  # covariance ridge as a fraction of the mean variance
    ) -> Mahalanobis:
        """Mahalanobis with the statistics of `num_samples` mapped w (float64), computed once per generator."""
        _require_generator(G)
        w_dim = G.mapping.w_dim
        if num_samples <= w_dim:
            raise ValueError(f"num_samples: a {w_dim}-dim covariance needs more than {w_dim} samples, got {num_samples}")
        key = (int(num_samples), int(seed), float(ridge))
        cache = _W_GAUSSIANS.setdefault(G, {})
        if key not in cache:
            w = sample_w(G, num_samples, seed).double()
            mean = w.mean(0)
            centred = w - mean
            covariance = centred.T @ centred / (num_samples - 1)
            cache[key] = (mean.float(), _regularised_cholesky(covariance, ridge).float())
        mean, factor = cache[key]
        return cls(mean, cholesky=factor, ridge=ridge)

    def squared_distance(self, ws: torch.Tensor) -> torch.Tensor:
        """d² [...] of every row of ws [..., w_dim]."""
        if ws.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"ws: expected rows of {self.mean.shape[0]} dims, got shape {list(ws.shape)}")
        centred = (ws - self.mean).reshape(-1, self.mean.shape[0]).T  # [w_dim, rows]
        whitened = torch.linalg.solve_triangular(self.cholesky.to(ws.dtype), centred, upper=False)
        return (whitened**2).sum(0).reshape(ws.shape[:-1])

    def penalty(self, ws: torch.Tensor) -> torch.Tensor:
        """Scalar penalty of ws [N, num_ws, w_dim]."""
        check_shape("ws", ws, [None, None, self.mean.shape[0]])
        return (self.squared_distance(ws) / self.mean.shape[0]).mean(1).sum()


# ---------------------------------------------------------------------------------------------------
# Building by name.


def _w_delta(G: nn.Module | None = None) -> WDelta:
    return WDelta()


def _none(G: nn.Module | None = None) -> NoRegularizer:
    return NoRegularizer()


def _l2_init(G: nn.Module | None = None) -> L2Init:
    return L2Init()


def _w_plus_var(G: nn.Module | None = None) -> WPlusVar:
    return WPlusVar()


REGULARIZERS: dict[str, RegularizerFactory] = {
    "w_delta": _w_delta,
    "w_mean": WMean.from_generator,
    "pn": PNRegularizer.from_generator,
    "none": _none,
    "l2_init": _l2_init,
    "w_plus_var": _w_plus_var,
    "mahalanobis": Mahalanobis.from_generator,
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
