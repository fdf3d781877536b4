"""Reading detectron2 checkpoints without detectron2 and without running pickled code.

Two formats: model-zoo `.pkl` files (a pickle of `{'model': {name: ndarray}, '__author__': ...}`, read by an
unpickler that only knows numpy-array reconstruction and plain builtin containers) and `.pth`/`.pt` state dicts
(torch.load with weights_only=True).
"""

from __future__ import annotations

import builtins
import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ficekit.checkpoint_io import CORRUPT_PICKLE_ERRORS, CheckpointError, load_torch_file, require_file

WHAT = "DensePose checkpoint"
TORCH_SUFFIXES = (".pth", ".pt")
ZIP_MAGIC = b"PK\x03\x04"

_SAFE_BUILTINS = (
    "dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes", "bytearray",
)  # fmt: skip


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a detectron2 .pkl may name: numpy array/scalar/dtype reconstruction and plain containers."""
    try:  # numpy >= 2 keeps these in numpy._core; pickles written with numpy 1.x name numpy.core.
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): OrderedDict,
        ("_codecs", "encode"): _latin1_encode,  # protocol-2 pickles store bytes as _codecs.encode(str, 'latin1')
    }
    for package in ("numpy.core", "numpy._core"):
        table[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    for name in _SAFE_BUILTINS:
        table[("builtins", name)] = table[("__builtin__", name)] = getattr(builtins, name)
    return table


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """Stand-in for codecs.encode that only turns a str into bytes (all a protocol-2 pickle needs)."""
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise pickle.UnpicklingError("_codecs.encode called with non-string arguments")
    return text.encode(encoding, errors)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals; anything else is refused before it can run."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"{WHAT}: {self._path} names the global {module}.{name}; only numpy arrays and plain containers "
                "are allowed in a detectron2 .pkl (refused, nothing was executed)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{WHAT}: {self._path} uses pickle persistent ids; not a detectron2 model-zoo .pkl")


def read_pkl(path: str | os.PathLike) -> Any:
    """Unpickle a detectron2 model-zoo .pkl with the restricted unpickler (encoding latin1)."""
    p = require_file(path, WHAT)
    with open(p, "rb") as f:
        try:
            return _ArrayUnpickler(f, p).load()
        except CheckpointError:
            raise
        except (EOFError, pickle.UnpicklingError) as e:
            raise CheckpointError(f"{WHAT}: {p} is truncated or not a pickle ({type(e).__name__}: {e})") from e
        except CORRUPT_PICKLE_ERRORS as e:
            raise CheckpointError(f"{WHAT}: {p} is corrupt or not a detectron2 .pkl ({type(e).__name__}: {e})") from e


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == ZIP_MAGIC


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor | Any]:
    """Read a detectron2 checkpoint (.pkl model zoo, or .pth/.pt state dict) into {name: tensor}.

    A 'model' entry is unwrapped; ndarrays become tensors; other values are kept as they are (the caller
    decides whether they matter). Raises CheckpointError for missing, truncated or foreign files.
    """
    p = require_file(path, WHAT)
    if p.suffix.lower() in TORCH_SUFFIXES or (p.suffix.lower() != ".pkl" and _is_zip(p)):
        obj = load_torch_file(p, WHAT)
    else:
        obj = read_pkl(p)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{WHAT}: {p} holds a {type(obj).__name__}, expected a dict of named weights")
    if "blobs" in obj and "model" not in obj:
        raise CheckpointError(
            f"{WHAT}: {p} is a Caffe2/Detectron1 'blobs' pickle (Caffe2 names); expected a detectron2 checkpoint "
            "with a 'model' dict"
        )
    state = obj.get("model", obj)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{WHAT}: {p}: 'model' is a {type(state).__name__}, expected a dict of named weights")
    out: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{WHAT}: {p}: weight name {key!r} is not a string; not a detectron2 checkpoint")
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "fiub":
                raise CheckpointError(f"{WHAT}: {p}: entry {key!r} has dtype {value.dtype}, expected numbers")
            value = torch.from_numpy(np.ascontiguousarray(value))
        out[key] = value
    return out


def save_detectron2_pkl(model: torch.nn.Module, path: str | os.PathLike, author: str) -> None:
    """Write `model`'s weights in the detectron2 model-zoo layout read_pkl reads: a pickle of
    {'model': {name: ndarray}, '__author__': author}."""
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": author}, f)
