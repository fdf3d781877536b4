"""Loading and saving generators: FICE's generator.pt, NVlabs .pkl snapshots, rosinality .pt checkpoints.

Every path ends in ficekit's own Generator/Discriminator, built from the recorded init kwargs and
filled with a strict, shape-checked state dict. No loader executes code stored in a checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..checkpoint_io import (
    CheckpointError,
    atomic_write,
    build_checked,
    check_state_fits,
    load_state_dict_strict,
    load_torch_file,
    require_file,
    require_keys,
    state_shapes,
)
from . import nvlabs_pickle, rosinality
from .discriminator import Discriminator
from .synthesis import Generator

log = logging.getLogger(__name__)

FORMATS = ("auto", "fice", "nvlabs", "rosinality")


def _sniff_format(path: Path, what: str) -> str:
    """'nvlabs' for a plain pickle, 'torch' for a torch checkpoint (told apart later by its keys)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        return "torch"
    if head[:1] == b"\x80":
        return "nvlabs"
    raise CheckpointError(f"{what}: {path} is neither a torch checkpoint nor a pickle")


def _ready(module: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    return module.eval().requires_grad_(False).to(device)


def _load_torch_checkpoint(path: Path, what: str) -> dict:
    # rosinality checkpoints carry their argparse options; allow exactly that class besides tensors.
    obj = load_torch_file(path, what, extra_safe_globals=[argparse.Namespace])
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what}: {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def _generator_from_rosinality(ckpt: dict, path: Path, key: str) -> Generator:
    state = ckpt[key]
    what = "rosinality checkpoint"
    try:
        kwargs = rosinality.infer_generator_kwargs(state)
        converted = rosinality.convert_state_dict(state, kwargs)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{what}: {path}: entry {e} missing or malformed") from e
    expected = state_shapes(Generator, kwargs, path, what)
    constructed = {k: v for k, v in expected.items() if k.endswith("resample_filter") or k == "mapping.w_avg"}
    check_state_fits(expected, {**constructed, **converted}, path, what)  # before allocating anything
    G = Generator(**kwargs)
    own = G.state_dict()
    for name, value in own.items():  # resample filters are constructed, not stored by rosinality
        if name.endswith("resample_filter"):
            converted[name] = value
    if "latent_avg" in ckpt and isinstance(ckpt["latent_avg"], torch.Tensor):
        converted["mapping.w_avg"] = ckpt["latent_avg"].reshape(-1)
    else:
        converted["mapping.w_avg"] = own["mapping.w_avg"]
    load_state_dict_strict(G, converted, path, what)
    if "latent_avg" not in ckpt:
        with torch.no_grad():  # truncation needs a mean w; estimate it as NVlabs' tracked average would
            z = torch.randn([10000, G.z_dim], generator=torch.Generator().manual_seed(0))
            G.mapping.w_avg.copy_(G.mapping(z, skip_w_avg_update=True)[:, 0].mean(0))
        log.info("rosinality checkpoint %s has no latent_avg; w_avg estimated from 10000 samples", path)
    return G


def load_generator(
    path: str | os.PathLike, device: torch.device | str = "cpu", format: str = "auto", network: str | None = None
) -> Generator:
    """Load a StyleGAN2 generator as ficekit's Generator, in eval mode with gradients off.

    Args:
        path: FICE `generator.pt` ({'G', 'G_kwargs', ...}), an NVlabs snapshot `.pkl` (uses 'G_ema'),
            or a rosinality checkpoint (uses 'g_ema').
        device: where to put the module.
        format: 'auto' (sniffed from the file), 'fice', 'nvlabs' or 'rosinality'.
        network: which network of the file to read (default 'G_ema', 'G' or 'g_ema' by format).
    Raises:
        CheckpointError: the file is missing, truncated, of another format, or does not fit.
    """
    if format not in FORMATS:
        raise ValueError(f"load_generator: format must be one of {FORMATS}, got {format!r}")
    p = require_file(path, "generator checkpoint")
    kind = _sniff_format(p, "generator checkpoint") if format == "auto" else format
    if kind == "nvlabs":
        data = nvlabs_pickle.read_network_pickle(p)
        record = nvlabs_pickle.network_record(data, network or "G_ema", p, "Generator")
        G = build_checked(Generator, record.init_kwargs, record.state_dict(), p, "NVlabs network pickle")
        return _ready(G, device)

    ckpt = _load_torch_checkpoint(p, "generator checkpoint")
    if kind == "torch":
        if "G" in ckpt and "G_kwargs" in ckpt:
            kind = "fice"
        elif "g_ema" in ckpt:
            kind = "rosinality"
        else:
            raise CheckpointError(
                f"generator checkpoint: {p} has keys {sorted(map(str, ckpt))[:10]}; expected FICE's "
                "{'G', 'G_kwargs'} or rosinality's {'g_ema'}"
            )
    if kind == "fice":
        key = network or "G"
        require_keys(ckpt, [key, f"{key}_kwargs"], p, "FICE generator checkpoint")
        G = build_checked(Generator, ckpt[f"{key}_kwargs"], ckpt[key], p, "FICE generator checkpoint")
        return _ready(G, device)
    key = network or "g_ema"
    require_keys(ckpt, [key], p, "rosinality checkpoint")
    return _ready(_generator_from_rosinality(ckpt, p, key), device)


def load_discriminator(path: str | os.PathLike, device: torch.device | str = "cpu") -> Discriminator:
    """Load the discriminator of a FICE-format .pt ('D', 'D_kwargs') or an NVlabs snapshot .pkl ('D')."""
    p = require_file(path, "discriminator checkpoint")
    if _sniff_format(p, "discriminator checkpoint") == "nvlabs":
        record = nvlabs_pickle.network_record(nvlabs_pickle.read_network_pickle(p), "D", p, "Discriminator")
        D = build_checked(Discriminator, record.init_kwargs, record.state_dict(), p, "NVlabs network pickle")
    else:
        ckpt = _load_torch_checkpoint(p, "discriminator checkpoint")
        require_keys(ckpt, ["D", "D_kwargs"], p, "FICE discriminator checkpoint")
        D = build_checked(Discriminator, ckpt["D_kwargs"], ckpt["D"], p, "FICE discriminator checkpoint")
    return _ready(D, device)


def save_generator(
    G: Generator, path: str | os.PathLike, D: Discriminator | None = None, extra: dict | None = None
) -> Path:
    """Write FICE's generator.pt format ({'G', 'G_kwargs'[, 'D', 'D_kwargs']}) atomically.

    Refuses to overwrite an existing file.
    """
    p = Path(path)
    if p.exists():
        raise FileExistsError(f"save_generator: {p} exists; refusing to overwrite it")
    payload: dict[str, Any] = {"G": _cpu_state(G), "G_kwargs": G.init_kwargs}
    if D is not None:
        payload.update(D=_cpu_state(D), D_kwargs=D.init_kwargs)
    if extra:
        payload.update(extra)
    return atomic_write(p, lambda tmp: torch.save(payload, tmp))


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
