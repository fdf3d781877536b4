"""The editing methods a dataset evaluation compares, and the contract each one keeps.

A method is named on the command line (--methods fice,inpaint,my.module:factory) and built once per run by
a factory: factory(MethodContext) -> callable(image [3,H,W], text, seed) -> (result [3,H,W] in [0,1] at the
photo's size, blend mask [1,H,W] of the pixels it repainted). The registry METHODS holds ficekit's own edit
('fice') and the diffusion inpainting baseline on ficekit's auto-mask ('inpaint'); module:factory loads any
other. The MethodContext shares one FicePipeline between the methods and the scorer, so a bundle loads once.
checked_output holds every method to the contract before its result is written or scored.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from ficekit.eval.jobs import EvalError, Job

if TYPE_CHECKING:
    from ficekit.pipeline import FicePipeline

__all__ = [
    "EditMethod",
    "MethodContext",
    "MethodFactory",
    "METHODS",
    "fice_method",
    "inpaint_method",
    "resolve_methods",
    "build_method",
    "checked_output",
]

INPAINT_INSTALL = 'pip install "ficekit[diffusion]"'


class EditMethod(Protocol):
    """An editing method: result [3,H,W] in [0,1] at the photo's size and the blend mask [1,H,W] it repainted."""

    def __call__(self, image: torch.Tensor, text: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class MethodContext:
    """What a method factory may use: the run's bundle, device and settings, and one shared FicePipeline."""

    bundle: str | os.PathLike  # the ficekit bundle: 'demo', 'fice' or a folder
    device: torch.device  # where models run
    iterations: int | None = None  # ficekit optimisation steps; None = the bundle's default
    inpaint_model: str | None = None  # diffusers model id or folder of the inpainting baseline
    _pipeline: Any = field(default=None, repr=False)

    def pipeline(self) -> FicePipeline:
        """The bundle's FicePipeline, loaded on first use and shared by every method and the scorer."""
        if self._pipeline is None:
            from ficekit.pipeline import FicePipeline

            self._pipeline = FicePipeline.from_bundle(self.bundle, self.device)
        return self._pipeline


MethodFactory = Callable[[MethodContext], EditMethod]


class FiceMethod:
    """ficekit's edit (FicePipeline.edit, one photo at a time); the mask is the blend mask it stitched with."""

    def __init__(self, pipe: FicePipeline, iterations: int | None) -> None:
        self.pipe = pipe
        self.iterations = iterations

    def __call__(self, image: torch.Tensor, text: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        # The runner records each photo's out-of-domain score in its row instead of refusing the photo.
        result = self.pipe.edit(
            image, text, progress=False, iterations=self.iterations, seed=seed, batch_size=1, check_domain=False
        )
        return result.images[0], result.blend_full[0]


class InpaintMethod:
    """The diffusion inpainting baseline on ficekit's auto-mask (ficekit.baselines.inpaint.inpaint_like_ficekit)."""

    def __init__(self, pipe: FicePipeline, baseline: Any, inpaint: Callable[..., Any]) -> None:
        self.pipe = pipe
        self.baseline = baseline
        self.inpaint = inpaint

    def __call__(self, image: torch.Tensor, text: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        results, masks = self.inpaint(self.pipe, self.baseline, [image], text, seed=seed, progress=False)
        return results[0], masks[0]


def fice_method(ctx: MethodContext) -> EditMethod:
    """Factory of the 'fice' method."""
    return FiceMethod(ctx.pipeline(), ctx.iterations)


def inpaint_method(ctx: MethodContext) -> EditMethod:
    """Factory of the 'inpaint' method; EvalError naming the install command when the baseline is missing."""
    if not ctx.inpaint_model:
        raise EvalError("method 'inpaint' needs --inpaint-model (a diffusers inpainting model id or folder)")
    try:
        from ficekit.baselines.inpaint import InpaintBaseline, inpaint_like_ficekit

        baseline = InpaintBaseline.from_pretrained(ctx.inpaint_model, device=ctx.device)
    except ImportError as e:  # the module, or diffusers / transformers that from_pretrained imports
        hint = "" if INPAINT_INSTALL in str(e) else f"; {INPAINT_INSTALL}"
        raise EvalError(f"method 'inpaint' needs the diffusion baseline ({e}){hint}") from e
    return InpaintMethod(ctx.pipeline(), baseline, inpaint_like_ficekit)


METHODS: dict[str, MethodFactory] = {"fice": fice_method, "inpaint": inpaint_method}


def _check_factory(spec: str, factory: Any) -> None:
    """EvalError unless `factory` can be a method factory: a Python function, class or callable object taking
    one MethodContext. Built-in functions (os:system, shutil's C helpers) and other objects are refused by name."""
    contract = "a method factory is factory(MethodContext) -> callable(image, text, seed)"
    what = type(factory).__name__
    if inspect.isbuiltin(factory) or inspect.ismethoddescriptor(factory) or not callable(factory):
        raise EvalError(f"method {spec!r} names a {what}, not a method factory; {contract}")
    try:
        inspect.signature(factory).bind(None)
    except TypeError as e:
        raise EvalError(f"method {spec!r}: {what} {getattr(factory, '__name__', spec)} cannot take one "
                        f"MethodContext ({e}); {contract}") from e  # fmt: skip
    except ValueError:  # no signature to inspect (some C-implemented callables): refused like the built-ins
        raise EvalError(f"method {spec!r} names a {what} without a Python signature, not a method factory; "
                        f"{contract}") from None  # fmt: skip


def build_method(label: str, factory: MethodFactory, ctx: MethodContext) -> EditMethod:
    """factory(ctx), with EvalError naming the method when the factory fails in a way other than a user error
    (ValueError, OSError: already one line) or returns something that cannot edit."""
    try:
        method = factory(ctx)
    except (ValueError, OSError):
        raise
    except Exception as e:  # noqa: BLE001 - e.g. shutil:rmtree given a MethodContext: name the method, one line
        name = getattr(factory, "__name__", type(factory).__name__)
        raise EvalError(f"method {label!r}: its factory {name} failed ({type(e).__name__}: {e})") from e
    if not callable(method):
        raise EvalError(
            f"method {label!r}: its factory returned a {type(method).__name__}, expected a callable(image, text, seed)"
        )
    return method


def resolve_methods(specs: Sequence[str], registry: Mapping[str, MethodFactory]) -> dict[str, MethodFactory]:
    """Method label -> factory, in the order given: registry names, or module:factory (labelled by factory)."""
    resolved: dict[str, MethodFactory] = {}
    for spec in (s.strip() for s in specs):
        if not spec:
            continue
        if spec in registry:
            label, factory = spec, registry[spec]
        elif ":" in spec:
            module_name, _, attr = spec.partition(":")
            try:
                factory = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError, ValueError) as e:
                raise EvalError(f"method {spec!r}: cannot load factory {attr!r} from module {module_name!r} ({e})") from e
            _check_factory(spec, factory)
            label = attr
        else:
            raise EvalError(f"unknown method {spec!r}; choose from {sorted(registry)} or give module:factory")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", label):
            raise EvalError(f"method name {label!r}: use letters, digits, '_', '.', '-' (it names a folder)")
        resolved.setdefault(label, factory)
    if not resolved:
        raise EvalError("no method given; e.g. --methods fice,inpaint")
    return resolved


def checked_output(label: str, job: Job, photo: torch.Tensor, result: Any, mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A method's output on the CPU: result [3,H,W] quantised to 8 bits as its PNG (so scores match the file),
    mask [1,H,W] in [0,1]; EvalError naming the method when the shapes are not the photo's."""
    h, w = photo.shape[-2:]
    if not isinstance(result, torch.Tensor) or tuple(result.shape) != (3, h, w):
        got = list(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
        raise EvalError(f"method {label!r} on {job.image}: expected a result [3, {h}, {w}], got {got}")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        mask = mask[None]
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (1, h, w):
        got = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise EvalError(f"method {label!r} on {job.image}: expected a blend mask [1, {h}, {w}], got {got}")
    result = result.detach().float().cpu().clamp(0, 1).mul(255).round().div(255)
    return result, mask.detach().float().cpu().clamp(0, 1)
