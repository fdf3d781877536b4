"""Reading NVlabs stylegan2-ada network pickles without dnnlib/torch_utils and without running their code.

NVlabs pickles store each network as `torch_utils.persistence._reconstruct_persistent_obj(meta)`,
where `meta` holds the module's source text, class name and `__dict__` state. A restricted
unpickler maps that call (and EasyDict) to plain Python records, refuses every global it does
not know, and loads each embedded tensor storage with torch's weights-only loader. The
records then give ficekit's classes their init kwargs and state dict; `module_src` is never run.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..checkpoint_io import CORRUPT_PICKLE_ERRORS, CheckpointError, describe_refusal, require_file


class _EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict: a plain dict."""


@dataclass
class PersistentRecord:
    """One pickled NVlabs persistent module: its class name and the module's pickled `__dict__`."""

    class_name: str
    state: dict = field(default_factory=dict)

    @property
    def init_kwargs(self) -> dict:
        """The constructor kwargs recorded by persistence (EasyDicts turned into dicts)."""
        return _plain(self.state.get("_init_kwargs", {}))

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args", ()))

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and persistent buffers of this module tree, named as torch's state_dict names them."""
        out: dict[str, torch.Tensor] = {}
        non_persistent = self.state.get("_non_persistent_buffers_set", set())
        for name, value in self.state.get("_parameters", {}).items():
            if value is not None:
                out[prefix + name] = value.detach()
        for name, value in self.state.get("_buffers", {}).items():
            if value is not None and name not in non_persistent:
                out[prefix + name] = value.detach()
        for name, child in self.state.get("_modules", {}).items():
            if child is None:
                continue
            if not isinstance(child, PersistentRecord):
                raise pickle.UnpicklingError(f"submodule {prefix + name} is not an NVlabs persistent module")
            out.update(child.state_dict(prefix + name + "."))
        return out


def _reconstruct_persistent_obj(meta: dict) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or "class_name" not in meta:
        raise pickle.UnpicklingError("unexpected persistent-object record (not a pickled NVlabs class)")
    state = meta.get("state") or {}
    return PersistentRecord(class_name=str(meta["class_name"]), state=dict(state))


def _load_storage_from_bytes(data: bytes) -> Any:
    # The embedded blob is a legacy torch.save of one storage; read it with the weights-only loader.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_scalar() -> Any:
    core = getattr(np, "_core", None) or np.core
    return core.multiarray.scalar


def _plain(value: Any) -> Any:
    """Recursively turn EasyDicts into dicts and numpy scalars into Python numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy", "dtype"): np.dtype,
    ("builtins", "set"): set,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            return _numpy_scalar()
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (not part of an NVlabs network pickle)")


def read_network_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """Unpickle an NVlabs snapshot into a dict whose networks ('G', 'D', 'G_ema') are PersistentRecords."""
    p = require_file(path, "NVlabs network pickle")
    try:
        with open(p, "rb") as f:
            data = _RestrictedUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"NVlabs network pickle: cannot read {p}: {describe_refusal(e)}") from e
    except (RuntimeError, *CORRUPT_PICKLE_ERRORS) as e:
        raise CheckpointError(f"NVlabs network pickle: cannot read {p}: {' '.join(str(e).split())}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"NVlabs network pickle: {p} holds a {type(data).__name__}, expected a snapshot dict")
    return data


def network_record(data: dict[str, Any], key: str, path: str | os.PathLike, class_name: str) -> PersistentRecord:
    """The network `key` of an unpickled snapshot, checked to be of `class_name`."""
    if key not in data:
        raise CheckpointError(
            f"NVlabs network pickle: {path} has no network {key!r}; it holds {sorted(map(str, data))}"
        )
    record = data[key]
    if not isinstance(record, PersistentRecord):
        raise CheckpointError(f"NVlabs network pickle: {path}: {key!r} is not a pickled NVlabs network")
    if record.class_name != class_name:
        raise CheckpointError(
            f"NVlabs network pickle: {path}: {key!r} is a {record.class_name}, expected a {class_name}"
        )
    if record.init_args:
        raise CheckpointError(f"NVlabs network pickle: {path}: {key!r} was built with positional args; unsupported")
    return record
