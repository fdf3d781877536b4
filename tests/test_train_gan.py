"""The demo GAN trainer: loss values, R1, EMA, quality proxies, output file, budget, learning and determinism."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ficekit.generator import load_discriminator, load_generator
from ficekit.synthetic.train_gan import (
    TRAINER_ID,
    colour_moment_distance,
    ema_beta,
    estimate_w_avg,
    loss_d,
    loss_g,
    pixel_fd,
    r1_loss,
    r1_penalty,
    train_gan,
)

# Tiny networks: a few thousand parameters, milliseconds per step.
TINY_G = {
    "z_dim": 16,
    "w_dim": 16,
    "mapping_kwargs": {"num_layers": 1},
    "synthesis_kwargs": {"channel_base": 128, "channel_max": 16},
}
TINY_D = {"channel_base": 128, "channel_max": 16}
TINY = {"g_kwargs": TINY_G, "d_kwargs": TINY_D, "progress": False, "n_eval": 32}


pytestmark = pytest.mark.usefixtures("one_thread")


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# ----------------------------------------------------------------------------- losses on known values


def test_losses_are_the_logistic_gan_losses():
    real = torch.tensor([[0.0], [2.0]])
    fake = torch.tensor([[0.0], [-1.0]])
    want_g = (_softplus(-0.0) + _softplus(1.0)) / 2  # -log sigmoid(fake)
    want_d = (_softplus(0.0) + _softplus(-1.0)) / 2 + (_softplus(-0.0) + _softplus(-2.0)) / 2
    assert loss_g(fake).item() == pytest.approx(want_g, rel=1e-6)
    assert loss_d(real, fake).item() == pytest.approx(want_d, rel=1e-6)
    # A perfect D (large real, very negative fake logits) has a near-zero loss; G's loss is then large.
    assert loss_d(torch.full([4, 1], 20.0), torch.full([4, 1], -20.0)).item() < 1e-8
    assert loss_g(torch.full([4, 1], -20.0)).item() == pytest.approx(20.0, rel=1e-6)


class _LinearD(torch.nn.Module):
    """D(x) = sum(a * x) per image, so grad_x D = a and |grad_x D|^2 = |a|^2."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(a.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.a).sum(dim=[1, 2, 3]).unsqueeze(1)


def test_r1_penalty_is_squared_input_gradient_norm():
    a = torch.randn([3, 4, 4], generator=torch.Generator().manual_seed(0))
    D = _LinearD(a)
    x = torch.randn([5, 3, 4, 4])
    penalty, logits = r1_penalty(D, x)
    assert penalty.shape == (5,) and logits.shape == (5, 1)
    torch.testing.assert_close(penalty, a.square().sum().expand(5))

    gamma, interval = 0.5, 16
    loss, penalty = r1_loss(D, x, gamma, interval)
    assert loss.item() == pytest.approx(gamma / 2 * a.square().sum().item() * interval, rel=1e-5)
    # The penalty is differentiable w.r.t. D's weights: d/da [gamma/2 * |a|^2 * I] = gamma * I * a.
    loss.backward()
    torch.testing.assert_close(D.a.grad, gamma * interval * a)


def test_ema_beta_follows_nvlabs_half_life_and_rampup():
    # Without rampup: after ema_kimg thousand images the old weights count half.
    beta = ema_beta(batch_size=32, ema_kimg=10, ema_rampup=None, images_seen=0)
    assert beta ** (10_000 / 32) == pytest.approx(0.5)
    # With rampup the half-life is at most rampup * images seen: 0 images -> G_ema copies G.
    assert ema_beta(32, 10, 0.05, images_seen=0) == 0.0
    assert ema_beta(32, 10, 0.05, images_seen=64_000) == pytest.approx(0.5 ** (32 / 3200))
    assert ema_beta(32, 10, 0.05, images_seen=10**9) == pytest.approx(beta)


def test_quality_proxies_on_known_shifts():
    x = torch.rand([64, 3, 16, 16], generator=torch.Generator().manual_seed(1)) * 0.5
    assert pixel_fd(x, x) == pytest.approx(0.0, abs=1e-6)
    # A constant shift moves only the means: FD = 192 features * shift^2; colour means move by shift per channel.
    assert pixel_fd(x + 0.2, x) == pytest.approx(192 * 0.04, rel=1e-4)
    assert colour_moment_distance(x + 0.2, x) == pytest.approx(math.sqrt(3) * 0.2, rel=1e-4)
    assert colour_moment_distance(x, x) == pytest.approx(0.0, abs=1e-7)


# ----------------------------------------------------------------------------- a tiny run end to end


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("gan")
    report = train_gan(out, resolution=32, steps=10, batch_size=8, pool_size=64, log_every=5, **TINY)
    torch.set_num_threads(threads)
    return out, report


def test_tiny_run_writes_a_loadable_fice_generator(tiny_run):
    out, report = tiny_run
    G = load_generator(out / "generator.pt")
    assert G.img_resolution == 32 and G.z_dim == 16
    with torch.no_grad():
        img = G(torch.randn([3, G.z_dim]))
    assert img.shape == (3, 3, 32, 32) and torch.isfinite(img).all()
    D = load_discriminator(out / "generator.pt")
    assert D(img).shape == (3, 1)

    assert report.role == "generator" and report.spec.file == "generator.pt" and report.spec.format == "fice"
    assert report.steps == 10 and report.seconds > 0
    for key in ("loss_d", "loss_g", "r1", "real_logit", "fake_logit", "pixel_fd8", "colour_moment_dist",
                "pixel_fd8_init", "pixel_fd8_real_floor", "kimg"):
        assert math.isfinite(report.metrics[key]), key
    assert report.metrics["kimg"] == pytest.approx(0.08)
    assert report.config["batch_size"] == 8 and report.config["data"] == "rendered"
    assert report.config["g_kwargs"] == G.init_kwargs
    ckpt = torch.load(out / "generator.pt", map_location="cpu", weights_only=True)
    assert ckpt["training"]["trainer"] == TRAINER_ID and ckpt["training"]["steps"] == 10


def test_saved_w_avg_is_the_mean_of_the_saved_mapping(tiny_run):
    out, _ = tiny_run
    G = load_generator(out / "generator.pt")
    w_avg = G.mapping.w_avg.clone()
    assert w_avg.abs().sum() > 0
    fresh = estimate_w_avg(G, n=20_000, seed=123)  # other latents than the trainer's
    spread = G.mapping(torch.randn([2000, G.z_dim]))[:, 0].std(0)
    assert ((w_avg - fresh).abs() < 0.05 * spread + 1e-6).all()


def test_rerun_replaces_its_own_file_but_never_a_foreign_one(tiny_run, tmp_path):
    out, _ = tiny_run
    before = (out / "generator.pt").stat().st_mtime_ns
    data = torch.rand([16, 3, 32, 32])
    train_gan(out, resolution=32, steps=2, batch_size=8, data=data, **TINY)
    assert (out / "generator.pt").stat().st_mtime_ns != before
    assert load_generator(out / "generator.pt").img_resolution == 32
    assert [p.name for p in out.iterdir()] == ["generator.pt"]  # no temporary file left behind

    foreign = tmp_path / "generator.pt"
    foreign.write_bytes(b"someone else's generator")
    with pytest.raises(FileExistsError, match="not written by"):
        train_gan(tmp_path, resolution=32, steps=2, batch_size=8, data=data, **TINY)
    assert foreign.read_bytes() == b"someone else's generator"


def test_time_budget_ends_training_early(tmp_path):
    data = torch.rand([16, 3, 16, 16])
    report = train_gan(tmp_path, resolution=16, steps=1_000_000, time_budget_s=0.5, batch_size=4, data=data, **TINY)
    assert 1 <= report.steps < 1_000_000
    assert report.seconds < 0.5 + 1.0  # the step running when time ran out finishes
    assert load_generator(tmp_path / "generator.pt").img_resolution == 16


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 6}, "multiple of 4"),
        ({"data": torch.rand([8, 3, 8, 8])}, r"\[N, 3, 16, 16\]"),
        ({"steps": 0}, "steps"),
        ({"time_budget_s": 0}, "seconds"),
        ({"style_mixing_prob": 1.5}, "style_mixing_prob"),
        ({"resolution": 24}, "power of two"),
    ],
)
def test_bad_settings_are_refused_before_training(tmp_path, kwargs, match):
    args = {"resolution": 16, "steps": 2, "batch_size": 4, "data": torch.rand([8, 3, 16, 16]), **TINY} | kwargs
    with pytest.raises(ValueError, match=match):
        train_gan(tmp_path, **args)
    assert not (tmp_path / "generator.pt").exists()


# ----------------------------------------------------------------------------- it learns, repeatably


def test_training_moves_generated_colour_to_the_data(tmp_path):
    target = torch.tensor([0.9, 0.15, 0.2])  # every training image is this flat colour
    data = target.view(1, 3, 1, 1).expand(64, 3, 16, 16).clone()
    report = train_gan(tmp_path, resolution=16, steps=100, batch_size=8, data=data, seed=0, **TINY)
    G = load_generator(tmp_path / "generator.pt")
    with torch.no_grad():
        img = G(torch.randn([64, G.z_dim], generator=torch.Generator().manual_seed(7))).add(1).div(2)
    start = report.metrics["colour_moment_dist_init"]  # untrained G: colour means and stds far from the data's
    end = float((img.mean(dim=[0, 2, 3]) - target).norm())  # mean colour of the trained G
    assert start > 0.5
    assert end < 0.15 and end < 0.3 * start, (start, end)
    assert report.metrics["colour_moment_dist"] < 0.5 * start
    assert report.metrics["real_logit"] > report.metrics["fake_logit"]  # D still tells them apart


def test_same_seed_gives_identical_weights(tmp_path):
    data = torch.rand([32, 3, 16, 16], generator=torch.Generator().manual_seed(3))

    def weights(name: str, seed: int) -> dict[str, torch.Tensor]:
        train_gan(tmp_path / name, resolution=16, steps=3, batch_size=4, data=data, seed=seed, r1_interval=2, **TINY)
        ckpt = torch.load(tmp_path / name / "generator.pt", map_location="cpu", weights_only=True)
        return {**{f"G.{k}": v for k, v in ckpt["G"].items()}, **{f"D.{k}": v for k, v in ckpt["D"].items()}}

    a, b, c = weights("a", 0), weights("b", 0), weights("c", 1)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_training_leaves_the_global_rng_alone(tmp_path):
    data = torch.rand([8, 3, 16, 16])
    torch.manual_seed(11)
    expected = torch.rand(4)
    torch.manual_seed(11)
    train_gan(Path(tmp_path), resolution=16, steps=2, batch_size=4, data=data, **TINY)
    torch.testing.assert_close(torch.rand(4), expected)


# ----------------------------------------------------------------------------- co-trained encoder


def test_reconstruction_term_trains_an_encoder_that_inverts_the_data(tmp_path):
    from ficekit.encoder import load_e4e
    from ficekit.generator import synthesize_01

    data = torch.zeros(32, 3, 16, 16)
    data[:16, 0] = 0.9  # half the images red, half blue: the encoder must tell them apart
    data[16:, 2] = 0.9
    enc = {"units": [1, 1, 1, 1], "channels": [16, 16, 16, 16]}
    report = train_gan(tmp_path, resolution=16, steps=150, batch_size=8, data=data, seed=0, recon_weight=10.0,
                       encoder_kwargs=enc, **TINY)  # fmt: skip
    (companion,) = report.companions
    assert companion.role == "encoder" and companion.spec.file == "e4e.pt"
    E, G = load_e4e(tmp_path / "e4e.pt"), load_generator(tmp_path / "generator.pt")
    with torch.no_grad():
        rec = synthesize_01(G, E(data[[0, 16]]))
    red_ch, blue_ch = rec[:, 0].mean(dim=(1, 2)), rec[:, 2].mean(dim=(1, 2))
    assert red_ch[0] > blue_ch[0] + 0.3 and blue_ch[1] > red_ch[1] + 0.3, (red_ch, blue_ch)
    assert report.metrics["recon_mse"] < 0.05
    assert "recon_l1" in report.metrics and "recon_delta" in report.metrics


def test_plain_gan_writes_no_encoder_and_never_replaces_a_foreign_one(tmp_path):
    data = torch.rand(8, 3, 16, 16)
    report = train_gan(tmp_path / "plain", resolution=16, steps=2, batch_size=4, data=data, **TINY)
    assert report.companions == () and not (tmp_path / "plain" / "e4e.pt").exists()
    (tmp_path / "x").mkdir()
    torch.save({"state_dict": {}}, tmp_path / "x" / "e4e.pt")  # someone else's encoder
    with pytest.raises(FileExistsError, match="e4e.pt"):
        train_gan(tmp_path / "x", resolution=16, steps=2, batch_size=4, data=data, recon_weight=1.0, **TINY)
    with pytest.raises(ValueError, match="recon"):
        train_gan(tmp_path / "y", resolution=16, steps=2, batch_size=4, data=data, recon_weight=-1.0, **TINY)


# ----------------------------------------------------------------------------- resuming


def test_resume_starts_from_the_files_networks(tmp_path):
    """With lr 0, a resumed step leaves G and D exactly as the file had them; the co-trained encoder moves by
    one Adam step (lr 1e-3) from the file's weights, not from a fresh initialisation."""
    from ficekit.encoder import load_e4e

    data = torch.rand(16, 3, 16, 16)
    enc = {"units": [1, 1, 1, 1], "channels": [16, 16, 16, 16]}
    first = train_gan(tmp_path / "a", resolution=16, steps=3, batch_size=4, data=data, recon_weight=1.0,
                      encoder_kwargs=enc, **TINY)  # fmt: skip
    untouched = {k: v for k, v in TINY.items() if k not in ("g_kwargs", "d_kwargs")}
    a, b = tmp_path / "a", tmp_path / "b"
    resumed = train_gan(b, resolution=16, steps=1, batch_size=4, data=data, recon_weight=1.0, encoder_kwargs=enc, lr=0.0,
                        init_from=a / "generator.pt", init_encoder_from=a / "e4e.pt", **untouched)  # fmt: skip
    for load in (load_generator, load_discriminator):
        before, after = load(a / "generator.pt").state_dict(), load(b / "generator.pt").state_dict()
        assert before.keys() == after.keys()
        for key in before:
            torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=key)
    before, after = dict(load_e4e(a / "e4e.pt").named_parameters()), dict(load_e4e(b / "e4e.pt").named_parameters())
    moved = max((after[k] - before[k]).abs().max().item() for k in before)  # BatchNorm statistics aside
    assert 0 < moved < 5e-3
    record = resumed.config["resumed_from"]
    assert record["steps"] == 3 and record["kimg"] == first.metrics["kimg"]
    assert record["file"] == str((a / "generator.pt").resolve()) and record["encoder_file"] == str((a / "e4e.pt").resolve())
    assert resumed.metrics["kimg_total"] == pytest.approx(first.metrics["kimg"] + resumed.metrics["kimg"])


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    from ficekit.checkpoint_io import CheckpointError
    from ficekit.generator import save_generator

    data = torch.rand(8, 3, 16, 16)
    train_gan(tmp_path / "a", resolution=16, steps=1, batch_size=4, data=data, **TINY)
    start = tmp_path / "a" / "generator.pt"
    args = {"resolution": 16, "steps": 1, "batch_size": 4, "data": data, "progress": False, "n_eval": 8}
    with pytest.raises(ValueError, match="architecture"):
        train_gan(tmp_path / "b", init_from=start, **args, g_kwargs=TINY_G)
    with pytest.raises(ValueError, match="16 px"):
        train_gan(tmp_path / "b", init_from=start, **(args | {"resolution": 32, "data": torch.rand(8, 3, 32, 32)}))
    with pytest.raises(ValueError, match="init_encoder_from"):
        train_gan(tmp_path / "b", init_encoder_from=tmp_path / "a" / "e4e.pt", recon_weight=1.0, **args)
    save_generator(load_generator(start), tmp_path / "g_only.pt")  # a generator without its discriminator
    with pytest.raises(CheckpointError, match="D"):
        train_gan(tmp_path / "b", init_from=tmp_path / "g_only.pt", **args)
    with pytest.raises(CheckpointError, match="not found"):
        train_gan(tmp_path / "b", init_from=tmp_path / "missing.pt", **args)


def test_the_world_is_recorded_and_a_resume_from_another_world_is_refused(tmp_path):
    from ficekit.synthetic.train_gan import render_pool

    assert not torch.equal(render_pool(2, 16, progress=False, world="v2"), render_pool(2, 16, progress=False))
    args = {"resolution": 16, "steps": 1, "batch_size": 4, "pool_size": 8}
    report = train_gan(tmp_path / "a", world="v2", **args, **TINY)
    assert report.config["world"] == "v2" and report.config["data"] == "rendered"
    untouched = {k: v for k, v in TINY.items() if k not in ("g_kwargs", "d_kwargs")}
    start = tmp_path / "a" / "generator.pt"
    with pytest.raises(ValueError, match="trained on world v2; this run renders v1"):
        train_gan(tmp_path / "b", init_from=start, **args, **untouched)
    resumed = train_gan(tmp_path / "b", init_from=start, world="v2", **args, **untouched)
    assert resumed.config["resumed_from"]["world"] == "v2"
    with pytest.raises(ValueError, match="world"):
        train_gan(tmp_path / "c", world="v5", **args, **TINY)


def test_checkpoints_are_written_during_training_and_resume(tmp_path, caplog):
    import logging

    from ficekit.synthetic.train_gan import _checkpoint_writer

    data = torch.rand(8, 3, 16, 16)
    with caplog.at_level(logging.INFO, logger="ficekit.synthetic.train_gan"):
        train_gan(tmp_path / "a", resolution=16, steps=3, batch_size=4, data=data, checkpoint_every_s=1e-9, **TINY)
    assert [r.getMessage().split(" (")[0] for r in caplog.records if "checkpoint at" in r.getMessage()] == [
        f"train_gan: checkpoint at step {k}" for k in (1, 2, 3)]
    # A checkpoint file (what a killed run leaves) is resumable and says how far its run got.
    G, D = load_generator(tmp_path / "a" / "generator.pt"), load_discriminator(tmp_path / "a" / "generator.pt")
    _checkpoint_writer(tmp_path / "b", None, "v2", seed=0)(G, D, None, 7, 12.0, 112)
    untouched = {k: v for k, v in TINY.items() if k not in ("g_kwargs", "d_kwargs")}
    resumed = train_gan(tmp_path / "c", resolution=16, steps=1, batch_size=4, pool_size=8, world="v2",
                        init_from=tmp_path / "b" / "generator.pt", **untouched)  # fmt: skip
    record = resumed.config["resumed_from"]
    assert (record["steps"], record["kimg"], record["world"]) == (7, 0.112, "v2")
    with pytest.raises(ValueError, match="checkpoint_every_s"):
        train_gan(tmp_path / "d", resolution=16, steps=1, data=data, checkpoint_every_s=0, **TINY)
