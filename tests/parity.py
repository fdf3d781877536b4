"""Access to the shared parity fixtures and their seeded-weight scheme (ficekit-seeded-v1).

The fixtures live in FICEKIT_PARITY_DIR, by default ../shared/parity beside the repository.
Weights are never shipped: `seeded_state_dict` regenerates them from a manifest's tensor list.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def parity_dir() -> Path:
    """The folder holding the parity fixtures (may not exist in a user's clone)."""
    return Path(os.environ.get("FICEKIT_PARITY_DIR", REPO_ROOT.parent / "shared" / "parity"))


def require_fixture(name: str) -> Path:
    """Path of fixture file `name`, or skip the calling test with the reason it is absent."""
    path = parity_dir() / name
    if not path.is_file():
        pytest.skip(f"parity fixture {path} is absent (set FICEKIT_PARITY_DIR to the shared parity folder)")
    return path


def load_manifest(name: str) -> dict:
    """The JSON manifest `name` (e.g. 'stylegan2.manifest.json')."""
    return json.loads(require_fixture(name).read_text())


def load_arrays(name: str) -> dict[str, np.ndarray]:
    """All arrays of the npz fixture `name`."""
    with np.load(require_fixture(name)) as data:
        return {k: data[k] for k in data.files}


def _rule_value(rule: str, n: np.ndarray, entry: dict) -> np.ndarray:
    shape = entry["shape"]
    if rule == "plain":
        return n
    if rule == "scaled_0.1":
        return 0.1 * n
    if rule == "one_plus_0.1n":
        return 1.0 + 0.1 * n
    if rule == "one_plus_0.1abs":
        return 1.0 + 0.1 * np.abs(n)
    if rule == "fan_in":
        fan_in = int(np.prod(shape[1:]))
        assert fan_in == entry.get("fan_in", fan_in), entry["key"]
        return n / np.sqrt(fan_in)
    if rule == "fan_in_transposed":
        fan_in = int(shape[0] * np.prod(shape[2:]))
        assert fan_in == entry.get("fan_in", fan_in), entry["key"]
        return n / np.sqrt(fan_in)
    if rule == "plain_over_lr":
        return n / entry["lr_mul"]
    if rule == "scaled_0.1_over_lr":
        return (0.1 * n) / entry["lr_mul"]
    raise ValueError(f"unknown seeded-weight rule {rule!r} for {entry['key']}")


def seeded_state_dict(tensors: list[dict], base_seed: int) -> dict[str, torch.Tensor]:
    """Regenerate every non-`constructed` tensor of a manifest's list, exactly as the scheme states."""
    state = {}
    for entry in tensors:
        if entry["rule"] == "constructed":
            continue
        seed = zlib.crc32(entry["key"].encode("utf-8")) + base_seed
        n = np.random.default_rng(seed).standard_normal(tuple(entry["shape"]), dtype=np.float64)
        value = np.asarray(_rule_value(entry["rule"], n, entry), dtype=np.float64).astype(np.float32)
        state[entry["key"]] = torch.from_numpy(value)
    return state


def fill_module(module: torch.nn.Module, tensors: list[dict], base_seed: int) -> None:
    """Load seeded weights into `module`, keeping its constructed buffers; keys must match the manifest."""
    own = module.state_dict()
    manifest_keys = {e["key"] for e in tensors}
    assert set(own) == manifest_keys, (
        f"missing {sorted(manifest_keys - set(own))[:5]}, extra {sorted(set(own) - manifest_keys)[:5]}"
    )
    state = dict(own)
    for key, value in seeded_state_dict(tensors, base_seed).items():
        state[key] = value.to(own[key].dtype).reshape(own[key].shape)
    module.load_state_dict(state, strict=True)
