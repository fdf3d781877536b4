"""The generator reproduces the NVlabs reference outputs recorded in the shared parity fixtures."""

import numpy as np
import pytest
import torch
from parity import fill_module, load_arrays, load_manifest, require_fixture

from ficekit.generator import Generator, load_discriminator, load_generator, save_generator


def _max_abs(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.abs(a.detach().numpy() - b).max())


@pytest.fixture(scope="module")
def fice_generator_file(tmp_path_factory: pytest.TempPathFactory):
    """The 256-px fixture network, regenerated from its manifest and saved as FICE's generator.pt."""
    manifest = load_manifest("stylegan2.manifest.json")
    G = Generator(**manifest["reference"]["init_kwargs"])
    fill_module(G, manifest["tensors"], manifest["base_seed"])
    path = tmp_path_factory.mktemp("fice") / "generator.pt"
    save_generator(G, path)
    return path, manifest


def test_state_dict_names_match_nvlabs(fice_generator_file):
    path, manifest = fice_generator_file
    G = load_generator(path)
    own = G.state_dict()
    assert sorted(own) == sorted(e["key"] for e in manifest["tensors"])
    for entry in manifest["tensors"]:
        assert list(own[entry["key"]].shape) == entry["shape"], entry["key"]
    for key, value in manifest["constructed_values"].items():
        assert torch.equal(own[key], torch.tensor(value, dtype=torch.float32)), key


def test_fice_checkpoint_matches_reference_outputs(fice_generator_file):
    path, _ = fice_generator_file
    arrays = load_arrays("stylegan2.npz")
    G = load_generator(path)
    assert (G.z_dim, G.w_dim, G.num_ws, G.img_resolution, G.img_channels) == (512, 512, 14, 256, 3)
    z = torch.from_numpy(arrays["z"])
    with torch.no_grad():
        ws = G.mapping(z, None, truncation_psi=1)
        img = G.synthesis(ws, noise_mode="const", force_fp32=True)
        ws_trunc = G.mapping(z, None, truncation_psi=0.7)
        img_trunc = G.synthesis(ws_trunc, noise_mode="const", force_fp32=True)
    assert _max_abs(ws, arrays["ws"]) < 5e-5
    assert _max_abs(ws_trunc, arrays["ws_trunc"]) < 5e-5
    assert _max_abs(img, arrays["img"]) < 2e-4
    assert _max_abs(img_trunc, arrays["img_trunc"]) < 2e-4


@pytest.mark.parametrize("network, ws_key, img_key", [("G_ema", "ws", "img"), ("G", "ws_G", "img_G")])
def test_nvlabs_pickle_matches_reference_outputs(network, ws_key, img_key):
    pkl = require_fixture("stylegan2_tiny.pkl")
    arrays = load_arrays("stylegan2_tiny.npz")
    G = load_generator(pkl, network=None if network == "G_ema" else network)
    assert G.img_resolution == 32 and G.num_ws == 8
    with torch.no_grad():
        ws = G.mapping(torch.from_numpy(arrays["z"]), None)
        img = G.synthesis(ws, noise_mode="const", force_fp32=True)
    assert _max_abs(ws, arrays[ws_key]) < 5e-5
    assert _max_abs(img, arrays[img_key]) < 5e-5


def test_nvlabs_pickle_weights_equal_manifest():
    """Every tensor read from the pickle equals its seeded value (G_ema base seed 0, G base seed 1)."""
    from parity import seeded_state_dict

    pkl = require_fixture("stylegan2_tiny.pkl")
    manifest = load_manifest("stylegan2_tiny.manifest.json")
    for network in ("G_ema", "G"):
        spec = manifest["networks"][network]
        expected = seeded_state_dict(manifest["networks"][network]["tensors"], spec["base_seed"])
        state = load_generator(pkl, network=None if network == "G_ema" else network).state_dict()
        for key, value in expected.items():
            assert torch.equal(state[key], value), (network, key)


def test_discriminator_from_pickle_matches_reference():
    pkl = require_fixture("stylegan2_tiny.pkl")
    arrays = load_arrays("stylegan2_tiny.npz")
    D = load_discriminator(pkl)
    with torch.no_grad():
        logits = D(torch.from_numpy(arrays["img"]), None, force_fp32=True)
    assert logits.shape == (2, 1)
    assert _max_abs(logits, arrays["d_logits"]) < 5e-5


def test_fice_format_round_trip_with_discriminator(tmp_path):
    pkl = require_fixture("stylegan2_tiny.pkl")
    arrays = load_arrays("stylegan2_tiny.npz")
    G, D = load_generator(pkl), load_discriminator(pkl)
    path = save_generator(G, tmp_path / "generator.pt", D=D)
    G2, D2 = load_generator(path), load_discriminator(path)
    with torch.no_grad():
        img = G2.synthesis(G2.mapping(torch.from_numpy(arrays["z"])))
        assert torch.equal(img, G.synthesis(G.mapping(torch.from_numpy(arrays["z"]))))
        assert _max_abs(D2(img), arrays["d_logits"]) < 5e-5
