"""e4e encoder: FICE parity (e4e_fice fixture), the e4e.pt reader/writer, its errors, gradients."""

from __future__ import annotations

import argparse
import logging
import pickle

import numpy as np
import pytest
import torch

from ficekit.checkpoint_io import CheckpointError
from ficekit.encoder import Encoder4Editing, load_e4e, save_e4e
from tests.parity import fill_module, load_arrays, load_manifest

log = logging.getLogger(__name__)

MANIFEST = "e4e_fice.manifest.json"
ARRAYS = "e4e_fice.npz"
# A few-channel variant: cheap enough to build and run many times on 2 CPU cores.
SMALL = {"gan_size": 32, "units": (1, 1, 2, 1), "channels": (16, 16, 32, 32), "w_dim": 32, "input_size": 32}


def _fice_kwargs(manifest: dict) -> dict:
    ref = manifest["reference"]["init_kwargs"]
    return {"gan_size": ref["gan_size"], "num_layers": ref["num_layers"]}


def _save_like_fice(encoder_state: dict[str, torch.Tensor], latent_avg: torch.Tensor, path) -> None:
    """Write a checkpoint laid out like FICE's released e4e.pt (pSp state dict, opts = vars(Namespace))."""
    state = {"encoder." + k: v for k, v in encoder_state.items() if k != "latent_avg"}
    state["decoder.synthesis.b4.const"] = torch.zeros(512, 4, 4)  # generator weights sit beside the encoder
    state["latent_avg"] = latent_avg
    opts = {"encoder_type": "Encoder4Editing", "stylegan_size": 256, "start_from_latent_avg": True, "lr": 1e-4}
    torch.save({"state_dict": state, "opts": opts, "latent_avg": latent_avg}, path)


@pytest.fixture(scope="module")
def fice_encoder(tmp_path_factory: pytest.TempPathFactory) -> Encoder4Editing:
    """The seeded FICE encoder, written as a FICE-format e4e.pt and read back with load_e4e."""
    manifest = load_manifest(MANIFEST)
    model = Encoder4Editing(**_fice_kwargs(manifest))
    fill_module(model, manifest["tensors"], manifest["base_seed"])
    path = tmp_path_factory.mktemp("e4e") / "e4e.pt"
    state = model.state_dict()
    _save_like_fice(state, state["latent_avg"].clone(), path)
    del model, state
    loaded = load_e4e(path)
    path.unlink()  # about 0.8 GB
    return loaded


@pytest.fixture
def small() -> Encoder4Editing:
    torch.manual_seed(0)
    model = Encoder4Editing(**SMALL).eval()
    with torch.no_grad():
        model.latent_avg.normal_()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


# ----------------------------------------------------------------------------
# Parity with FICE's E4e


def test_state_dict_keys_match_fice() -> None:
    manifest = load_manifest(MANIFEST)
    with torch.device("meta"):
        model = Encoder4Editing(**_fice_kwargs(manifest))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {e["key"]: e["shape"] for e in manifest["tensors"]}
    assert len(theirs) == 566
    assert ours == theirs
    assert model.num_ws == 14


@pytest.mark.parametrize(("image", "expected"), [("image_01", "w_01"), ("image_02", "w_02")])
def test_fice_parity(fice_encoder: Encoder4Editing, image: str, expected: str) -> None:
    arrays = load_arrays(ARRAYS)
    with torch.no_grad():
        w = fice_encoder(torch.from_numpy(arrays[image]))
    ref = arrays[expected]
    diff = float(np.abs(w.numpy() - ref).max())
    log.info("e4e parity %s -> %s: max abs diff %.3g (range %.2f..%.2f)", image, expected, diff, ref.min(), ref.max())
    assert w.shape == ref.shape
    assert diff < 2e-4


def test_loaded_module_is_frozen_and_differentiable(small: Encoder4Editing, tmp_path) -> None:
    save_e4e(small, tmp_path / "e4e.pt")
    model = load_e4e(tmp_path / "e4e.pt")
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    image = torch.rand(2, 3, 48, 48, requires_grad=True)  # 48 != 32: the area resize is on the path too
    model(image).square().sum().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all()
    assert image.grad[0].abs().sum() > 0 and image.grad[1].abs().sum() > 0


# ----------------------------------------------------------------------------
# Writer / reader round trips


def test_save_load_roundtrip_small(small: Encoder4Editing, tmp_path) -> None:
    path = tmp_path / "small.pt"
    save_e4e(small, path)
    loaded = load_e4e(path)
    assert loaded.init_kwargs == small.init_kwargs
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(image), small(image))
    raw = torch.load(path, weights_only=True)
    assert raw["latent_avg"].shape == (1, small.num_ws, small.w_dim)
    assert all(k.startswith("encoder.") for k in raw["state_dict"] if k != "latent_avg")


def test_original_e4e_layout_loads(small: Encoder4Editing, tmp_path) -> None:
    """Original e4e files: latent_avg [num_ws, w_dim]; some pSp-family files keep opts as a Namespace."""
    path = tmp_path / "e4e_orig.pt"
    state = {"encoder." + k: v for k, v in small.state_dict().items() if k != "latent_avg"}
    opts = argparse.Namespace(stylegan_size=32, ficekit_encoder_kwargs=dict(small.init_kwargs))
    torch.save({"state_dict": state, "opts": opts, "latent_avg": small.latent_avg[0].clone()}, path)
    loaded = load_e4e(path)
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(image), small(image))


def test_progressive_deltas(small: Encoder4Editing) -> None:
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        full = small(image)
        w0_only = small(image, num_deltas=0) - small.latent_avg
        partial = small(image, num_deltas=4)
    assert torch.allclose(w0_only, w0_only[:, :1].expand_as(w0_only))
    assert torch.equal(partial[:, :5], full[:, :5])
    assert torch.allclose(partial[:, 5:] - small.latent_avg[:, 5:], w0_only[:, 5:])
    assert not torch.allclose(full[:, 5:], partial[:, 5:])


def test_bad_input_shape(small: Encoder4Editing) -> None:
    with pytest.raises(ValueError, match="image_01"):
        small(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="image_01"):
        small(torch.rand(1, 4, 32, 32))


# ----------------------------------------------------------------------------
# Clear errors


def test_missing_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found.*nope.pt"):
        load_e4e(tmp_path / "nope.pt")


def test_truncated_file(small: Encoder4Editing, tmp_path) -> None:
    path = tmp_path / "cut.pt"
    save_e4e(small, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_e4e(path)


def test_foreign_content(tmp_path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(CheckpointError, match=r"other.pt.*state_dict"):
        load_e4e(other)
    no_encoder = tmp_path / "gan.pt"
    torch.save({"state_dict": {"decoder.w": torch.zeros(1)}, "latent_avg": torch.zeros(1, 14, 512)}, no_encoder)
    with pytest.raises(CheckpointError, match=r"gan.pt.*'encoder\.'"):
        load_e4e(no_encoder)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="notes.pt"):
        load_e4e(text)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_not_run(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    marker = tmp_path / "ran"
    torch.save({"state_dict": {}, "latent_avg": torch.zeros(1), "opts": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_e4e(path)
    assert not marker.exists()
    with open(path, "wb") as f:
        pickle.dump({"opts": _Payload(str(marker))}, f, protocol=2)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_e4e(path)
    assert not marker.exists()


def test_missing_key(small: Encoder4Editing, tmp_path) -> None:
    path = tmp_path / "missing.pt"
    save_e4e(small, path)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["state_dict"]["encoder.styles.3.linear.bias"]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"missing.pt.*styles\.3\.linear\.bias"):
        load_e4e(path)
    del ckpt["latent_avg"]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"missing.pt.*latent_avg"):
        load_e4e(path)


def test_wrong_shape(small: Encoder4Editing, tmp_path) -> None:
    path = tmp_path / "shape.pt"
    save_e4e(small, path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["encoder.latlayer1.weight"] = torch.zeros(32, 16, 1, 1)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"shape.pt.*latlayer1\.weight.*\[32, 16, 1, 1\]"):
        load_e4e(path)


def test_non_finite_batchnorm_statistic_is_refused(small: Encoder4Editing, tmp_path) -> None:
    """A float16-overflowed running_var (inf) would silently zero its channel in eval mode: refuse the file."""
    path = tmp_path / "overflow.pt"
    save_e4e(small, path)
    ckpt = torch.load(path, weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.endswith("running_var"))
    ckpt["state_dict"][key] = ckpt["state_dict"][key].half().index_fill(0, torch.tensor([0, 2]), float("inf"))
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=rf"overflow.pt.*{key.removeprefix('encoder.').replace('.', '[.]')}.*2 non-finite"):
        load_e4e(path)


def test_unknown_depth_is_reported(tmp_path) -> None:
    """A file without recorded kwargs whose body matches no IR-SE depth gets a clear error, not a crash."""
    path = tmp_path / "odd.pt"
    state = {f"encoder.body.{i}.res_layer.1.weight": torch.zeros(1) for i in range(7)}
    state["encoder.styles.0.linear.weight"] = torch.zeros(512, 512)
    torch.save({"state_dict": state, "latent_avg": torch.zeros(1, 2, 512), "opts": {}}, path)
    with pytest.raises(CheckpointError, match=r"odd.pt has 7 IR-SE units"):
        load_e4e(path)
