"""Train the demo bundle's StyleGAN2 generator on rendered people, with NVlabs' stylegan2-ada recipe made small.

The recipe (NVlabs training/loss.py and training/training_loop.py, StyleGAN2 config, no augmentation):

- non-saturating logistic loss: L_G = softplus(-D(G(z))), L_D = softplus(D(G(z))) + softplus(-D(x));
- lazy R1 on reals every `r1_interval` D steps: (r1_gamma / 2) * |grad_x D(x)|^2, times the interval;
- Adam, betas (0, 0.99); D's learning rate and betas adjusted for lazy regularisation (c = I / (I + 1):
  lr * c, beta ** c). G has no regulariser here (no path-length term), so its Adam is plain;
- G_ema: half-life `ema_kimg` thousand images, ramped up as min(ema_kimg, 0.05 * images seen);
- per-pixel noise drawn at random during training; optional style mixing (off by default);
- w_avg: G's mapping tracks the mean w (beta 0.995) in train mode and G_ema copies it with the other buffers,
  as NVlabs does; at the end G_ema's w_avg is replaced by the mean of G_ema's own mapping over 10,000 z,
  since the editor's latent regularisers and e4e start from it.

Co-trained encoder (optional, `recon_weight` > 0; the demo bundle uses 10): an e4e encoder E of
train_e4e's default architecture is trained with G on the real renders, and G's step minimises

    L_G + recon_weight * (mean |G.synthesis(E(x), noise 'const') - x| + recon_delta_weight * delta(E(x)))

(x in [-1, 1]; delta = e4e's spread of W+ rows around row 0, FICE's w_delta). Why: on a CPU budget of tens
of minutes the adversarial loss alone taught the 64-px generator silhouettes but no garment colour or
pattern (20 min, 38 kimg); the dense reconstruction signal teaches G to draw the renders' garments, and the
editor inverts photos anyway, so what matters most is that G reaches them from W+. E has its own Adam
(lr ENCODER_LR, betas 0.9/0.99, gradient norm clipped): StyleGAN's beta1 = 0 made it diverge. E is
written as out_dir/e4e.pt (the e4e trainer's starting point) and reported as the generator report's
companion. With recon_weight 0 (the default) this is NVlabs' recipe unchanged.

Data: a pool of rendered people (training seeds only, see dataset.py), rendered once before the clock
starts; batches are drawn from it uniformly, without horizontal flips (left/right body parts are labelled).

Default architecture (DEFAULT_G_KWARGS / DEFAULT_D_KWARGS), chosen by timing on the development machine
(2 CPU cores shared with other jobs, torch 2.15 CPU build): 64 px, z = w = 128, a 2-layer mapping, channels
min(1024 / r, 128) = 128, 128, 64, 32, 16 at 4..64 px, no float16, no clamping; G 0.76 M parameters,
D 0.88 M. Process CPU time per training step (G step + D step + R1 every 16th), batch 16, one thread:

    channel_base / channel_max / w_dim    1024/128/128   512/128/128   1536/128/128   2048/128/128   1024/256/256
    CPU seconds per step                  0.47-0.55      0.36          1.03           1.38           0.92

(batch 8 and 32 cost 0.36 and 1.16 s: 16 is the cheapest per image; 4096/128 was an order of magnitude
slower than the default.) From its CPU time the default runs ~2 steps/s on one idle core, so 25 minutes is
~3,000 steps or ~48 k images (48 kimg): the default `steps`. On the shared machine a 150 s run made 0.95
steps/s (load average ~6 on 2 cores); there, two intra-op threads were 5-10x slower than one (0.08-0.17
steps/s), so pass cpu_threads=1 when the CPU is shared (two threads on two idle cores were not measured).
On CUDA the default batch is 64.

Output: out_dir/generator.pt in FICE's format (`save_generator`: G_ema as 'G', D, and a 'training' record
naming this trainer). The file is written to a temporary name in out_dir and moved into place; an existing
generator.pt is replaced only if its 'training' record says this trainer wrote it, and otherwise training
refuses to start (FileExistsError).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ficekit.bundle import ModelSpec
from ficekit.checkpoint_io import atomic_write, load_torch_file
from ficekit.encoder import Encoder4Editing, save_e4e
from ficekit.generator import Discriminator, Generator, load_discriminator, load_generator, save_generator
from ficekit.synthetic.dataset import training_batches
from ficekit.synthetic.train_e4e import E4E_FILE as ENCODER_FILE
from ficekit.synthetic.train_e4e import TRAINER_ID as E4E_TRAINER_ID
from ficekit.synthetic.train_e4e import default_encoder_kwargs, start_from
from ficekit.synthetic.training import Budget, TrainReport, trainer_of
from ficekit.synthetic.world import DEFAULT_WORLD, check_world

logger = logging.getLogger(__name__)

TRAINER_ID = "ficekit.synthetic.train_gan"  # recorded in generator.pt['training']['trainer']
OUTPUT_FILE = "generator.pt"
ENCODER_LR = 1e-3  # Adam learning rate of the co-trained encoder (train_e4e's)
ENCODER_GRAD_CLIP = 1.0  # max gradient norm of the co-trained encoder per step

# The generator and discriminator of the demo bundle, sized for tens of minutes of CPU training (see the
# module docstring for the timings). img_resolution and img_channels are set by train_gan.
DEFAULT_G_KWARGS: dict[str, Any] = {
    "z_dim": 128,
    "c_dim": 0,
    "w_dim": 128,
    "mapping_kwargs": {"num_layers": 2},
    "synthesis_kwargs": {"channel_base": 1024, "channel_max": 128, "num_fp16_res": 0, "conv_clamp": None},
}
DEFAULT_D_KWARGS: dict[str, Any] = {
    "c_dim": 0,
    "channel_base": 1024,
    "channel_max": 128,
    "num_fp16_res": 0,
    "conv_clamp": None,
}

# ----------------------------------------------------------------------------- losses


def loss_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: mean softplus(-D(G(z))) = mean -log sigmoid(D(G(z)))."""
    return F.softplus(-fake_logits).mean()


def loss_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Logistic discriminator loss: mean softplus(D(G(z))) + mean softplus(-D(x))."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(D: torch.nn.Module, real_img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """|grad_x D(x)|^2 per real image [N] (x detached), differentiable w.r.t. D's parameters; and the logits [N, 1]."""
    real = real_img.detach().requires_grad_(True)
    logits = D(real)
    (grad,) = torch.autograd.grad(outputs=[logits.sum()], inputs=[real], create_graph=True)
    return grad.square().sum(dim=[1, 2, 3]), logits


def r1_loss(
    D: torch.nn.Module, real_img: torch.Tensor, gamma: float, interval: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lazy R1 term: (gamma / 2) * mean |grad_x D(x)|^2 * interval (applied every `interval` D steps).

    Returns (loss, penalty [N]); the penalty is the unscaled squared gradient norm that training logs as 'r1'.
    """
    penalty, _ = r1_penalty(D, real_img)
    return penalty.mean() * (gamma / 2) * interval, penalty


def ema_beta(batch_size: int, ema_kimg: float, ema_rampup: float | None, images_seen: int) -> float:
    """NVlabs' G_ema decay for one step: 0.5 ** (batch / half-life in images), half-life ramped up if asked."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, images_seen * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G for parameters; buffers (w_avg, noise) copied from G."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
        p_ema.copy_(p.lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)


@torch.no_grad()
def estimate_w_avg(G: Generator, n: int = 10_000, seed: int = 0, batch: int = 2_000) -> torch.Tensor:
    """Mean of G's mapping output over `n` seeded z ~ N(0, I): the w_avg truncation and the editor start from."""
    device = G.mapping.w_avg.device
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros([G.w_dim], dtype=torch.float64, device=device)
    for start in range(0, n, batch):
        z = torch.randn([min(batch, n - start), G.z_dim], generator=gen).to(device)
        total += G.mapping(z, skip_w_avg_update=True)[:, 0].double().sum(dim=0)
    return (total / n).float()


# ----------------------------------------------------------------------------- quality proxies


def pixel_fd(a: torch.Tensor, b: torch.Tensor, thumb: int = 8) -> float:
    """Frechet distance between Gaussians fitted to `thumb` x `thumb` area-averaged thumbnails of two image sets.

    a, b: [N, 3, H, W] in [0, 1]. A cheap, Inception-free proxy (not FID): it sees colour layout and coarse
    shape, not texture; with a few hundred images per set its covariance is noisy, so compare it with the
    value between two real sets.
    """
    from ficekit.eval.metrics import frechet_distance

    fa = F.adaptive_avg_pool2d(a.float(), thumb).flatten(1).double().cpu()
    fb = F.adaptive_avg_pool2d(b.float(), thumb).flatten(1).double().cpu()
    return frechet_distance(fa.mean(0), torch.cov(fa.T), fb.mean(0), torch.cov(fb.T))


def colour_moment_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Euclidean distance between the (per-channel mean, per-channel std) of two image sets [N, 3, H, W] in [0, 1]."""

    def moments(x: torch.Tensor) -> torch.Tensor:
        x = x.float().transpose(0, 1).flatten(1)
        return torch.cat([x.mean(1), x.std(1)])

    return float((moments(a) - moments(b)).norm())


# ----------------------------------------------------------------------------- data


def render_pool(n: int, size: int, seed: int = 0, progress: bool = True, world: str = DEFAULT_WORLD) -> torch.Tensor:
    """`n` rendered training people of `world` [n, 3, size, size] as uint8 (seeded; training seed range only)."""
    if n < 1:
        raise ValueError(f"render_pool: n must be >= 1, got {n}")
    chunk = min(n, 256)
    batches = training_batches(chunk, size, seed=seed, world=world)
    parts: list[torch.Tensor] = []
    with tqdm(total=n, desc="rendering people", unit="img", disable=not progress) as bar:
        while sum(len(p) for p in parts) < n:
            images = next(batches).images
            parts.append(images.mul(255).round().to(torch.uint8))
            bar.update(len(images))
    return torch.cat(parts)[:n]


def _to_signed(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.to(torch.float32) / 127.5 - 1


def _check_data(data: torch.Tensor, resolution: int) -> torch.Tensor:
    if not isinstance(data, torch.Tensor) or data.ndim != 4 or tuple(data.shape[1:]) != (3, resolution, resolution):
        got = list(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"train_gan: data must be [N, 3, {resolution}, {resolution}] in [0, 1], got {got}")
    if data.shape[0] < 1:
        raise ValueError("train_gan: data holds no images")
    return data.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


# ----------------------------------------------------------------------------- output file


def _check_replaceable(path: Path) -> None:
    if path.exists() and trainer_of(path) != TRAINER_ID:
        raise FileExistsError(
            f"train_gan: {path} exists and was not written by {TRAINER_ID}; refusing to replace it "
            "(move it away or choose another out_dir)"
        )


def _check_encoder_replaceable(path: Path) -> None:
    """A co-trained encoder may replace an e4e.pt written by this trainer or by train_e4e, nothing else."""
    if path.exists() and trainer_of(path) not in (TRAINER_ID, E4E_TRAINER_ID):
        raise FileExistsError(
            f"train_gan: {path} exists and was not written by ficekit's trainers; refusing to replace it "
            "(move it away or choose another out_dir)"
        )


def _save(G_ema: Generator, D: Discriminator, path: Path, training: dict[str, Any]) -> None:
    _check_replaceable(path)  # again: something may have appeared while training
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        save_generator(G_ema, tmp, D=D, extra={"training": training})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- training


def _merged(defaults: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """`defaults` updated by `overrides`; nested dicts (mapping_kwargs, ...) are updated key by key."""
    out = copy.deepcopy(defaults)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _run_G(G: Generator, z: torch.Tensor, style_mixing_prob: float) -> torch.Tensor:
    ws = G.mapping(z)
    if style_mixing_prob > 0 and float(torch.rand([])) < style_mixing_prob:
        cutoff = int(torch.randint(1, ws.shape[1], []))
        ws[:, cutoff:] = G.mapping(torch.randn_like(z), skip_w_avg_update=True)[:, cutoff:]
    return G.synthesis(ws, noise_mode="random")


def _sanitise_grads(module: torch.nn.Module) -> None:
    for p in module.parameters():
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)


@torch.no_grad()
def _samples_01(G: Generator, n: int, seed: int, batch: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    device = G.mapping.w_avg.device
    out = [
        G(torch.randn([min(batch, n - i), G.z_dim], generator=gen).to(device), noise_mode="const").add(1).div(2)
        for i in range(0, n, batch)
    ]
    return torch.cat(out).clamp(0, 1).cpu()


def _quality(G: Generator, reals_01: torch.Tensor, seed: int) -> dict[str, float]:
    fakes = _samples_01(G, len(reals_01), seed)
    return {"pixel_fd8": pixel_fd(fakes, reals_01), "colour_moment_dist": colour_moment_distance(fakes, reals_01)}


@dataclass(frozen=True)
class _Settings:
    """The resolved settings of one run (defaults filled in), as `_train` uses them."""

    steps: int
    time_budget_s: float | None
    batch_size: int
    lr: float
    r1_gamma: float
    r1_interval: int
    ema_kimg: float
    ema_rampup: float | None
    style_mixing_prob: float
    log_every: int
    n_eval: int
    seed: int
    progress: bool
    recon_weight: float
    recon_delta_weight: float
    checkpoint_every_s: float | None = None


# (G_ema, D, encoder or None, steps done, seconds of training, images seen) -> None: writes a checkpoint.
CheckpointWriter = Callable[[Generator, Discriminator, Encoder4Editing | None, int, float, int], None]


def train_gan(
    out_dir: str | os.PathLike,
    *,
    resolution: int = 64,                    # Image side in px (a power of two >= 4).
    steps: int = 3_000,                      # Training steps (one G and one D update each); ~25 min, see above.
    time_budget_s: float | None = None,      # Wall-clock limit of the training loop; None = `steps` only.
    batch_size: int | None = None,           # Images per step, 1..4 or a multiple of 4; None = 16 on CPU, 64 on CUDA.
    device: str | torch.device = "cpu",      # 'cpu', 'cuda', 'cuda:1', ...
    seed: int = 0,                           # Seeds the weights, latents, batches and the rendered pool.
    progress: bool = True,                   # tqdm bars for rendering and training.
    g_kwargs: dict[str, Any] | None = None,  # Updates DEFAULT_G_KWARGS (nested dicts key by key).
    d_kwargs: dict[str, Any] | None = None,  # Updates DEFAULT_D_KWARGS (nested dicts key by key).
    lr: float = 0.0025,                      # Adam learning rate (NVlabs' value below 1024 px).
    r1_gamma: float | None = None,           # R1 weight; None = NVlabs' auto value 0.0002 * resolution^2 / batch.
    r1_interval: int = 16,                   # Lazy R1 every this many D steps; 1 = every step.
    ema_kimg: float | None = None,           # G_ema half-life in thousands of images; None = batch * 10 / 32.
    ema_rampup: float | None = 0.05,         # Half-life at most this times the images seen; None = no rampup.
    style_mixing_prob: float = 0.0,          # Probability of mixing two latents in a G batch; 0 = off.
    pool_size: int = 5_000,                  # Rendered people in the pool (~6 ms each at 64 px); not with `data`.
    data: torch.Tensor | None = None,        # Train on these images [N, 3, R, R] in [0, 1] instead; None = render.
    log_every: int = 100,                    # Log every this many steps; final loss metrics average this window.
    n_eval: int = 256,                       # Generated and real images for the quality proxies.
    cpu_threads: int | None = None,          # torch intra-op CPU threads while training (restored after); None = as is.
    recon_weight: float = 0.0,               # Weight of the co-trained encoder's L1 reconstruction term; 0 = plain GAN.
    recon_delta_weight: float = 0.05,        # Weight of the encoder's W+ spread penalty (FICE's w_delta) in that term.
    encoder_kwargs: dict[str, Any] | None = None,  # Updates train_e4e.default_encoder_kwargs(G) for that encoder.
    init_from: str | os.PathLike | None = None,  # Resume: G, G_ema and D from this FICE-format generator.pt.
    init_encoder_from: str | os.PathLike | None = None,  # Resume the co-trained encoder from this e4e.pt.
    world: str = DEFAULT_WORLD,              # Synthetic world version the pool is rendered from (WORLD_VERSIONS).
    checkpoint_every_s: float | None = None,  # Also write the files every this many training seconds; None = at the end.
) -> TrainReport:
    """Train ficekit's StyleGAN2 Generator and Discriminator on rendered people; write out_dir/generator.pt.

    Stops after `steps` steps or `time_budget_s` seconds of training, whichever comes first (rendering the
    pool happens before that clock starts). The file holds G_ema (as FICE's 'G'), D, and a 'training' record.
    Deterministic for a seed on CPU; on CUDA, cuDNN may make runs differ slightly. The caller's global RNG
    state is left as it was.

    Returns a TrainReport (role 'generator', format 'fice') whose metrics are means over the last `log_every`
    steps of loss_d, loss_g, real_logit, fake_logit and r1 (unscaled mean |grad_x D|^2 of the recent R1 steps),
    plus two cheap quality proxies of G_ema against training images: pixel_fd8 (Frechet distance of 8x8
    thumbnails, not FID) and colour_moment_dist (distance of per-channel colour means and stds), each also as
    '<name>_init' before training, and pixel_fd8_real_floor (the same distance between two sets of real
    images, when the pool holds 2 * n_eval); kimg and steps_per_s.

    Resuming (`init_from`, e.g. out_dir/generator.pt of an earlier run): G and G_ema start from the file's G
    (train_gan saves G_ema only) and D from its D, with the architecture the file records (so g_kwargs and
    d_kwargs must be None) and fresh Adam states; `init_encoder_from` does the same for the co-trained
    encoder. The config records what was resumed ('resumed_from': file, steps, kimg, seconds) and the
    metric 'kimg_total' counts the earlier images too.

    Checkpoints (`checkpoint_every_s`): during a long run the files are also written every so often, with a
    short training record (steps, seconds, kimg, world; config 'checkpoint': True) that `init_from` resumes
    from, so a run that is killed loses at most that much training.

    Raises:
        ValueError: bad sizes or settings.
        FileExistsError: out_dir/generator.pt exists and was not written by this trainer.
    """
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"train_gan: resolution must be a power of two >= 4, got {resolution}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("train_gan: device is CUDA but torch sees no CUDA device")
    if batch_size is None:
        batch_size = 64 if dev.type == "cuda" else 16
    if batch_size < 1 or (batch_size > 4 and batch_size % 4):
        raise ValueError(f"train_gan: batch_size must be 1..4 or a multiple of 4 (minibatch std), got {batch_size}")
    if r1_interval < 1:
        raise ValueError(f"train_gan: r1_interval must be >= 1, got {r1_interval}")
    if log_every < 1 or n_eval < 2:
        raise ValueError(f"train_gan: log_every must be >= 1 and n_eval >= 2, got {log_every} and {n_eval}")
    if cpu_threads is not None and cpu_threads < 1:
        raise ValueError(f"train_gan: cpu_threads must be >= 1 or None, got {cpu_threads}")
    if not 0 <= style_mixing_prob <= 1:
        raise ValueError(f"train_gan: style_mixing_prob must be in [0, 1], got {style_mixing_prob}")
    if recon_weight < 0 or recon_delta_weight < 0:
        raise ValueError(f"train_gan: recon weights must be >= 0, got {recon_weight} and {recon_delta_weight}")
    Budget(steps, time_budget_s)  # validates steps and the time limit before any work
    check_world(world)
    if checkpoint_every_s is not None and not checkpoint_every_s > 0:
        raise ValueError(f"train_gan: checkpoint_every_s must be > 0 or None, got {checkpoint_every_s}")
    if init_encoder_from is not None and not (init_from is not None and recon_weight > 0):
        raise ValueError("train_gan: init_encoder_from resumes the co-trained encoder: it needs init_from and recon_weight > 0")
    start = _Start.read(init_from, init_encoder_from, resolution, g_kwargs, d_kwargs) if init_from is not None else None
    if start is not None and data is None and start.record.get("world", world) != world:
        raise ValueError(f"train_gan: init_from {init_from} was trained on world {start.record['world']}; this run renders {world}")
    out = Path(out_dir)
    path = out / OUTPUT_FILE
    _check_replaceable(path)  # fail before training, not after it
    if recon_weight > 0:
        _check_encoder_replaceable(out / ENCODER_FILE)
    settings = _Settings(
        steps=steps,
        time_budget_s=time_budget_s,
        batch_size=batch_size,
        lr=lr,
        r1_gamma=0.0002 * resolution**2 / batch_size if r1_gamma is None else r1_gamma,
        r1_interval=r1_interval,
        ema_kimg=batch_size * 10 / 32 if ema_kimg is None else ema_kimg,
        ema_rampup=ema_rampup,
        style_mixing_prob=style_mixing_prob,
        log_every=log_every,
        n_eval=n_eval,
        seed=seed,
        progress=progress,
        recon_weight=recon_weight,
        recon_delta_weight=recon_delta_weight,
        checkpoint_every_s=checkpoint_every_s,
    )
    gk = _merged(DEFAULT_G_KWARGS, g_kwargs) | {"img_resolution": resolution, "img_channels": 3}
    dk = _merged(DEFAULT_D_KWARGS, d_kwargs) | {"img_resolution": resolution, "img_channels": 3}

    t0 = time.perf_counter()
    pool = _check_data(data, resolution) if data is not None else render_pool(pool_size, resolution, seed, progress, world)
    data_seconds = time.perf_counter() - t0
    logger.info("train_gan: %d training images of %d px ready in %.1f s", len(pool), resolution, data_seconds)

    fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    threads = torch.get_num_threads()
    try:
        if cpu_threads is not None:
            torch.set_num_threads(cpu_threads)
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            writer = _checkpoint_writer(out, start, world if data is None else None, settings.seed)
            G_ema, D, E, steps_done, seconds, metrics = _train(
                pool.to(dev), gk, dk, dev, settings, encoder_kwargs, start, writer
            )
    finally:
        torch.set_num_threads(threads)

    config: dict[str, Any] = {
        "trainer": TRAINER_ID,
        **{k: v for k, v in dataclasses.asdict(settings).items() if k not in ("steps", "progress")},
        "steps_requested": steps,
        "resolution": resolution,
        "device": str(dev),
        "betas": [0.0, 0.99],
        "noise_mode": "random",
        "xflip": False,
        "path_length_reg": False,
        "data": "given" if data is not None else "rendered",
        "world": None if data is not None else world,
        "pool_size": len(pool),
        "data_seconds": round(data_seconds, 1),
        "cpu_threads": cpu_threads if cpu_threads is not None else threads,
        "g_kwargs": copy.deepcopy(G_ema.init_kwargs),
        "d_kwargs": copy.deepcopy(D.init_kwargs),
        "g_params": sum(p.numel() for p in G_ema.parameters()),
        "d_params": sum(p.numel() for p in D.parameters()),
    }
    if E is not None:
        config["encoder_kwargs"] = dict(E.init_kwargs)
    if start is not None:
        config["resumed_from"] = start.record
        metrics["kimg_total"] = metrics["kimg"] + float(start.record["kimg"] or 0.0)
    training = {"trainer": TRAINER_ID, "steps": steps_done, "seconds": round(seconds, 1), "metrics": metrics}
    _save(G_ema, D, path, training | {"config": config})
    if E is not None:
        E = E.cpu().eval()
        atomic_write(out / ENCODER_FILE, lambda tmp: save_e4e(E, tmp, extra={"training": {"trainer": TRAINER_ID}}))
    logger.info(
        "train_gan: wrote %s (%d steps, %.1f s): %s",
        path,
        steps_done,
        seconds,
        ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()),
    )
    companions: tuple[TrainReport, ...] = ()
    if E is not None:
        encoder_metrics = {"recon_mse": metrics["recon_mse"], "recon_l1": metrics.get("recon_l1", math.nan)}
        encoder_config = {"trainer": TRAINER_ID, "cotrained_with": OUTPUT_FILE, "encoder_kwargs": dict(E.init_kwargs),
                          "data": config["data"], "world": config["world"]}
        companions = (TrainReport("encoder", ModelSpec(ENCODER_FILE, "e4e"), steps_done, seconds, encoder_metrics, encoder_config),)
    return TrainReport(
        role="generator",
        spec=ModelSpec(OUTPUT_FILE, "fice"),
        steps=steps_done,
        seconds=seconds,
        metrics=metrics,
        config=config,
        companions=companions,
    )


@dataclass
class _Start:
    """The networks a resumed run starts from, and the record of the run that made them."""

    G: Generator
    D: Discriminator
    encoder_file: Path | None
    record: dict[str, Any]

    @classmethod
    def read(
        cls,
        path: str | os.PathLike,
        encoder_path: str | os.PathLike | None,
        resolution: int,
        g_kwargs: dict[str, Any] | None,
        d_kwargs: dict[str, Any] | None,
    ) -> _Start:
        """Load G and D of a FICE-format generator.pt (CheckpointError for a bad file or one without D)."""
        if g_kwargs is not None or d_kwargs is not None:
            raise ValueError("train_gan: a resumed run keeps the architecture of init_from; pass no g_kwargs or d_kwargs")
        G, D = load_generator(path, format="fice"), load_discriminator(path)
        if G.img_resolution != resolution or D.img_resolution != resolution:
            raise ValueError(f"train_gan: init_from {path} is {G.img_resolution} px; this run trains {resolution} px")
        payload = load_torch_file(path, "generator checkpoint")
        earlier = payload.get("training") if isinstance(payload.get("training"), dict) else {}
        metrics = earlier.get("metrics") if isinstance(earlier.get("metrics"), dict) else {}
        kimg = metrics.get("kimg_total", metrics.get("kimg"))
        record: dict[str, Any] = {"file": str(Path(path).resolve()), "trainer": earlier.get("trainer")}
        record |= {"steps": earlier.get("steps"), "seconds": earlier.get("seconds"), "kimg": kimg}
        config = earlier.get("config") if isinstance(earlier.get("config"), dict) else {}
        if config.get("data", "rendered") == "rendered":  # files from before world versions were trained on v1
            record["world"] = config.get("world") or "v1"
        encoder_file = None
        if encoder_path is not None:
            encoder_file = Path(encoder_path)
            record["encoder_file"] = str(encoder_file.resolve())
        return cls(G, D, encoder_file, record)


def _checkpoint_writer(out: Path, start: _Start | None, world: str | None, seed: int) -> CheckpointWriter:
    """A function that writes generator.pt (and the co-trained e4e.pt) mid-run, resumable like the final files."""

    def write(G_ema: Generator, D: Discriminator, E: Encoder4Editing | None, steps: int, seconds: float, seen: int) -> None:
        G_copy = copy.deepcopy(G_ema)
        G_copy.mapping.w_avg.copy_(estimate_w_avg(G_copy, seed=seed + 3))
        metrics = {"kimg": seen / 1000}
        if start is not None:
            metrics["kimg_total"] = metrics["kimg"] + float(start.record["kimg"] or 0.0)
        config = {"trainer": TRAINER_ID, "checkpoint": True, "data": "rendered" if world else "given", "world": world}
        record = {"trainer": TRAINER_ID, "steps": steps, "seconds": round(seconds, 1), "metrics": metrics, "config": config}
        _save(G_copy, D, out / OUTPUT_FILE, record)
        if E is not None:
            E_copy = copy.deepcopy(E).cpu().eval()
            atomic_write(out / ENCODER_FILE, lambda tmp: save_e4e(E_copy, tmp, extra={"training": {"trainer": TRAINER_ID}}))
        logger.info("train_gan: checkpoint at step %d (%.1f kimg) written to %s", steps, seen / 1000, out / OUTPUT_FILE)

    return write


def _build_encoder(G: Generator, overrides: dict[str, Any] | None, dev: torch.device) -> Encoder4Editing:
    """The co-trained e4e encoder for G (train_e4e's default architecture), predicting absolute W+ rows."""
    E = Encoder4Editing(**(default_encoder_kwargs(G) | dict(overrides or {}))).train().to(dev)
    if (E.num_ws, E.w_dim) != (G.num_ws, G.w_dim):
        raise ValueError(f"train_gan: encoder_kwargs build {E.num_ws} ws of width {E.w_dim}; G takes {G.num_ws} x {G.w_dim}")
    return E


def _reconstruction_terms(G: Generator, E: Encoder4Editing, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean |G.synthesis(E(x)) - x| in [-1, 1], mean (E(x)[:, i] - E(x)[:, 0])^2) for real images x in [-1, 1]."""
    ws = E((real + 1) / 2)
    rec = G.synthesis(ws, noise_mode="const")
    return (rec - real).abs().mean(), (ws[:, 1:] - ws[:, :1]).square().mean()


def _train(
    pool: torch.Tensor,
    gk: dict[str, Any],
    dk: dict[str, Any],
    dev: torch.device,
    s: _Settings,
    encoder_kwargs: dict[str, Any] | None = None,
    start: _Start | None = None,
    checkpoint: CheckpointWriter | None = None,
) -> tuple[Generator, Discriminator, Encoder4Editing | None, int, float, dict[str, float]]:
    """The training loop, under an already seeded global RNG; returns G_ema, D, the co-trained encoder (None
    when recon_weight is 0), steps, seconds and metrics. `start` resumes from an earlier run's networks;
    `checkpoint` is called every s.checkpoint_every_s seconds of training."""
    G = (start.G if start is not None else Generator(**gk)).train().requires_grad_(False).to(dev)
    D = (start.D if start is not None else Discriminator(**dk)).train().requires_grad_(False).to(dev)
    G_ema = copy.deepcopy(G).eval()
    opt_g = torch.optim.Adam(G.parameters(), lr=s.lr, betas=(0.0, 0.99), eps=1e-8)
    E = None
    if s.recon_weight > 0:
        E = _build_encoder(G, encoder_kwargs, dev)
        if start is not None and start.encoder_file is not None:
            start_from(E, start.encoder_file, dev)
    # The encoder trains as e4e does (Adam with momentum); StyleGAN's beta1 = 0 made it diverge.
    opt_e = torch.optim.Adam(E.parameters(), lr=ENCODER_LR, betas=(0.9, 0.99)) if E is not None else None
    c = s.r1_interval / (s.r1_interval + 1) if s.r1_gamma > 0 else 1.0  # NVlabs' lazy-regularisation adjustment
    opt_d = torch.optim.Adam(D.parameters(), lr=s.lr * c, betas=(0.0, 0.99**c), eps=1e-8)

    eval_idx = torch.randperm(len(pool), generator=torch.Generator().manual_seed(s.seed + 1)).to(pool.device)
    n_eval = min(s.n_eval, len(pool))
    reals_01 = pool[eval_idx[:n_eval]].float().cpu() / 255
    metrics = {f"{k}_init": v for k, v in _quality(G_ema, reals_01, s.seed + 2).items()}
    if len(pool) >= 2 * n_eval:
        metrics["pixel_fd8_real_floor"] = pixel_fd(pool[eval_idx[n_eval : 2 * n_eval]].float().cpu() / 255, reals_01)

    logged = ("loss_d", "loss_g", "real_logit", "fake_logit") + (("recon_l1", "recon_delta") if E else ())
    recent: dict[str, collections.deque[float]] = {k: collections.deque(maxlen=s.log_every) for k in logged}
    recent["r1"] = collections.deque(maxlen=math.ceil(s.log_every / s.r1_interval))  # R1 runs every r1_interval
    budget = Budget(s.steps, s.time_budget_s)
    bar = tqdm(total=s.steps, desc="training GAN", unit="step", disable=not s.progress)
    images_seen = 0
    last_checkpoint = 0.0
    while budget.next():
        step = budget.step
        real = _to_signed(pool[torch.randint(len(pool), [s.batch_size], device=pool.device)])

        # G: maximise D's logits for generated images (D's weights get no gradient); with a co-trained
        # encoder, also reconstruct the reals through G.synthesis(E(x)) in the same step.
        G.requires_grad_(True)
        fake_logits = D(_run_G(G, torch.randn([s.batch_size, G.z_dim], device=dev), s.style_mixing_prob))
        lg = loss_g(fake_logits)
        total_g = lg
        if E is not None and opt_e is not None:
            rec_l1, rec_delta = _reconstruction_terms(G, E, real)
            total_g = lg + s.recon_weight * (rec_l1 + s.recon_delta_weight * rec_delta)
            opt_e.zero_grad(set_to_none=True)
        opt_g.zero_grad(set_to_none=True)
        total_g.backward()
        _sanitise_grads(G)
        opt_g.step()
        if E is not None and opt_e is not None:
            _sanitise_grads(E)
            torch.nn.utils.clip_grad_norm_(E.parameters(), ENCODER_GRAD_CLIP)
            opt_e.step()
        G.requires_grad_(False)

        # D: logistic loss on reals and fresh fakes, then lazy R1 on the same reals.
        D.requires_grad_(True)
        with torch.no_grad():
            fake = _run_G(G, torch.randn([s.batch_size, G.z_dim], device=dev), s.style_mixing_prob)
        real_logits, fake_logits = D(real), D(fake)
        ld = loss_d(real_logits, fake_logits)
        opt_d.zero_grad(set_to_none=True)
        ld.backward()
        _sanitise_grads(D)
        opt_d.step()
        if s.r1_gamma > 0 and (step - 1) % s.r1_interval == 0:
            lr1, penalty = r1_loss(D, real, s.r1_gamma, s.r1_interval)
            opt_d.zero_grad(set_to_none=True)
            lr1.backward()
            _sanitise_grads(D)
            opt_d.step()
            recent["r1"].append(float(penalty.detach().mean()))
        D.requires_grad_(False)

        update_ema(G_ema, G, ema_beta(s.batch_size, s.ema_kimg, s.ema_rampup, images_seen))
        images_seen += s.batch_size
        if checkpoint is not None and s.checkpoint_every_s and budget.elapsed - last_checkpoint >= s.checkpoint_every_s:
            checkpoint(G_ema, D, E, step, budget.elapsed, images_seen)
            last_checkpoint = budget.elapsed

        terms = [ld, lg, real_logits.mean(), fake_logits.mean()] + ([rec_l1, rec_delta] if E is not None else [])
        values = torch.stack(terms).detach().tolist()  # one device sync
        for key, value in zip(logged, values, strict=True):
            recent[key].append(value)
        bar.update(1)
        if step % s.log_every == 0 or step == 1:
            means = {k: float(np.mean(v)) for k, v in recent.items() if v}
            bar.set_postfix({k: f"{v:.3g}" for k, v in means.items()}, refresh=False)
            logger.info(
                "train_gan: step %d, %.1f kimg, %.0f s: %s",
                step,
                images_seen / 1000,
                budget.elapsed,
                ", ".join(f"{k} {v:.4g}" for k, v in means.items()),
            )
    bar.close()
    seconds = budget.elapsed
    steps_done = budget.step

    G_ema.mapping.w_avg.copy_(estimate_w_avg(G_ema, seed=s.seed + 3))
    metrics.update({k: float(np.mean(v)) for k, v in recent.items() if v})  # no 'r1' when r1_gamma is 0
    metrics.update(_quality(G_ema, reals_01, s.seed + 2))
    if E is not None:
        metrics.update(_reconstruction_quality(G_ema, E.eval(), reals_01))
    metrics["kimg"] = images_seen / 1000
    metrics["steps_per_s"] = steps_done / max(seconds, 1e-9)
    return G_ema, D, E, steps_done, seconds, metrics


@torch.no_grad()
def _reconstruction_quality(G: Generator, E: Encoder4Editing, reals_01: torch.Tensor) -> dict[str, float]:
    """Pixel MSE in [0, 1] of G_ema.synthesis(E(x)) on training images (the co-trained encoder's fit)."""
    device = G.mapping.w_avg.device
    errors = [
        (G.synthesis(E(x.to(device)), noise_mode="const").add(1).div(2) - x.to(device)).square().mean().item()
        for x in reals_01.split(64)
    ]
    return {"recon_mse": float(np.mean(errors))}
