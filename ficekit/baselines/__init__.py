"""Other garment-editing methods run on ficekit's masks, framing and stitching, for comparison with FICE.

inpaint: diffusion inpainting (diffusers; `pip install "ficekit[diffusion]"`). Imported on first use, so
`import ficekit.baselines` works without diffusers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["InpaintBaseline", "InpaintResult", "inpaint_like_ficekit"]


def __getattr__(name: str) -> Any:
    """Lazy exports: the inpaint module loads when one of its names is first used (so `-m` runs it cleanly)."""
    if name in __all__:
        from . import inpaint

        return getattr(inpaint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
