"""Generator loaders: the three formats, and clear errors for every kind of bad file."""

import argparse
import math
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from parity import require_fixture

from ficekit.checkpoint_io import CheckpointError
from ficekit.generator import Generator, load_generator, save_generator
from stylegan2_ops import setup_filter, upfirdn2d_ref

SMALL = dict(
    z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
    mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16),
)


@pytest.fixture
def fice_file(tmp_path):
    torch.manual_seed(0)
    return save_generator(Generator(**SMALL), tmp_path / "generator.pt")


# ----------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="file not found.*nope.pt"):
        load_generator(tmp_path / "nope.pt")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_generator(tmp_path / "empty.pt")


def test_truncated_fice_file(fice_file, tmp_path):
    data = fice_file.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_generator(bad)


def test_truncated_pickle(tmp_path):
    data = require_fixture("stylegan2_tiny.pkl").read_bytes()
    bad = tmp_path / "truncated.pkl"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated.pkl"):
        load_generator(bad)


def test_foreign_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="neither a torch checkpoint nor a pickle"):
        load_generator(tmp_path / "notes.txt")


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/ficekit-pwned-by-pickle", "w"))


def test_pickle_with_foreign_global_is_refused_not_run(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Exploit()}, protocol=4))
    marker = Path("/tmp/ficekit-pwned-by-pickle")
    marker.unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match=r"refusing to load global (io|builtins)\.open"):
        load_generator(path)
    assert not marker.exists()


def test_torch_file_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"G": _Exploit(), "G_kwargs": {}}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_generator(path)


def test_pickle_without_network(tmp_path):
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(pickle.dumps({"training_set_kwargs": {}}, protocol=4))
    with pytest.raises(CheckpointError, match="no network 'G_ema'"):
        load_generator(path)


def test_pickle_with_wrong_network_class():
    with pytest.raises(CheckpointError, match="is a Discriminator, expected a Generator"):
        load_generator(require_fixture("stylegan2_tiny.pkl"), network="D")


def test_fice_file_missing_key(tmp_path):
    torch.save({"G": {}}, tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="has keys"):
        load_generator(tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match=r"lacks key\(s\) \['G_kwargs'\]"):
        load_generator(tmp_path / "g.pt", format="fice")


def test_fice_file_wrong_shape(fice_file, tmp_path):
    ckpt = torch.load(fice_file, weights_only=True)
    ckpt["G"]["synthesis.b8.conv0.weight"] = torch.zeros(3, 3)
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"'synthesis.b8.conv0.weight' has shape \[3, 3\]"):
        load_generator(tmp_path / "bad.pt")


def test_fice_file_missing_and_unexpected_entries(fice_file, tmp_path):
    ckpt = torch.load(fice_file, weights_only=True)
    del ckpt["G"]["mapping.fc1.bias"]
    ckpt["G"]["mapping.fc9.bias"] = torch.zeros(16)
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"1 missing \(first: 'mapping.fc1.bias'\).*1 unexpected"):
        load_generator(tmp_path / "bad.pt")


def test_fice_file_with_kwargs_of_another_architecture(fice_file, tmp_path):
    ckpt = torch.load(fice_file, weights_only=True)
    ckpt["G_kwargs"]["synthesis_kwargs"]["channel_max"] = 8
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="has shape"):
        load_generator(tmp_path / "bad.pt")
    ckpt["G_kwargs"]["nonsense"] = 1
    torch.save(ckpt, tmp_path / "bad2.pt")
    with pytest.raises(CheckpointError, match="do not fit Generator"):
        load_generator(tmp_path / "bad2.pt")


def test_save_refuses_to_overwrite(fice_file):
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        save_generator(Generator(**SMALL), fice_file)


def test_loaded_generator_is_frozen(fice_file):
    G = load_generator(fice_file)
    assert not G.training
    assert not any(p.requires_grad for p in G.parameters())


# ----------------------------------------------------------------------------- rosinality


def _rosinality_state(size: int, style_dim: int, n_mlp: int, channel_multiplier: int) -> dict:
    """Random weights with exactly the names and shapes of rosinality's Generator.state_dict()."""
    g = torch.Generator().manual_seed(3)

    def rnd(*shape, scale=1.0, offset=0.0):
        return torch.randn(*shape, generator=g) * scale + offset

    channels = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier}
    channels = {k: min(v, 32) for k, v in channels.items()}  # keep the test small: cap at 32 channels
    state = {}
    for i in range(1, n_mlp + 1):
        state[f"style.{i}.weight"] = rnd(style_dim, style_dim, scale=100.0)  # randn / lr_mul
        state[f"style.{i}.bias"] = rnd(style_dim, scale=0.1)
    state["input.input"] = rnd(1, channels[4], 4, 4)

    def styled(prefix, cin, cout):
        state[f"{prefix}.conv.weight"] = rnd(1, cout, cin, 3, 3)
        state[f"{prefix}.conv.modulation.weight"] = rnd(cin, style_dim)
        state[f"{prefix}.conv.modulation.bias"] = rnd(cin, scale=0.1, offset=1.0)
        state[f"{prefix}.noise.weight"] = rnd(1, scale=0.1)
        state[f"{prefix}.activate.bias"] = rnd(cout, scale=0.1)

    def torgb(prefix, cin):
        state[f"{prefix}.conv.weight"] = rnd(1, 3, cin, 1, 1)
        state[f"{prefix}.conv.modulation.weight"] = rnd(cin, style_dim)
        state[f"{prefix}.conv.modulation.bias"] = rnd(cin, scale=0.1, offset=1.0)
        state[f"{prefix}.bias"] = rnd(1, 3, 1, 1, scale=0.1)

    styled("conv1", channels[4], channels[4])
    torgb("to_rgb1", channels[4])
    log_size = int(math.log2(size))
    for i, log_res in enumerate(range(3, log_size + 1)):
        res = 2**log_res
        styled(f"convs.{2 * i}", channels[res // 2], channels[res])
        styled(f"convs.{2 * i + 1}", channels[res], channels[res])
        torgb(f"to_rgbs.{i}", channels[res])
    state["noises.noise_0"] = rnd(1, 1, 4, 4)
    for i, log_res in enumerate(range(3, log_size + 1)):
        res = 2**log_res
        state[f"noises.noise_{2 * i + 1}"] = rnd(1, 1, res, res)
        state[f"noises.noise_{2 * i + 2}"] = rnd(1, 1, res, res)
    return state


def _rosinality_forward(state: dict, z: torch.Tensor, size: int, n_mlp: int) -> torch.Tensor:
    """rosinality's Generator forward, written out from its equations (const noise, no truncation)."""
    lrelu = lambda x: F.leaky_relu(x, 0.2) * math.sqrt(2)  # noqa: E731 (FusedLeakyReLU)
    x = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)
    for i in range(1, n_mlp + 1):  # EqualLinear(lr_mul=0.01, fused_lrelu)
        weight = state[f"style.{i}.weight"]
        x = lrelu(F.linear(x, weight * (0.01 / math.sqrt(weight.shape[1]))) + state[f"style.{i}.bias"] * 0.01)
    w = x
    batch = z.shape[0]
    kernel = setup_filter([1, 3, 3, 1])  # make_kernel: normalised outer product

    def modconv(h, prefix, demodulate, upsample):
        weight = state[f"{prefix}.conv.weight"]
        _, cout, cin, k, _ = weight.shape
        mod_w = state[f"{prefix}.conv.modulation.weight"]
        style = F.linear(w, mod_w / math.sqrt(mod_w.shape[1])) + state[f"{prefix}.conv.modulation.bias"]
        weight = weight / math.sqrt(cin * k * k) * style.view(batch, 1, cin, 1, 1)
        if demodulate:
            weight = weight * torch.rsqrt(weight.square().sum([2, 3, 4]) + 1e-8).view(batch, cout, 1, 1, 1)
        h = h.reshape(1, batch * cin, *h.shape[2:])
        if upsample:  # transposed conv stride 2, then Blur(pad=(1, 1)) with kernel * 4
            weight = weight.transpose(1, 2).reshape(batch * cin, cout, k, k)
            out = F.conv_transpose2d(h, weight, stride=2, groups=batch).view(batch, cout, *[s * 2 + 1 for s in h.shape[2:]])
            return upfirdn2d_ref(out, kernel * 4, padding=[1, 1, 1, 1])
        out = F.conv2d(h, weight.reshape(batch * cout, cin, k, k), padding=k // 2, groups=batch)
        return out.view(batch, cout, *out.shape[2:])

    def styled(h, prefix, noise, upsample=False):
        h = modconv(h, prefix, True, upsample) + state[f"{prefix}.noise.weight"] * noise
        return lrelu(h + state[f"{prefix}.activate.bias"].view(1, -1, 1, 1))

    def torgb(h, prefix, skip):
        out = modconv(h, prefix, False, False) + state[f"{prefix}.bias"]
        if skip is not None:  # Upsample: upfirdn2d(up=2, pad=(2, 1)) with kernel * 4
            out = out + upfirdn2d_ref(skip, kernel * 4, up=2, padding=[2, 1, 2, 1])
        return out

    h = state["input.input"].repeat(batch, 1, 1, 1)
    h = styled(h, "conv1", state["noises.noise_0"])
    img = torgb(h, "to_rgb1", None)
    for i in range(int(math.log2(size)) - 2):
        h = styled(h, f"convs.{2 * i}", state[f"noises.noise_{2 * i + 1}"], upsample=True)
        h = styled(h, f"convs.{2 * i + 1}", state[f"noises.noise_{2 * i + 2}"])
        img = torgb(h, f"to_rgbs.{i}", img)
    return img


def test_rosinality_checkpoint_computes_rosinality_forward(tmp_path):
    size, style_dim, n_mlp = 16, 16, 3
    state = _rosinality_state(size, style_dim, n_mlp, channel_multiplier=2)
    latent_avg = torch.randn(style_dim)
    args = argparse.Namespace(size=size, n_mlp=n_mlp, channel_multiplier=2)  # as rosinality's train.py saves
    torch.save({"g_ema": state, "g": state, "args": args, "latent_avg": latent_avg}, tmp_path / "ros.pt")
    G = load_generator(tmp_path / "ros.pt")
    assert (G.img_resolution, G.num_ws, G.z_dim) == (16, 6, 16)
    assert torch.equal(G.mapping.w_avg, latent_avg)
    z = torch.randn(2, style_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = G.synthesis(G.mapping(z), noise_mode="const")
        ref = _rosinality_forward(state, z, size, n_mlp)
    assert ours.abs().max() > 0.1
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_rosinality_checkpoint_without_latent_avg_estimates_it(tmp_path):
    state = _rosinality_state(8, 8, 2, channel_multiplier=1)
    torch.save({"g_ema": state}, tmp_path / "ros.pt")
    G = load_generator(tmp_path / "ros.pt")
    with torch.no_grad():
        w = G.mapping(torch.randn(4000, 8, generator=torch.Generator().manual_seed(9)))[:, 0].mean(0)
    torch.testing.assert_close(G.mapping.w_avg, w, atol=0.15, rtol=0.1)


def test_rosinality_checkpoint_with_missing_entry(tmp_path):
    state = _rosinality_state(8, 8, 2, channel_multiplier=1)
    del state["convs.1.noise.weight"]
    torch.save({"g_ema": state}, tmp_path / "ros.pt")
    with pytest.raises(CheckpointError, match="convs.1.noise.weight"):
        load_generator(tmp_path / "ros.pt")


@pytest.mark.parametrize("suffix, header", [(".pt", b""), (".pkl", b"")])
def test_random_corrupt_bytes_always_give_checkpoint_errors(tmp_path, suffix, header):
    """Fuzz: pickle-looking garbage never escapes as an IndexError/KeyError/UnicodeDecodeError."""
    import random
    import warnings

    rng = random.Random(0)
    for i in range(200):
        data = bytes([0x80, rng.choice([2, 3, 4, 5])]) + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
        path = tmp_path / f"garbage{i}{suffix}"
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(CheckpointError):
                load_generator(path, format="fice" if suffix == ".pt" else "nvlabs")


# ----------------------------------------------------------------------------- recorded sizes, messages


def test_recorded_sizes_are_checked_against_the_tensors_before_allocating(fice_file, tmp_path):
    """G_kwargs asking for w_dim 300000 would allocate ~360 GB; the shapes are compared on meta tensors first."""
    ckpt = torch.load(fice_file, weights_only=True)
    ckpt["G_kwargs"]["w_dim"] = 300_000
    torch.save(ckpt, tmp_path / "huge.pt")
    with pytest.raises(CheckpointError, match=r"huge\.pt: entry '[\w.]+' has shape \[[\d, ]*\], the model expects "
                                              r"\[[\d, ]*300000"):  # fmt: skip
        load_generator(tmp_path / "huge.pt")


def test_nvlabs_pickle_with_sizes_its_tensors_do_not_have(monkeypatch):
    from ficekit.generator import nvlabs_pickle

    path = require_fixture("stylegan2_tiny.pkl")
    data = nvlabs_pickle.read_network_pickle(path)
    data["G_ema"].state["_init_kwargs"]["w_dim"] = 300_000
    monkeypatch.setattr(nvlabs_pickle, "read_network_pickle", lambda p: data)
    with pytest.raises(CheckpointError, match=r"NVlabs network pickle: .*stylegan2_tiny\.pkl: entry .*300000"):
        load_generator(path)


def test_discriminator_errors_name_the_discriminator(fice_file, tmp_path):
    from ficekit.generator import load_discriminator

    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"^discriminator checkpoint: .*notes.txt is neither"):
        load_discriminator(tmp_path / "notes.txt")
    with pytest.raises(CheckpointError, match=r"^FICE discriminator checkpoint: .* lacks key\(s\) \['D', 'D_kwargs'\]"):
        load_discriminator(fice_file)  # saved without D
    torch.save({"D": _Exploit(), "D_kwargs": {}}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="^discriminator checkpoint: .*evil.pt is not a plain torch checkpoint"):
        load_discriminator(tmp_path / "evil.pt")


def test_weights_only_refusals_are_in_ficekit_words(tmp_path):
    """torch's message carries ANSI colour codes and advice to retry with weights_only=False (which would run
    the file's code); ficekit's names the file and the refused global, on one line, without either."""
    torch.save({"G": argparse.ArgumentParser, "G_kwargs": {}}, tmp_path / "odd.pt")
    torch.save({"G": _Exploit(), "G_kwargs": {}}, tmp_path / "evil.pt")
    for name, refused in (("odd.pt", "argparse.ArgumentParser"), ("evil.pt", ".open")):
        with pytest.raises(CheckpointError) as caught:
            load_generator(tmp_path / name)
        message = str(caught.value).replace(str(tmp_path), "TMP")  # the test's folder name says weights_only
        assert f"TMP/{name}" in message and refused in message and "\n" not in message
        assert "\x1b" not in message and "weights_only" not in message and "trust" not in message
