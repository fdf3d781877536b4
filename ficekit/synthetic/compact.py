"""Store a trained bundle's float32 weights as float16, halving what the demo bundle costs in git.

The loaders copy state into float32 modules (`load_state_dict` casts), so a compacted file loads into
the same architecture; values change by float16 rounding only (relative 2^-11). A float32 tensor with any
value beyond float16's range (|x| > 65504, e.g. a BatchNorm running_var of a layer whose weights grew) is
kept float32: cast, it would turn into inf and silently switch that channel off in eval mode. Integer
tensors, float64 tensors and everything that is not a tensor (kwargs, training records) are kept as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ficekit.checkpoint_io import atomic_write, load_torch_file

STORAGE_DTYPES = ("float32", "float16")
FLOAT16_MAX = float(torch.finfo(torch.float16).max)


def fits_float16(tensor: torch.Tensor) -> bool:
    """Whether every value of `tensor` is finite and within float16's range, so a cast loses only precision."""
    return bool((tensor.abs() <= FLOAT16_MAX).all())  # False for inf and nan too


def half_precision(obj: Any) -> Any:
    """`obj` with every float32 tensor (in dicts, lists and tuples, at any depth) cast to float16, except
    tensors that do not fit float16 (see fits_float16), which stay float32."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(torch.float16) if obj.dtype == torch.float32 and fits_float16(obj) else obj
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
