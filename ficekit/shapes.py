"""Shape checks at module boundaries: one helper that names the argument and both shapes."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_shape(name: str, tensor: torch.Tensor, expected: Sequence[int | None]) -> None:
    """Raise ValueError unless `tensor` has `expected` shape (None = any size in that dimension)."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
    got = tuple(tensor.shape)
    want = "[" + ", ".join("*" if s is None else str(s) for s in expected) + "]"
    if len(got) != len(expected):
        raise ValueError(f"{name}: expected {len(expected)} dimensions {want}, got shape {list(got)}")
    for dim, (g, e) in enumerate(zip(got, expected, strict=True)):
        if e is not None and g != e:
            raise ValueError(f"{name}: dimension {dim} is {g}, expected {e} (expected {want}, got {list(got)})")
