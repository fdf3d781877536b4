"""Behaviour of ficekit's StyleGAN2 generator and discriminator beyond the parity fixtures."""

import pytest
import torch

from ficekit.generator import Discriminator, Generator
from ficekit.generator.layers import modulated_conv2d

SMALL = dict(
    z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3,
    mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=512, channel_max=32),
)


@pytest.fixture
def G() -> Generator:
    torch.manual_seed(0)
    G = Generator(**SMALL).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    return G


def test_api_attributes(G):
    assert (G.z_dim, G.w_dim, G.img_resolution, G.img_channels) == (32, 32, 32, 3)
    assert G.num_ws == 2 * 5 - 2  # two per resolution 8..32, one conv + one toRGB at 4
    ws = G.mapping(torch.randn(3, 32))
    assert ws.shape == (3, G.num_ws, 32)
    assert G.synthesis(ws).shape == (3, 3, 32, 32)


def test_noise_modes(G):
    ws = G.mapping(torch.randn(2, 32))
    with torch.no_grad():
        const = [G.synthesis(ws, noise_mode="const") for _ in range(2)]
        rand = [G.synthesis(ws, noise_mode="random") for _ in range(2)]
        none = G.synthesis(ws, noise_mode="none")
    assert torch.equal(const[0], const[1])
    assert not torch.equal(rand[0], rand[1])
    assert not torch.equal(none, const[0])
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fixed")


def test_truncation(G):
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    z = torch.randn(2, 32)
    w = G.mapping(z)
    w_t = G.mapping(z, truncation_psi=0.5)
    torch.testing.assert_close(w_t, G.mapping.w_avg + 0.5 * (w - G.mapping.w_avg))
    w_c = G.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    torch.testing.assert_close(w_c[:, :3], w_t[:, :3])
    torch.testing.assert_close(w_c[:, 3:], w[:, 3:])


def test_gradients_reach_ws(G):
    ws = G.mapping(torch.randn(1, 32)).detach().requires_grad_(True)
    G.synthesis(ws).square().mean().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    assert torch.isfinite(ws.grad).all()


def test_bad_shapes_raise_clear_errors(G):
    with pytest.raises(ValueError, match=r"ws: dimension 1 is 5, expected 8"):
        G.synthesis(torch.zeros(1, 5, 32))
    with pytest.raises(ValueError, match=r"z: dimension 1"):
        G.mapping(torch.zeros(1, 31))
    with pytest.raises(ValueError, match="power of two"):
        Generator(**{**SMALL, "img_resolution": 48})


def test_fused_and_unfused_modconv_agree():
    torch.manual_seed(1)
    x, w, s = torch.randn(3, 8, 9, 9), torch.randn(6, 8, 3, 3), torch.randn(3, 8)
    f = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1]))
    f = f / f.sum()
    for up, padding, flip in [(1, 1, True), (2, 1, False)]:
        a = modulated_conv2d(x, w, s, up=up, padding=padding, resample_filter=f, flip_weight=flip, fused_modconv=True)
        b = modulated_conv2d(x, w, s, up=up, padding=padding, resample_filter=f, flip_weight=flip, fused_modconv=False)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert a.shape == (3, 6, 9 * up, 9 * up)


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
def test_other_architectures_run(architecture):
    G = Generator(**{**SMALL, "synthesis_kwargs": {**SMALL["synthesis_kwargs"], "architecture": architecture}})
    D = Discriminator(c_dim=0, img_resolution=32, img_channels=3, architecture=architecture, channel_base=512,
                      channel_max=32)
    img = G(torch.randn(4, 32))
    assert img.shape == (4, 3, 32, 32)
    assert D(img).shape == (4, 1)


def test_conditional_networks_need_labels():
    G = Generator(**{**SMALL, "c_dim": 4})
    with pytest.raises(ValueError, match="conditional"):
        G.mapping(torch.randn(2, 32))
    assert G.mapping(torch.randn(2, 32), torch.eye(4)[:2]).shape == (2, G.num_ws, 32)
    D = Discriminator(c_dim=4, img_resolution=32, img_channels=3, channel_base=512, channel_max=32)
    assert D(torch.randn(2, 3, 32, 32), torch.eye(4)[:2]).shape == (2, 1)


def test_minibatch_std_needs_divisible_batch():
    D = Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=512, channel_max=32)
    with pytest.raises(ValueError, match="divisible"):
        D(torch.randn(6, 3, 32, 32))  # groups of 4 do not divide 6


def test_training_mode_tracks_w_avg(G):
    G.train()
    before = G.mapping.w_avg.clone()
    G.mapping(torch.randn(8, 32))
    assert not torch.equal(before, G.mapping.w_avg)
    G.eval()
    after = G.mapping.w_avg.clone()
    G.mapping(torch.randn(8, 32))
    assert torch.equal(after, G.mapping.w_avg)
