"""Choosing between the CUDA kernels and the reference path for one call ('auto' | 'cuda' | 'ref')."""

from __future__ import annotations

import torch

IMPLS = ("auto", "cuda", "ref")


def use_cuda(x: torch.Tensor, impl: str, op: str) -> bool:
    """True when this call should run the CUDA kernel of `op`.

    'ref' never does; 'cuda' requires a CUDA tensor and a working build (else raises);
    'auto' does for CUDA tensors when the build works, and otherwise falls back (the build
    module warns once per process with the reason).
    """
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "ref":
        return False
    if not x.is_cuda:
        if impl == "cuda":
            raise ValueError(f"{op}: impl='cuda' needs a CUDA tensor, got one on {x.device}")
        return False
    from . import _build

    if impl == "cuda":
        _build.get_extension(strict=True)
        return True
    return _build.get_extension(strict=False) is not None
