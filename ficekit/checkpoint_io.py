"""Reading checkpoint files safely: weights-only loads and errors that name the file and the problem."""

from __future__ import annotations

import os
import pickle
import re
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

try:
    from torch.utils._device import _device_constructors  # what torch's own `with torch.device(...)` redirects
except ImportError:  # a torch that moved it: the constructors module __init__ code uses

    def _device_constructors() -> set[Any]:
        return {torch.empty, torch.zeros, torch.ones, torch.full, torch.randn, torch.rand, torch.tensor,
                torch.as_tensor, torch.arange, torch.eye, torch.linspace}  # fmt: skip


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
            f"{what}: {p} is not a plain torch checkpoint of tensors and containers (refused by the weights-only "
            f"loader: {describe_refusal(e)}); ficekit never runs code stored in a checkpoint"
        ) from e
    except RuntimeError as e:
        raise CheckpointError(f"{what}: {p} could not be read as a torch checkpoint ({_plain_text(e)})") from e
    except CORRUPT_PICKLE_ERRORS as e:
        raise CheckpointError(f"{what}: {p} is corrupt or not a torch checkpoint ({type(e).__name__}: {e})") from e


def _plain_text(error: BaseException) -> str:
    """An exception's message on one line, without terminal colour codes."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split())


def describe_refusal(error: BaseException) -> str:
    """What torch's weights-only unpickler refused, in a few words: the global or opcode it met, without
    torch's colour codes and its advice to retry with weights_only=False (which would run the file's code)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it refers to {found.group(1)}, which is neither a tensor nor a plain container"
    found = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    detail = found.group(1) if found else next(
        (line for line in text.splitlines() if line.strip() and "weights_only" not in line.lower()
         and "weights only" not in line.lower() and "torch.load" not in line), ""
    )  # fmt: skip
    detail = " ".join(re.split(r"\. Please\b|\bweights_only\b", detail)[0].split()).rstrip(".")
    return detail or "it holds objects other than tensors and plain containers"


def require_keys(obj: Any, keys: list[str], path: str | os.PathLike, what: str) -> None:
    """Raise CheckpointError unless `obj` is a mapping holding every key in `keys`."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{what}: {path} holds a {type(obj).__name__}, expected a dict with keys {keys}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise CheckpointError(
            f"{what}: {path} lacks key(s) {missing}; it has {sorted(map(str, obj))[:10]} — not the expected format"
        )


def check_state_fits(
    own: Mapping[str, torch.Tensor], state: Mapping[str, Any], path: str | os.PathLike, what: str
) -> None:
    """Raise CheckpointError unless `state` has exactly the keys of `own`, each a tensor of the same shape;
    the error names the first missing/unexpected key or the first mismatching key with both shapes."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what}: {path}: the weights are a {type(state).__name__}, expected a dict of tensors")
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


def load_state_dict_strict(
    module: torch.nn.Module, state: Mapping[str, Any], path: str | os.PathLike, what: str
) -> None:
    """Copy `state` into `module` requiring identical keys and shapes and finite float values; the error
    names the first bad key (a non-finite value, e.g. a BatchNorm statistic that overflowed float16, would
    otherwise silently zero a channel or turn every output into nan)."""
    own = module.state_dict()
    check_state_fits(own, state, path, what)
    for key in own:
        value = state[key]
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f"{what}: {path}: entry {key!r} holds {bad} non-finite value(s) (inf/nan) of {value.numel()} — "
                f"the file is corrupt (a diverged run, or a {value.dtype} overflow)"
            )
    module.load_state_dict(dict(state), strict=True)


class _ShapesOnly(TorchFunctionMode):
    """Inside it, new tensors live on the meta device (a shape, no storage) and moving one to a device keeps
    it there: a module built inside costs nothing however large its recorded sizes ask it to be."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if func in _device_constructors() and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        elif func in (torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda) and args and getattr(args[0], "is_meta", 0):
            dtype = kwargs.get("dtype") or next((a for a in args[1:] if isinstance(a, torch.dtype)), None)
            return args[0] if dtype is None else args[0].to(dtype=dtype)
        return func(*args, **kwargs)


def build_checked(
    cls: Callable[..., torch.nn.Module], kwargs: Any, state: Mapping[str, Any], path: str | os.PathLike, what: str
) -> torch.nn.Module:
    """`cls(**kwargs)` filled with `state`, after checking on shapes alone (meta tensors, no memory) that the
    recorded architecture has exactly the file's keys and shapes: sizes recorded in a file that do not match
    its tensors (say w_dim 300000) are a CheckpointError naming the key, not an attempt to allocate them."""
    kwargs = _init_kwargs(kwargs, path, what)
    check_state_fits(state_shapes(cls, kwargs, path, what), state, path, what)
    module = cls(**kwargs)
    load_state_dict_strict(module, state, path, what)
    return module


def _init_kwargs(kwargs: Any, path: str | os.PathLike, what: str) -> dict[str, Any]:
    if not isinstance(kwargs, Mapping):
        raise CheckpointError(f"{what}: {path}: init kwargs are a {type(kwargs).__name__}, expected a dict")
    return {k: v for k, v in kwargs.items() if k != "class_name"}


def state_shapes(
    cls: Callable[..., torch.nn.Module], kwargs: Any, path: str | os.PathLike, what: str
) -> dict[str, torch.Tensor]:
    """The state dict `cls(**kwargs)` would have, as meta tensors (shapes without storage, so nothing is
    allocated); CheckpointError naming the file when the kwargs do not build a `cls`."""
    kwargs = _init_kwargs(kwargs, path, what)
    try:
        with _ShapesOnly():
            return cls(**kwargs).state_dict()
    except (TypeError, ValueError, RuntimeError, NotImplementedError, OverflowError) as e:
        name = getattr(cls, "__name__", str(cls))
        raise CheckpointError(f"{what}: {path}: init kwargs {kwargs} do not fit {name}: {_plain_text(e)}") from e


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
