"""Train the demo e4e encoder: a small Encoder4Editing that inverts a frozen generator's images to W+.

    report = train_e4e("out/", "out/generator.pt", steps=3000, batch_size=8)   # writes out/e4e.pt

The recipe, and why (e4e, Tov et al. 2021, trains on real photos with L2 + LPIPS + ID losses and a
delta regulariser; here the generator is ours, so its own samples come with their exact latents):

- Generated pairs. z ~ N(0, I) → ws = G.mapping(z) (truncation 1, G's training distribution); with
  probability `mixing_prob` a sample's rows from a random cutoff on come from a second z (style mixing,
  as StyleGAN trains), so targets cover W+ near W rather than W alone; optional per-row Gaussian noise
  (`row_noise`, in units of W's per-dimension std) spreads them further. Images = synthesize_01(G, ws).
- Losses on a batch = generated images + a `real_fraction` of rendered photos (the synthetic world at
  G's resolution, seeds from the training range):
    w      mean((E(x) − ws)²) / var(W)           generated images only; 1 = predicting the mean w
    image  mean((synthesize_01(G, E(x)) − x)²)    every image, gradient through the frozen G (pixel MSE in
                                                  [0,1]; no LPIPS: its weights would be a download)
    delta  mean((E(x)[1:] − E(x)[0])²) / var(W)   e4e's delta regulariser (FICE's w_delta), keeps W+ near W
  total = w_weight·w + image_weight·image + w_delta_weight·delta (defaults 1, 30, 0.01). Real photos have
  no latent, so only the image term (and the regulariser) reaches them; FICE inverts real photos, so they
  are in every batch. The image weight matches FICE's img weight; in a short run on a 64-px generator it
  gave lower held-out photo MSE than 10 at the same w error (0.0132 vs 0.0144 after 180 steps).
- No progressive delta schedule (e4e's num_deltas): the w term supervises every row from the start.
- Adam with a short warm-up and cosine decay over the run (the step or time budget, whichever ends it).
- Optionally (`bn_calibration` > 0), BatchNorm's running statistics are recomputed at the end on that
  many fresh training renders (calibrate_batchnorm, detectron2's "precise BN"), the photos the encoder
  will invert: the moving averages lag the weights and follow batches that are mostly generated samples.
  The demo leaves it off: its one comparison on the demo encoder was measured on files whose float16
  storage had turned large running variances into inf (fixed in compact.py), so it is void. On a tiny
  random generator, whose samples look nothing like photos, it raised a test encoder's error after mixed
  batches (0.098 -> 0.29) and lowered it after photo-only ones (0.061 -> 0.047). Check it on held-out photos.
- The encoder is small for the CPU (DEFAULT_ENCODER: IR-SE units [1,1,2,1], channels [16,32,64,128]),
  reads images at G's resolution, and starts from G's w_avg (e4e's latent_avg, added to its output).

Speed (2 shared CPU cores, torch 2.15, one torch thread — on a busy 2-core machine one thread ran 3-6x
faster than two): with the demo generator (64 px, w_dim 128, channel_base 1024) and batch 8, 2-3 steps/s.

Metrics are computed with the written file read back through the bundle loader, on held-out generated
samples (a z stream disjoint from training) and held-out renders (`held_out_seeds`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ficekit.bundle import ModelSpec, load_model
from ficekit.checkpoint_io import atomic_write
from ficekit.encoder import Encoder4Editing, load_e4e, save_e4e
from ficekit.generator import Generator, load_generator, synthesize_01
from ficekit.regularizers import sample_w
from ficekit.synthetic.dataset import held_out_seeds, render_batch, training_batches
from ficekit.synthetic.training import Budget, TrainReport, loop_metrics, lr_factor
from ficekit.synthetic.world import DEFAULT_WORLD, check_world

logger = logging.getLogger(__name__)

E4E_FILE = "e4e.pt"
TRAINER_ID = "ficekit.synthetic.train_e4e"  # recorded in e4e.pt['training']['trainer']
CALIBRATION_BATCH = 32  # renders per forward pass when calibrating BatchNorm statistics
# Encoder architecture beside what the generator fixes (gan_size, w_dim, input_size): a few-unit IR-SE body.
DEFAULT_ENCODER: dict[str, Any] = {"units": [1, 1, 2, 1], "channels": [16, 32, 64, 128]}
_EVAL_Z_SEED = 1_000_003  # offset of the held-out z stream from the training seed
_STATS_SAMPLES = 4096  # mapped w used for W's variance (and w_avg when G tracks none)


def default_encoder_kwargs(G: Generator) -> dict[str, Any]:
    """Encoder4Editing kwargs for `G`: DEFAULT_ENCODER, G's resolution and w_dim, input at G's resolution."""
    return {**DEFAULT_ENCODER, "gan_size": G.img_resolution, "w_dim": G.w_dim, "input_size": max(32, G.img_resolution)}


def w_statistics(G: Generator, seed: int = 0) -> tuple[torch.Tensor, float]:
    """(w_avg [w_dim], mean per-dimension variance of W) of G's mapping network.

    w_avg is G's tracked mean when it has one (not all zeros), else the mean of mapped samples.
    """
    w = sample_w(G, _STATS_SAMPLES, seed=seed)
    tracked = getattr(G.mapping, "w_avg", None)
    w_avg = tracked.detach().float() if tracked is not None and bool(tracked.abs().sum() > 0) else w.mean(0)
    return w_avg, float(w.var(0).mean())


def sample_targets(
    G: Generator,  # frozen generator (unconditional)
    n: int,  # samples to draw
    rng: torch.Generator,  # CPU generator for every random draw (z, mixing, noise)
    mixing_prob: float = 0.5,  # chance that a sample's rows from a random cutoff come from a second z
    row_noise: float = 0.0,  # std of per-row Gaussian noise, in units of W's std; 0 = none
    w_std: float = 1.0,  # W's per-dimension std (sqrt of w_statistics' variance)
) -> torch.Tensor:
    """Target latents W+ [n, num_ws, w_dim] on G's device: mapped z, style-mixed and perturbed per row."""
    device = next(G.parameters()).device
    num_ws = G.num_ws
    z = torch.randn(2, n, G.z_dim, generator=rng)
    cutoff = torch.randint(1, max(num_ws, 2), (n, 1), generator=rng)
    mix = torch.rand(n, 1, generator=rng) < mixing_prob
    noise = torch.randn(n, num_ws, G.w_dim, generator=rng) * (row_noise * w_std)
    with torch.no_grad():
        ws = G.mapping(z[0].to(device), None, skip_w_avg_update=True)
        if mixing_prob > 0:
            other = G.mapping(z[1].to(device), None, skip_w_avg_update=True)
            take = (mix & (torch.arange(num_ws).view(1, -1) >= cutoff)).to(device)  # [n, num_ws]
            ws = torch.where(take.unsqueeze(-1), other, ws)
        if row_noise > 0:
            ws = ws + noise.to(device)
    return ws


def e4e_losses(
    encoder: Encoder4Editing,  # encoder being trained
    G: Generator,  # frozen generator
    images: torch.Tensor,  # [B,3,S,S] in [0,1]: generated images first, then real ones
    ws: torch.Tensor,  # [n_gen, num_ws, w_dim] latents of the first n_gen images
    w_var: float,  # W's mean per-dimension variance (normalises the w and delta terms)
) -> dict[str, torch.Tensor]:
    """The loss terms 'w', 'image' and 'delta' (scalars; see the module docstring) of one batch."""
    pred = encoder(images)
    n_gen = ws.shape[0]
    w_term = ((pred[:n_gen] - ws) ** 2).mean() / w_var if n_gen else pred.new_zeros(())
    image_term = ((synthesize_01(G, pred) - images) ** 2).mean()
    delta_term = ((pred[:, 1:] - pred[:, :1]) ** 2).mean() / w_var
    return {"w": w_term, "image": image_term, "delta": delta_term}


def train_e4e(
    out_dir: str | os.PathLike,  # folder that receives e4e.pt (created if missing; other files untouched)
    generator_path: str | os.PathLike,  # the frozen generator (any format load_generator reads)
    *,
    steps: int,  # maximum optimisation steps
    time_budget_s: float | None = None,  # wall-clock limit of the training loop; None = steps only
    batch_size: int = 8,  # images per step (generated + real)
    device: str | torch.device = "cpu",  # where G and the encoder run
    seed: int = 0,  # seeds initialisation, z draws and real-photo draws
    progress: bool = True,  # show a tqdm bar
    encoder_kwargs: Mapping[str, Any] | None = None,  # overrides of default_encoder_kwargs(G)
    lr: float = 1e-3,  # Adam peak learning rate
    w_weight: float = 1.0,  # weight of the normalised w-space MSE
    image_weight: float = 30.0,  # weight of the pixel MSE of G(E(x)) vs x (FICE's img weight)
    w_delta_weight: float = 0.01,  # weight of the normalised delta regulariser
    real_fraction: float = 0.25,  # share of each batch that is rendered photos (image term only)
    mixing_prob: float = 0.5,  # style-mixing probability of the generated targets
    row_noise: float = 0.0,  # per-row noise on the targets, in W std units
    eval_samples: int = 32,  # held-out generated samples and held-out renders for the metrics
    init_from: str | os.PathLike | None = None,  # start from this e4e file (e.g. the GAN's co-trained one)
    bn_calibration: int = 0,  # renders whose statistics become BatchNorm's running ones at the end; 0 = off
    world: str = DEFAULT_WORLD,  # synthetic world version of the rendered photos (WORLD_VERSIONS)
) -> TrainReport:
    """Train an e4e encoder on `generator_path`'s samples (and renders); write out_dir/e4e.pt; report.

    Returns TrainReport(role='encoder', spec=ModelSpec('e4e.pt', 'e4e')) with metrics: gen_w_mse (raw),
    gen_w_nmse (/ var W), gen_image_mse, real_image_mse and real_image_mse_mean_w (G(w_avg) as a
    baseline), loss_start / loss_end (mean training loss of the first and last steps), steps_per_s.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= real_fraction <= 1.0:
        raise ValueError(f"real_fraction must be in [0, 1], got {real_fraction}")
    if not 0.0 <= mixing_prob <= 1.0:
        raise ValueError(f"mixing_prob must be in [0, 1], got {mixing_prob}")
    if eval_samples < 1:
        raise ValueError(f"eval_samples must be >= 1, got {eval_samples}")
    if bn_calibration < 0:
        raise ValueError(f"bn_calibration must be >= 0 (renders), got {bn_calibration}")
    Budget(steps, time_budget_s)  # validates steps / time_budget_s before any work
    check_world(world)
    start = time.perf_counter()
    out = Path(out_dir)
    G = load_generator(generator_path, device=device)
    if G.c_dim or G.img_channels != 3:
        raise ValueError(
            f"train_e4e: {generator_path} is a conditional or non-RGB generator (c_dim={G.c_dim}, "
            f"img_channels={G.img_channels}); the encoder trains on an unconditional RGB one"
        )
    kwargs = {**default_encoder_kwargs(G), **dict(encoder_kwargs or {})}
    n_real = round(batch_size * real_fraction)
    n_gen = batch_size - n_real
    size = G.img_resolution
    config = {
        "generator": str(generator_path), "encoder_kwargs": kwargs, "batch_size": batch_size, "seed": seed,
        "lr": lr, "w_weight": w_weight, "image_weight": image_weight, "w_delta_weight": w_delta_weight,
        "real_fraction": real_fraction, "mixing_prob": mixing_prob, "row_noise": row_noise,
        "max_steps": steps, "time_budget_s": time_budget_s, "init_from": None if init_from is None else str(init_from),
        "bn_calibration": bn_calibration, "world": world,
    }  # fmt: skip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        w_avg, w_var = w_statistics(G, seed=seed)
        encoder = Encoder4Editing(**kwargs).to(device)
        if (encoder.num_ws, encoder.w_dim) != (G.num_ws, G.w_dim):
            raise ValueError(
                f"encoder_kwargs build an encoder for {encoder.num_ws} ws of width {encoder.w_dim}, but the "
                f"generator takes {G.num_ws} of width {G.w_dim}"
            )
        if init_from is not None:
            start_from(encoder, init_from, device)
        else:
            with torch.no_grad():
                encoder.latent_avg.copy_(w_avg.view(1, 1, -1).expand_as(encoder.latent_avg))
        encoder.train()
        optimizer = torch.optim.Adam(encoder.parameters(), lr=lr, betas=(0.9, 0.99))
        rng = torch.Generator().manual_seed(seed)
        real_stream = training_batches(n_real, size, seed=seed, world=world) if n_real else None
        losses: list[float] = []
        budget = Budget(steps, time_budget_s)  # the loop's clock starts now, after loading and set-up
        bar = tqdm(total=steps, desc="training e4e", disable=not progress)
        while budget.next():
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_factor(budget)
            if n_gen:
                ws = sample_targets(G, n_gen, rng, mixing_prob, row_noise, math.sqrt(w_var))
                with torch.no_grad():
                    images = synthesize_01(G, ws)
            else:  # photos only: the image term alone, as e4e trains
                ws = w_avg.new_zeros(0, G.num_ws, G.w_dim)
                images = w_avg.new_zeros(0, 3, size, size)
            if real_stream is not None:
                images = torch.cat([images, next(real_stream).images.to(images.device)])
            terms = e4e_losses(encoder, G, images, ws, w_var)
            loss = w_weight * terms["w"] + image_weight * terms["image"] + w_delta_weight * terms["delta"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix({k: f"{float(v.detach()):.4g}" for k, v in terms.items()}, refresh=False)
        bar.close()
        train_seconds = budget.elapsed
        if bn_calibration:
            calibrate_batchnorm(encoder, _calibration_batches(bn_calibration, size, seed, device, world))

    spec = ModelSpec(E4E_FILE, "e4e")
    out.mkdir(parents=True, exist_ok=True)
    encoder = encoder.cpu().eval()
    atomic_write(out / E4E_FILE, lambda tmp: save_e4e(encoder, tmp, extra={"training": {"trainer": TRAINER_ID}}))
    loaded = load_model("encoder", spec, out, device=device)
    with torch.no_grad():
        probe = render_batch(held_out_seeds(2, seed=99), size, world).to(device).images
        if not torch.allclose(encoder.to(device)(probe), loaded(probe), rtol=1e-4, atol=1e-5):
            raise RuntimeError("train_e4e: the written e4e.pt, read back by the bundle loader, gives other latents")
    metrics = evaluate_e4e(loaded, G, w_var, seed=seed, n=eval_samples, world=world)
    metrics |= loop_metrics(losses, budget.step, train_seconds, start)
    logger.info(
        "trained e4e: %d steps in %.1f s (%.2f steps/s); %s",
        budget.step, train_seconds, metrics["steps_per_s"], {k: round(v, 5) for k, v in metrics.items()},
    )  # fmt: skip
    return TrainReport("encoder", spec, budget.step, train_seconds, metrics, config)


def _calibration_batches(
    n: int, size: int, seed: int, device: str | torch.device, world: str = DEFAULT_WORLD
) -> Iterator[torch.Tensor]:
    """`n` training renders in batches of at most CALIBRATION_BATCH, from a stream apart from training's."""
    stream = training_batches(CALIBRATION_BATCH, size, seed=seed + 1_000, world=world)
    for start in range(0, n, CALIBRATION_BATCH):
        yield next(stream).images[: n - start].to(device)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm's running mean and variance by their average over `batches` (forward passes
    in train mode, no gradient); returns the images seen. Why: moving averages lag the weights they
    normalise for; the batches should look like the training batches (see the module docstring)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    seen = 0
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
        model.train()
        for images in batches:
            model(images)
            seen += images.shape[0]
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    if norms and seen == 0:
        raise ValueError("calibrate_batchnorm: no images given")
    return seen


def start_from(encoder: Encoder4Editing, path: str | os.PathLike, device: str | torch.device) -> None:
    """Copy an e4e file's weights and latent_avg into `encoder` (to resume or fine-tune it); the
    architectures must be the same (ValueError naming both otherwise)."""
    start = load_e4e(path, device=device)
    if start.init_kwargs != encoder.init_kwargs:
        raise ValueError(f"encoder file {path} has encoder kwargs {start.init_kwargs}, not {encoder.init_kwargs}")
    encoder.load_state_dict(start.state_dict())


@torch.no_grad()
def evaluate_e4e(
    encoder: nn.Module, G: Generator, w_var: float, seed: int = 0, n: int = 32, world: str = DEFAULT_WORLD
) -> dict[str, float]:
    """Held-out figures of a (frozen) encoder: w and image MSE on G's samples, image MSE on renders.

    Generated samples come from a z stream disjoint from training (no mixing); renders from
    held_out_seeds(n, seed) at G's resolution. real_image_mse_mean_w is G(w_avg)'s error on the same renders.
    """
    device = next(G.parameters()).device
    rng = torch.Generator().manual_seed(_EVAL_Z_SEED + seed)
    metrics: dict[str, float] = {}
    ws = sample_targets(G, n, rng, mixing_prob=0.0)
    images = synthesize_01(G, ws)
    pred = encoder(images)
    w_mse = float(((pred - ws) ** 2).mean())
    metrics["gen_w_mse"] = w_mse
    metrics["gen_w_nmse"] = w_mse / w_var
    metrics["gen_image_mse"] = float(((synthesize_01(G, pred) - images) ** 2).mean())
    real = render_batch(held_out_seeds(n, seed), G.img_resolution, world).images.to(device)
    metrics["real_image_mse"] = float(((synthesize_01(G, encoder(real)) - real) ** 2).mean())
    mean_w = encoder.latent_avg.to(device).expand(1, -1, -1)
    metrics["real_image_mse_mean_w"] = float(((synthesize_01(G, mean_w) - real) ** 2).mean())
    return metrics
