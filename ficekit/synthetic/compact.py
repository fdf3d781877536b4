"""Store a trained bundle's float32 weights as float16, halving what the demo bundle costs in git.

The loaders copy state into float32 modules (`load_state_dict` casts), so a compacted file loads into
the same architecture; values change by float16 rounding only (relative 2^-11). Integer tensors, float64
tensors and everything that is not a tensor (kwargs, training records) are kept as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ficekit.checkpoint_io import atomic_write, load_torch_file

STORAGE_DTYPES = ("float32", "float16")


def half_precision(obj: Any) -> Any:
    """`obj` with every float32 tensor (in dicts, lists and tuples, at any depth) cast to float16."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(torch.float16) if obj.dtype == torch.float32 else obj
    if isinstance(obj, dict):
        return type(obj)((k, half_precision(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(half_precision(v) for v in obj)
    return obj


def compact_checkpoint(path: str | os.PathLike) -> tuple[int, int]:
    """Rewrite a torch checkpoint file with float16 weights (atomically); returns (bytes before, bytes after)."""
    p = Path(path)
    before = p.stat().st_size
    payload = half_precision(load_torch_file(p, "checkpoint to compact"))
    atomic_write(p, lambda tmp: torch.save(payload, tmp))
    return before, p.stat().st_size
