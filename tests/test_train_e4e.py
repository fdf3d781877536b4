"""The demo e4e trainer on a tiny random generator: the file it writes, its report, budget, loss, determinism."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ficekit.bundle import load_model
from ficekit.encoder import Encoder4Editing
from ficekit.generator import Generator, load_generator, save_generator, synthesize_01
from ficekit.synthetic.dataset import render_batch
from ficekit.synthetic.train_e4e import (
    E4E_FILE,
    calibrate_batchnorm,
    default_encoder_kwargs,
    e4e_losses,
    sample_targets,
    train_e4e,
    w_statistics,
)

# A 16-px generator and a minimal encoder: a training step takes a few tens of milliseconds on 2 cores.
TINY_G = {
    "z_dim": 16, "w_dim": 16, "c_dim": 0, "img_resolution": 16, "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2}, "synthesis_kwargs": {"channel_base": 128, "channel_max": 16},
}  # fmt: skip
TINY_E = {"units": [1, 1, 1, 1], "channels": [16, 16, 16, 16]}
FAST = {"batch_size": 4, "progress": False, "encoder_kwargs": TINY_E, "eval_samples": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def generator_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random tiny generator with a realistic w_avg, saved in FICE's format."""
    path = tmp_path_factory.mktemp("gen") / "generator.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(**TINY_G).eval()
        with torch.no_grad():
            G.mapping.w_avg.copy_(G.mapping(torch.randn(1000, G.z_dim), skip_w_avg_update=True)[:, 0].mean(0))
    save_generator(G, path)
    return path


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=False)["state_dict"]


def test_writes_a_loadable_encoder_and_a_report(tmp_path: Path, generator_path: Path) -> None:
    (tmp_path / "other.txt").write_text("keep")
    report = train_e4e(tmp_path, generator_path, steps=2, **FAST)
    assert report.role == "encoder" and report.spec.file == E4E_FILE and report.spec.format == "e4e"
    assert report.steps == 2 and report.seconds > 0
    expected = {"gen_w_mse", "gen_w_nmse", "gen_image_mse", "real_image_mse", "real_image_mse_mean_w",
                "loss_start", "loss_end", "steps_per_s"}  # fmt: skip
    assert expected <= set(report.metrics)
    assert all(math.isfinite(v) for v in report.metrics.values())
    assert report.config["encoder_kwargs"]["units"] == TINY_E["units"]
    # Only e4e.pt was added; no temporary file is left behind; the other file is untouched.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([E4E_FILE, "other.txt"])
    assert (tmp_path / "other.txt").read_text() == "keep"

    encoder = load_model("encoder", report.spec, tmp_path)
    assert isinstance(encoder, Encoder4Editing) and not encoder.training
    G = load_generator(generator_path)
    assert (encoder.num_ws, encoder.w_dim, encoder.input_size) == (G.num_ws, G.w_dim, 32)
    # e4e's start point is the generator's mean w, in every row.
    assert torch.equal(encoder.latent_avg[0], G.mapping.w_avg.expand(G.num_ws, -1))
    assert encoder(torch.rand(2, 3, 16, 16)).shape == (2, G.num_ws, G.w_dim)


def test_default_encoder_follows_the_generator(generator_path: Path) -> None:
    kwargs = default_encoder_kwargs(load_generator(generator_path))
    assert kwargs == {"units": [1, 1, 2, 1], "channels": [16, 32, 64, 128], "gan_size": 16, "w_dim": 16,
                      "input_size": 32}  # fmt: skip


def test_time_budget_ends_training(tmp_path: Path, generator_path: Path) -> None:
    report = train_e4e(tmp_path, generator_path, steps=500, time_budget_s=0.5, **FAST)
    assert 1 <= report.steps < 500
    # The budget is checked before each step, so the loop ends at most one step late; slack for a loaded machine.
    assert report.seconds < 0.5 + 10.0


def test_training_lowers_the_loss_and_inverts_renders(tmp_path: Path, generator_path: Path) -> None:
    report = train_e4e(tmp_path, generator_path, steps=30, seed=1, **FAST)
    m = report.metrics
    assert m["loss_end"] < 0.9 * m["loss_start"], m
    # Untrained, G(E(x)) is about as far from held-out renders as G(w_avg) (measured: 0.260 vs 0.267);
    # after 30 steps it is several times closer (measured: 0.05-0.1 across seeds).
    assert m["real_image_mse"] < 0.5 * m["real_image_mse_mean_w"], m


def test_losses_fall_on_a_fixed_batch(generator_path: Path) -> None:
    G = load_generator(generator_path)
    w_avg, w_var = w_statistics(G)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = Encoder4Editing(**{**default_encoder_kwargs(G), **TINY_E}).train()
    with torch.no_grad():
        encoder.latent_avg.copy_(w_avg.view(1, 1, -1).expand_as(encoder.latent_avg))
    ws = sample_targets(G, 4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = torch.cat([synthesize_01(G, ws), render_batch([1, 2], 16).images])
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        terms = e4e_losses(encoder, G, images, ws, w_var)
        loss = terms["w"] + 10 * terms["image"] + 0.01 * terms["delta"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    first, last = history[0], history[-1]  # measured: w 0.87 -> 0.43, image 0.14 -> 0.021
    assert last["w"] < 0.75 * first["w"], (first, last)
    assert last["image"] < 0.4 * first["image"], (first, last)


def test_same_seed_same_weights(tmp_path: Path, generator_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        report = train_e4e(tmp_path / name, generator_path, steps=3, seed=seed, **FAST)
        runs[name] = (_state(tmp_path / name / E4E_FILE), report.metrics["loss_end"])
    (a, loss_a), (b, loss_b), (c, _) = runs["a"], runs["b"], runs["c"]
    assert loss_a == loss_b
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_sample_targets_mixing_and_noise(generator_path: Path) -> None:
    G = load_generator(generator_path)
    plain = sample_targets(G, 64, torch.Generator().manual_seed(0), mixing_prob=0.0)
    assert torch.equal(plain, plain[:, :1].expand_as(plain))  # W: every row the same
    mixed = sample_targets(G, 64, torch.Generator().manual_seed(0), mixing_prob=1.0)
    differs = (mixed != mixed[:, :1]).any(-1)  # [n, num_ws]: rows taken from the second z
    assert not differs[:, 0].any() and differs[:, -1].all()  # the cutoff is in 1..num_ws-1
    assert (differs.int().diff(dim=1) >= 0).all()  # mixing takes a suffix of the rows
    noisy = sample_targets(G, 64, torch.Generator().manual_seed(0), mixing_prob=0.0, row_noise=0.1, w_std=2.0)
    assert 0.1 < float((noisy - plain).std()) < 0.3  # std 0.1 * 2.0 around the same mapped w


def test_rejects_an_encoder_for_another_generator(tmp_path: Path, generator_path: Path) -> None:
    with pytest.raises(ValueError, match="generator takes"):
        train_e4e(tmp_path, generator_path, steps=1, **{**FAST, "encoder_kwargs": {**TINY_E, "w_dim": 32}})
    with pytest.raises(ValueError, match="real_fraction"):
        train_e4e(tmp_path, generator_path, steps=1, real_fraction=1.5, **FAST)
    assert not (tmp_path / E4E_FILE).exists()


def test_init_from_needs_the_same_architecture(tmp_path: Path, generator_path: Path) -> None:
    """init_from continues another encoder's weights; an encoder of another shape is refused by name."""
    from ficekit.encoder import Encoder4Editing, save_e4e
    from ficekit.generator import load_generator

    G = load_generator(generator_path)
    other = Encoder4Editing(gan_size=G.img_resolution, units=[1, 1, 1, 1], channels=[16, 16, 16, 32], w_dim=G.w_dim,
                            input_size=32)  # fmt: skip
    save_e4e(other, tmp_path / "other.pt", extra={"training": {"trainer": "someone"}})
    with pytest.raises(ValueError, match="init_from"):
        train_e4e(tmp_path / "out", generator_path, steps=1, batch_size=2, progress=False, init_from=tmp_path / "other.pt",
                  encoder_kwargs={"units": [1, 1, 1, 1], "channels": [16, 16, 16, 16]})  # fmt: skip


def test_calibrate_batchnorm_averages_the_batches_statistics() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1, bias=False), torch.nn.BatchNorm2d(1)).eval()
    torch.nn.init.ones_(net[0].weight)
    batches = [torch.full((4, 1, 2, 2), 1.0), torch.full((4, 1, 2, 2), 3.0)]
    batches[1][0] = 5.0  # second batch: one image of 5s among 3s -> mean 3.5, unbiased variance 0.8
    assert calibrate_batchnorm(net, batches) == 8
    bn = net[1]
    assert bn.running_mean.item() == pytest.approx((1.0 + 3.5) / 2)  # the plain average, not a moving one
    assert bn.running_var.item() == pytest.approx((0.0 + 0.8) / 2)
    assert bn.momentum == 0.1 and not net.training  # left as it was
    with pytest.raises(ValueError, match="no images"):
        calibrate_batchnorm(net, [])


def test_training_calibrates_batchnorm_on_photos(tmp_path: Path, generator_path: Path) -> None:
    """With bn_calibration the written encoder's BatchNorm statistics are recomputed on renders (and lower
    its photo error after photo-only training: measured 0.061 -> 0.047 at 30 steps); 0 keeps the moving
    averages and leaves every other weight the same."""
    from ficekit.encoder import load_e4e

    photos = {**FAST, "real_fraction": 1.0}
    on = train_e4e(tmp_path / "on", generator_path, steps=2, seed=0, **{**photos, "bn_calibration": 32})
    off = train_e4e(tmp_path / "off", generator_path, steps=2, seed=0, **{**photos, "bn_calibration": 0})
    assert on.config["bn_calibration"] == 32 and off.config["bn_calibration"] == 0
    a, b = load_e4e(tmp_path / "on" / E4E_FILE).state_dict(), load_e4e(tmp_path / "off" / E4E_FILE).state_dict()
    stats = [k for k in a if k.endswith("running_mean")]
    assert stats and any(not torch.allclose(a[k], b[k]) for k in stats)
    assert all(torch.equal(a[k], b[k]) for k in a if "running" not in k and "num_batches" not in k)
    with pytest.raises(ValueError, match="bn_calibration"):
        train_e4e(tmp_path / "bad", generator_path, steps=1, **{**FAST, "bn_calibration": -1})
