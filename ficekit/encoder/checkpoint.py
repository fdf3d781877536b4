"""Reading and writing e4e checkpoints in the format of e4e / FICE's released `e4e.pt`.

The format (e4e `training/coach.py`, FICE `misc_scripts/E4e`): a torch.save'd dict

    {'state_dict': pSp state dict — the encoder under 'encoder.', the generator under 'decoder.'
                   (ignored here), FICE also has 'latent_avg' in it,
     'latent_avg': [1, num_ws, w_dim] (FICE) or [num_ws, w_dim] (original e4e),
     'opts':       the training options, vars(argparse.Namespace) — a plain dict; some pSp-family
                   checkpoints hold the Namespace itself}

Files are read with torch's weights-only unpickler; argparse.Namespace is the one extra class
allowed, and it only receives attribute values (no code runs).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ficekit.checkpoint_io import CheckpointError, load_state_dict_strict, load_torch_file, require_keys

from .e4e import IR_SE_UNITS, Encoder4Editing

logger = logging.getLogger(__name__)

WHAT = "e4e encoder checkpoint"
ENCODER_PREFIX = "encoder."
# Key in 'opts' under which save_e4e records the constructor kwargs (absent in e4e/FICE files).
KWARGS_KEY = "ficekit_encoder_kwargs"


def _read(path: str | os.PathLike) -> Any:
    """Weights-only load that also admits argparse.Namespace (the 'opts' of some pSp-family files)."""
    return load_torch_file(path, WHAT, extra_safe_globals=[argparse.Namespace])


def _infer_kwargs(state: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Constructor kwargs of a file written by e4e/FICE (no recorded kwargs): read off the state dict."""
    body = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
    styles = {int(m.group(1)) for k in state if (m := re.match(r"styles\.(\d+)\.", k))}
    depth = {sum(u): n for n, u in IR_SE_UNITS.items()}
    if len(body) not in depth:
        raise CheckpointError(
            f"{WHAT}: {path} has {len(body)} IR-SE units under 'encoder.body.', expected one of "
            f"{sorted(depth)} (IR-SE-{sorted(IR_SE_UNITS)})"
        )
    num_ws = len(styles)
    if num_ws < 2 or num_ws % 2:
        raise CheckpointError(
            f"{WHAT}: {path} has {num_ws} style heads under 'encoder.styles.', expected an even count"
        )
    weight = state.get("styles.0.linear.weight")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise CheckpointError(f"{WHAT}: {path} lacks a 2-D tensor 'encoder.styles.0.linear.weight'")
    return {"gan_size": 2 ** ((num_ws + 2) // 2), "num_layers": depth[len(body)], "w_dim": int(weight.shape[0])}


def load_e4e(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    encoder_kwargs: Mapping[str, Any] | None = None,
) -> Encoder4Editing:
    """Load an e4e / FICE `e4e.pt` (or one written by save_e4e) into a frozen Encoder4Editing.

    The architecture comes from `encoder_kwargs` if given, else from kwargs recorded by save_e4e,
    else from the state dict (IR-SE depth from the unit count, num_ws from the style heads).
    Raises CheckpointError naming the file and the first bad key for a missing, truncated or
    foreign file, a missing key or a shape mismatch. Returns the module in eval mode with
    requires_grad False; its forward stays differentiable w.r.t. the image.
    """
    ckpt = _read(path)
    require_keys(ckpt, ["state_dict", "latent_avg"], path, WHAT)
    full = ckpt["state_dict"]
    if not isinstance(full, Mapping):
        raise CheckpointError(f"{WHAT}: {path}: 'state_dict' is a {type(full).__name__}, expected a dict")
    state: dict[str, Any] = {k[len(ENCODER_PREFIX) :]: v for k, v in full.items() if k.startswith(ENCODER_PREFIX)}
    if not state:
        raise CheckpointError(f"{WHAT}: {path}: 'state_dict' has no '{ENCODER_PREFIX}' entries — not an e4e checkpoint")
    latent_avg = ckpt["latent_avg"]
    if not isinstance(latent_avg, torch.Tensor):
        raise CheckpointError(f"{WHAT}: {path}: 'latent_avg' is a {type(latent_avg).__name__}, expected a tensor")
    # Original e4e stores latent_avg as [num_ws, w_dim]; FICE (and ficekit) as [1, num_ws, w_dim].
    state["latent_avg"] = latent_avg.unsqueeze(0) if latent_avg.ndim == 2 else latent_avg

    if encoder_kwargs is None:
        opts = ckpt.get("opts")
        opts = vars(opts) if isinstance(opts, argparse.Namespace) else opts
        recorded = opts.get(KWARGS_KEY) if isinstance(opts, Mapping) else None
        encoder_kwargs = recorded if isinstance(recorded, Mapping) else _infer_kwargs(state, Path(path))
    try:
        model = Encoder4Editing(**encoder_kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{WHAT}: {path}: cannot build the encoder from kwargs {dict(encoder_kwargs)}: {e}"
        ) from e
    load_state_dict_strict(model, state, path, WHAT)
    logger.info("loaded e4e encoder from %s (%d ws, kwargs %s)", path, model.num_ws, model.init_kwargs)
    return model.to(device).eval().requires_grad_(False)


def save_e4e(model: Encoder4Editing, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> None:
    """Write `model` in the e4e / FICE checkpoint format, with its constructor kwargs in 'opts'.

    `extra` adds top-level entries (e.g. a 'training' record); loaders ignore them.

    The file loads with load_e4e and with FICE's own loader (encoder weights under 'encoder.',
    latent_avg [1, num_ws, w_dim] at the top level and in the state dict, as FICE's pSp saves it).
    """
    own = model.state_dict()
    state = {ENCODER_PREFIX + k: v.detach().cpu() for k, v in own.items() if k != "latent_avg"}
    latent_avg = own["latent_avg"].detach().cpu()
    state["latent_avg"] = latent_avg
    opts = {
        "encoder_type": "Encoder4Editing",
        "stylegan_size": model.gan_size,
        "start_from_latent_avg": True,
        KWARGS_KEY: dict(model.init_kwargs),
    }
    reserved = {"state_dict", "latent_avg", "opts"} & set(extra or {})
    if reserved:
        raise ValueError(f"save_e4e: extra may not replace {sorted(reserved)}")
    torch.save({**dict(extra or {}), "state_dict": state, "latent_avg": latent_avg, "opts": opts}, Path(path))
