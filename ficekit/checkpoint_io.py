"""Reading checkpoint files safely: weights-only loads and errors that name the file and the problem."""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, of another format, or does not fit the model."""


# What unpicklers raise on corrupt or foreign bytes (beyond UnpicklingError): a broken opcode stream
# surfaces as an empty stack, a missing memo entry, an undecodable string, a bad struct, and so on.
CORRUPT_PICKLE_ERRORS: tuple[type[BaseException], ...] = (
    EOFError,
    IndexError,
    KeyError,
    ValueError,
    TypeError,
    AttributeError,
    OverflowError,
    struct.error,
    MemoryError,  # a corrupt length field asks for an absurd allocation
)


def require_file(path: str | os.PathLike, what: str) -> Path:
    """Return `path` as a Path, or raise CheckpointError if it is not an existing, non-empty file."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{what}: file not found: {p}")
    if not p.is_file():
        raise CheckpointError(f"{what}: not a file: {p}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{what}: file is empty: {p}")
    return p


def load_torch_file(path: str | os.PathLike, what: str, extra_safe_globals: Sequence[Any] = ()) -> Any:
    """torch.load a file with weights_only=True (no pickled code runs); clear errors for bad files.

    `extra_safe_globals` names plain classes (e.g. argparse.Namespace) that the file may hold besides
    tensors and containers; they are allowed for this call only where torch supports that.
    """
    p = require_file(path, what)
    try:
        if extra_safe_globals and hasattr(torch.serialization, "safe_globals"):
            with torch.serialization.safe_globals(list(extra_safe_globals)):
                return torch.load(p, map_location="cpu", weights_only=True)
        if extra_safe_globals:  # torch 2.4 has only the process-wide registry
            torch.serialization.add_safe_globals(list(extra_safe_globals))
        return torch.load(p, map_location="cpu", weights_only=True)
    except (EOFError, OSError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{what}: {p} is truncated or corrupt ({type(e).__name__}: {e})") from e
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{what}: {p} is not a plain torch checkpoint of tensors and containers "
            f"(refused by the weights-only loader: {str(e).splitlines()[0]})"
        ) from e
    except RuntimeError as e:
        raise CheckpointError(f"{what}: {p} could not be read as a torch checkpoint ({e})") from e
    except CORRUPT_PICKLE_ERRORS as e:
        raise CheckpointError(f"{what}: {p} is corrupt or not a torch checkpoint ({type(e).__name__}: {e})") from e


def require_keys(obj: Any, keys: list[str], path: str | os.PathLike, what: str) -> None:
    """Raise CheckpointError unless `obj` is a mapping holding every key in `keys`."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{what}: {path} holds a {type(obj).__name__}, expected a dict with keys {keys}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise CheckpointError(
            f"{what}: {path} lacks key(s) {missing}; it has {sorted(map(str, obj))[:10]} — not the expected format"
        )


def load_state_dict_strict(
    module: torch.nn.Module, state: Mapping[str, Any], path: str | os.PathLike, what: str
) -> None:
    """Copy `state` into `module` requiring identical keys and shapes and finite float values; the error
    names the first bad key (a non-finite value, e.g. a BatchNorm statistic that overflowed float16, would
    otherwise silently zero a channel or turn every output into nan)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]!r})")
        raise CheckpointError(f"{what}: {path} does not fit the model: " + ", ".join(parts))
    for key, ref in own.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{what}: {path}: entry {key!r} is a {type(value).__name__}, expected a tensor")
        if tuple(value.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{what}: {path}: entry {key!r} has shape {list(value.shape)}, the model expects {list(ref.shape)}"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f"{what}: {path}: entry {key!r} holds {bad} non-finite value(s) (inf/nan) of {value.numel()} — "
                f"the file is corrupt (a diverged run, or a {value.dtype} overflow)"
            )
    module.load_state_dict(dict(state), strict=True)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call write(tmp) for a temporary file beside `path`, then rename it onto `path`, so a reader never sees a
    half-written file and an interrupted write leaves nothing behind. Creates the parent folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p
