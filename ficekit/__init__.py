"""ficekit: text-conditioned garment editing by StyleGAN2 GAN inversion (FICE), packaged.

    from ficekit import FicePipeline
    pipe = FicePipeline.from_bundle("demo")
    result = pipe.edit(photo, "striped cotton shirt", output_type="pil")
    session = pipe.session(photo); session.apply("red t-shirt"); session.apply("add white stripes")

Names are imported on first use, so `import ficekit` stays cheap and loads no model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "FicePipeline": "ficekit.pipeline",
    "EditResult": "ficekit.pipeline",
    "EditSettings": "ficekit.settings",
    "load_bundle": "ficekit.bundle",
    "Bundle": "ficekit.bundle",
    "BundleError": "ficekit.bundle",
    "EditSession": "ficekit.session",
    "Round": "ficekit.session",
    "GarmentState": "ficekit.garment_state",
    "InstructionNotUnderstood": "ficekit.garment_state",
    "StateChange": "ficekit.garment_state",
    "apply_instruction": "ficekit.garment_state",
    "OutOfDomainError": "ficekit.domain",
    "NonFiniteLossError": "ficekit.optimize",
    "register_regularizer": "ficekit.regularizers",
    "LatentRegularizer": "ficekit.regularizers",
    "ImageReadError": "ficekit.imageio",
    "CheckpointError": "ficekit.checkpoint_io",
}

__all__ = [
    "Bundle", "BundleError", "CheckpointError", "EditResult", "EditSession", "EditSettings", "FicePipeline",
    "GarmentState", "ImageReadError", "InstructionNotUnderstood", "LatentRegularizer", "NonFiniteLossError",
    "OutOfDomainError", "Round", "StateChange", "__version__", "apply_instruction", "load_bundle",
    "register_regularizer",
]

if TYPE_CHECKING:
    from .bundle import Bundle, BundleError, load_bundle
    from .checkpoint_io import CheckpointError
    from .domain import OutOfDomainError
    from .garment_state import GarmentState, InstructionNotUnderstood, StateChange, apply_instruction
    from .imageio import ImageReadError
    from .optimize import NonFiniteLossError
    from .pipeline import EditResult, FicePipeline
    from .regularizers import LatentRegularizer, register_regularizer
    from .session import EditSession, Round
    from .settings import EditSettings


def __getattr__(name: str) -> Any:
    """Import a public name from the module that defines it, on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ficekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
