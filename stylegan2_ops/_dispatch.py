"""Choosing between the CUDA kernels and the reference path for one call ('auto' | 'cuda' | 'ref').

`default_impl(...)` overrides what 'auto' means inside a `with` block (e.g. to time the reference
path of a whole network against the kernels); explicit 'cuda'/'ref' arguments are unaffected.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

IMPLS = ("auto", "cuda", "ref")
KERNEL_DTYPES = (torch.float16, torch.float32, torch.float64)  # what the CUDA kernels are built for

_auto_means: contextvars.ContextVar[str] = contextvars.ContextVar("stylegan2_ops_auto_means", default="auto")


@contextlib.contextmanager
def default_impl(impl: str) -> Iterator[None]:
    """Within the block, calls with impl='auto' behave as `impl` ('auto', 'cuda' or 'ref')."""
    if impl not in IMPLS:
        raise ValueError(f"default_impl: impl must be one of {IMPLS}, got {impl!r}")
    token = _auto_means.set(impl)
    try:
        yield
    finally:
        _auto_means.reset(token)


def use_cuda(x: torch.Tensor, impl: str, op: str) -> bool:
    """True when this call should run the CUDA kernel of `op`.

    'ref' never does; 'cuda' requires a CUDA tensor and a working build (else raises);
    'auto' does for CUDA tensors of a dtype the kernels take (float16/32/64) when the build works, and
    otherwise falls back (the build module warns once per process with the reason). While torch.compile
    traces, 'auto' means 'ref', also in code that compiles a network itself: the kernels are opaque to the
    compiler (a graph break per call), while the reference path is plain torch that inductor fuses.
    """
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        if torch.compiler.is_compiling() or x.dtype not in KERNEL_DTYPES:
            return False  # bfloat16 (autocast) and compiled graphs take the reference path
        impl = _auto_means.get()
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
