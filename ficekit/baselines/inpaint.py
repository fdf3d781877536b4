"""Diffusion inpainting on ficekit's own masks: the baseline FICE is compared against.

`InpaintBaseline` wraps a diffusers inpainting pipeline (Stable Diffusion inpainting or any
`AutoPipelineForInpainting` model; mask white = repaint) and runs it on exactly the region a ficekit
edit would change, with ficekit's framing and stitching, so the two methods differ only in the generator:

    photo [3,H,W] + blend mask [1,H,W] --fit_to_square--> model resolution --diffusion--> generated
    generated --Framing.unfit--> photo size --stitch(photo, generated, blend)--> result [3,H,W]

The model repaints everywhere the (resized) blend mask is above 0, so every pixel the stitch takes from
the generated image was repainted; the photo comes back bit for bit wherever the mask is 0. Each photo
gets its own torch.Generator (seed + its index, on the CPU), so results do not depend on the device's
random stream and vary with the batch size only by float rounding. Nothing is downloaded unless
$FICEKIT_ALLOW_DOWNLOAD=1: a hub id must already be in the Hugging Face cache.

Command line (writes the same files as python -m ficekit.edit):
  python -m ficekit.baselines.inpaint --text "striped cotton shirt" --model path/to/sd-inpainting
  python -m ficekit.baselines.inpaint --text "red dress" --input-dir photos/ --model stabilityai/stable-diffusion-2-inpainting
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ficekit.framing import fit_to_square
from ficekit.shapes import check_shape
from ficekit.stitch import STITCH_METHODS, stitch

log = logging.getLogger(__name__)

ALLOW_DOWNLOAD_ENV = "FICEKIT_ALLOW_DOWNLOAD"  # "1" lets from_pretrained fetch a hub id that is not cached
INSTALL_HINT = 'pip install "ficekit[diffusion]"'
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _import_diffusers() -> Any:
    """The diffusers module (with transformers, which its text encoders need), or an ImportError saying what to install."""
    try:
        import diffusers
        import transformers  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the diffusion-inpainting baseline needs diffusers and transformers: {INSTALL_HINT} ({e})") from e
    return diffusers


def downloads_allowed() -> bool:
    """True when $FICEKIT_ALLOW_DOWNLOAD is 1/true/yes: only then may from_pretrained reach a model hub."""
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def _looks_like_path(model: str) -> bool:
    """A hub id is 'owner/name' or 'name'; anything absolute, dotted, with '~', a backslash or more slashes is a path."""
    return os.path.isabs(model) or model.startswith((".", "~")) or model.count("/") > 1 or "\\" in model


@dataclass
class InpaintResult:
    """One inpainting run; per photo i (all on the CPU, float32, in [0, 1]):

    images:    [3, H_i, W_i] stitched results (the photo exactly where the mask is 0).
    generated: [3, H_i, W_i] the model's raw output mapped back to the photo's size (before stitching).
    timings:   seconds: 'inpaint' (the diffusion model), 'stitch', 'total'.
    """

    images: list[torch.Tensor]
    generated: list[torch.Tensor]
    timings: dict[str, float] = field(default_factory=dict)


class InpaintBaseline:
    """A diffusers inpainting pipeline run on ficekit's masks, framing and stitching (the diffusion baseline)."""

    def __init__(
        self,
        pipeline: Any,                              # a diffusers inpainting pipeline (called with image, mask_image, ...)
        device: str | torch.device | None = "auto",  # 'auto' = cuda when available, else cpu; None = leave it where it is
        num_inference_steps: int = 30,              # denoising steps per image
        guidance_scale: float = 7.5,                # classifier-free guidance; <= 1 disables it
        resolution: int | None = None,              # side of the square the model runs at; None = the pipeline's default
    ) -> None:
        if not callable(pipeline):
            raise ValueError(f"pipeline: expected a diffusers inpainting pipeline, got {type(pipeline).__name__}")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        self.pipeline = pipeline
        if device is not None:
            from ficekit.pipeline import resolve_device

            self.pipeline.to(resolve_device(device))
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = float(guidance_scale)
        self.vae_scale_factor = int(getattr(pipeline, "vae_scale_factor", 8))
        self.resolution = self.default_resolution(pipeline) if resolution is None else int(resolution)
        if self.resolution < self.vae_scale_factor or self.resolution % self.vae_scale_factor:
            raise ValueError(
                f"resolution must be a positive multiple of the model's VAE scale factor {self.vae_scale_factor}, got {self.resolution}"
            )

    @staticmethod
    def default_resolution(pipeline: Any) -> int:
        """The square side the pipeline generates by default: latent sample size x VAE scale factor (512 for SD 1.5)."""
        scale = int(getattr(pipeline, "vae_scale_factor", 8))
        denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
        size = getattr(getattr(denoiser, "config", None), "sample_size", None)
        size = getattr(pipeline, "default_sample_size", None) if not isinstance(size, int) else size
        if not isinstance(size, int):
            raise ValueError(f"cannot tell the default resolution of {type(pipeline).__name__}; pass resolution=")
        return size * scale

    @property
    def device(self) -> torch.device:
        """The device the pipeline runs on."""
        return torch.device(getattr(self.pipeline, "device", "cpu"))

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        device: str | torch.device = "auto",
        dtype: torch.dtype | None = None,
        **kw: Any,
    ) -> InpaintBaseline:
        """Load an inpainting model from a local diffusers folder or a cached hub id (offline unless
        $FICEKIT_ALLOW_DOWNLOAD=1). dtype None = float32. `kw`: InpaintBaseline's own options
        (num_inference_steps, guidance_scale, resolution); the rest go to diffusers' from_pretrained (variant, ...).

        Raises:
            ImportError: diffusers/transformers missing (says to `pip install "ficekit[diffusion]"`).
            FileNotFoundError: the folder does not exist or has no model_index.json, or the hub id is not cached.
        """
        own = {k: kw.pop(k) for k in ("num_inference_steps", "guidance_scale", "resolution") if k in kw}
        diffusers = _import_diffusers()
        name = os.fspath(model)
        path = Path(name).expanduser()
        local = path.exists() or _looks_like_path(name)
        if local:
            if not path.is_dir():
                raise FileNotFoundError(f"diffusion model folder not found: {path} (expected a diffusers pipeline folder)")
            if not (path / "model_index.json").is_file():
                raise FileNotFoundError(
                    f"diffusion model folder {path} has no model_index.json; expected a diffusers pipeline folder "
                    "(as written by save_pretrained or `huggingface-cli download`)"
                )
            name = str(path)
        offline = not downloads_allowed()
        kw.setdefault("local_files_only", offline)
        if dtype is not None:
            kw["torch_dtype"] = dtype
        try:
            with warnings.catch_warnings():  # newer diffusers call it dtype; 0.27 knows only torch_dtype
                warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
                pipeline = diffusers.AutoPipelineForInpainting.from_pretrained(name, **kw)
        except OSError as e:
            if local or not offline:
                raise FileNotFoundError(f"cannot load diffusion model {name!r}: {e}") from e
            raise FileNotFoundError(
                f"diffusion model {name!r} is not a local folder and is not in the Hugging Face cache; ficekit does not "
                f"download on its own: fetch it once (`huggingface-cli download {name}`), pass its folder, or set "
                f"{ALLOW_DOWNLOAD_ENV}=1"
            ) from e
        except ValueError as e:
            raise ValueError(f"cannot load diffusion model {name!r} as an inpainting pipeline: {e}") from e
        return cls(pipeline, device=device, **own)

    # ------------------------------------------------------------------ inpainting

    def inpaint(
        self,
        images: Sequence[torch.Tensor] | torch.Tensor,
        masks: Sequence[torch.Tensor] | torch.Tensor,
        text: str,
        seed: int | None = 0,
        batch_size: int = 4,
        progress: bool = True,
        stitch_method: str = "feather",
    ) -> list[torch.Tensor]:
        """Repaint each photo where its mask is > 0 from `text`; results [3, H_i, W_i] in [0, 1], stitched with
        `stitch_method` (ficekit.stitch) so pixels where the mask is 0 are the photo's, bit for bit."""
        return self.inpaint_result(images, masks, text, seed, batch_size, progress, stitch_method).images

    @torch.no_grad()
    def inpaint_result(
        self,
        images: Sequence[torch.Tensor] | torch.Tensor,
        masks: Sequence[torch.Tensor] | torch.Tensor,
        text: str,
        seed: int | None = 0,
        batch_size: int = 4,
        progress: bool = True,
        stitch_method: str = "feather",
    ) -> InpaintResult:
        """As inpaint(), also returning the raw generated images and timings.

        Args:
            images: [3, H_i, W_i] float photos in [0, 1] (a list, or one [N, 3, H, W] tensor), any size or aspect.
            masks: [1, H_i, W_i] float masks in [0, 1] at each photo's size, 1 = repaint (soft edges allowed).
            text: the prompt.
            seed: photo i uses torch.Generator().manual_seed(seed + i); None = unseeded.
            batch_size: photos per diffusion call (results do not depend on it beyond float rounding).
            progress: show diffusers' progress bar.
            stitch_method: one of ficekit.stitch.STITCH_METHODS.
        """
        photos, blends = _check_inputs(images, masks)
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text is empty; describe the garment, e.g. 'striped cotton shirt'")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if stitch_method not in STITCH_METHODS:
            raise ValueError(f"unknown stitch method {stitch_method!r}; expected one of {list(STITCH_METHODS)}")
        self.pipeline.set_progress_bar_config(disable=not progress)
        t_start = time.perf_counter()
        fitted = [self._fit(photo, blend) for photo, blend in zip(photos, blends, strict=True)]
        raw: list[torch.Tensor] = []
        for start in range(0, len(photos), batch_size):
            batch = fitted[start : start + batch_size]
            generators = None if seed is None else [torch.Generator("cpu").manual_seed(seed + start + i) for i in range(len(batch))]
            output = self.pipeline(
                prompt=[text] * len(batch),
                image=torch.cat([x for x, _, _ in batch]),
                mask_image=torch.cat([m for _, m, _ in batch]),
                height=self.resolution,
                width=self.resolution,
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                generator=generators,
                output_type="pt",
            )
            generated = output.images if hasattr(output, "images") else output[0]
            raw.extend(torch.as_tensor(generated).float().cpu().split(1))
        t_stitched = time.perf_counter()
        results, unfitted = [], []
        for photo, blend, (_, _, framing), out in zip(photos, blends, fitted, raw, strict=True):
            generated = framing.unfit(out).clamp(0, 1)
            mixed = stitch(photo[None], generated, blend[None], method=stitch_method).clamp(0, 1)
            # Bit-identical photo where the mask is 0, whatever the method or a clamp did.
            results.append(torch.where(blend[None] > 0, mixed, photo[None])[0])
            unfitted.append(generated[0])
        t_end = time.perf_counter()
        timings = {"inpaint": t_stitched - t_start, "stitch": t_end - t_stitched, "total": t_end - t_start}
        return InpaintResult(images=results, generated=unfitted, timings=timings)

    def _fit(self, photo: torch.Tensor, blend: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Photo and repaint mask at the model's square resolution (ficekit's framing), and the framing to undo it."""
        x, framing = fit_to_square(photo[None], self.resolution)
        m, _ = fit_to_square(blend[None].expand(1, 3, -1, -1), self.resolution)
        return x.clamp(0, 1), (m[:, :1] > 0).float(), framing


def _check_inputs(
    images: Sequence[torch.Tensor] | torch.Tensor, masks: Sequence[torch.Tensor] | torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Photos [3,H,W] and masks [1,H,W] as float32 CPU tensors in [0, 1], one mask per photo at its size."""
    photos, blends = list(images), list(masks)
    if not photos:
        raise ValueError("no images to inpaint")
    if len(photos) != len(blends):
        raise ValueError(f"got {len(photos)} images but {len(blends)} masks; expected one mask per image")
    for i, (photo, blend) in enumerate(zip(photos, blends, strict=True)):
        check_shape(f"images[{i}]", photo, [3, None, None])
        check_shape(f"masks[{i}]", blend, [1, *photo.shape[-2:]])
        for name, t in ((f"images[{i}]", photo), (f"masks[{i}]", blend)):
            if not t.is_floating_point():
                raise ValueError(f"{name}: expected a float tensor in [0, 1], got {t.dtype}")
            if t.numel() and (t.min() < 0 or t.max() > 1):
                raise ValueError(f"{name}: values must lie in [0, 1] (got {t.min():.3f}..{t.max():.3f})")
    return [p.detach().float().cpu() for p in photos], [m.detach().float().cpu() for m in blends]


def inpaint_like_ficekit(
    ficekit_pipe: Any,
    baseline: InpaintBaseline,
    images: Sequence[torch.Tensor] | torch.Tensor,
    text: str,
    seed: int | None = 0,
    progress: bool = True,
    **overrides: Any,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Inpaint `images` from `text` on the blend masks a FicePipeline edit would use (pipe.edit_masks with
    `overrides`), stitched and batched as that edit's settings say; returns (results, masks), [3|1, H_i, W_i]."""
    photos = list(images)
    settings = ficekit_pipe.settings(**overrides)
    masks = ficekit_pipe.edit_masks(photos, text, **overrides)
    results = baseline.inpaint(
        photos, masks, text, seed=seed, batch_size=settings.batch_size, progress=progress, stitch_method=settings.stitch
    )
    return results, masks


# ---------------------------------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments: ficekit.edit's inputs and outputs, the diffusion model and its sampler settings."""
    p = argparse.ArgumentParser(
        prog="python -m ficekit.baselines.inpaint", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--text", required=True, help="the garment description, used as the prompt and to pick the mask")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", nargs="+", type=Path, metavar="PATH", help="photo(s) to inpaint")
    src.add_argument("--input-dir", type=Path, metavar="DIR", help="inpaint every image in this folder")
    add("--model", required=True, help="diffusers inpainting model: a local folder or a cached hub id")
    add("--bundle", default="demo", help="ficekit bundle whose masks are used: 'demo', 'fice' or a folder (default: demo)")
    add("--out", type=Path, default=Path("ficekit-out"), help="output folder (default: ficekit-out)")
    add("--seed", type=int, default=0, help="random seed; photo i uses seed + i (default: 0)")
    add("--steps", type=int, default=30, help="denoising steps (default: 30)")
    add("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default: 7.5)")
    add("--resolution", type=int, help="square side the model runs at (default: the model's, e.g. 512)")
    add("--dtype", choices=sorted(_DTYPES), default="float32", help="model weights' dtype (default: float32)")
    add("--mask", choices=["auto", "fice"], help="masks: auto (garment auto-masking) or fice (default: the bundle's)")
    add("--category", choices=["upper", "lower", "full", "outerwear"], help="garment category (default: from the text)")
    add("--stitch", choices=list(STITCH_METHODS), help="stitching method (default: the bundle's)")
    add("--batch-size", type=int, default=4, help="photos per diffusion call (default: 4)")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    add("--quiet", action="store_true", help="no progress bar and no summary; errors only")
    return p


PROG = "ficekit.baselines.inpaint"


def run(args: argparse.Namespace) -> int:
    """Run one baseline job from parsed arguments; returns the process exit code."""
    from ficekit.bundle import load_bundle
    from ficekit.cli import EXIT_OK, fail
    from ficekit.inputs import input_paths, read_photos
    from ficekit.outputs import OutputWriter, check_output_dir, describe_written
    from ficekit.pipeline import FicePipeline, edit_settings, resolve_device

    if not args.text.strip():
        return fail(PROG, "--text is empty; describe the garment, e.g. --text 'striped cotton shirt'")
    if args.steps < 1:
        return fail(PROG, f"--steps must be >= 1, got {args.steps}")
    if args.guidance < 0:
        return fail(PROG, f"--guidance must be >= 0, got {args.guidance}")
    t_start = time.perf_counter()
    bundle = load_bundle(args.bundle)
    settings = edit_settings(
        bundle.defaults, mask=args.mask, category=args.category, stitch=args.stitch, seed=args.seed,
        batch_size=args.batch_size,
    )
    resolve_device(args.device)
    paths, photos, _ = read_photos(input_paths(args.image, args.input_dir, bundle), tolerant=False)
    out = check_output_dir(args.out)
    baseline = InpaintBaseline.from_pretrained(
        args.model, device=args.device, dtype=None if args.dtype == "float32" else _DTYPES[args.dtype],
        num_inference_steps=args.steps,
        guidance_scale=args.guidance, resolution=args.resolution,
    )
    pipe = FicePipeline.from_bundle(bundle, device=args.device)
    t = time.perf_counter()
    overrides = {"mask": settings.mask, "category": settings.category}
    masks = [m for photo in photos for m in pipe.photo_masks([photo], args.text, **overrides)]
    masking_seconds = time.perf_counter() - t
    result = baseline.inpaint_result(
        photos, [m.blend[0] for m in masks], args.text, seed=args.seed, batch_size=settings.batch_size,
        progress=not args.quiet, stitch_method=settings.stitch,
    )

    groups = []
    with OutputWriter(out) as writer:  # removes what it wrote on a failure
        for path, photo, mask, final, generated in zip(paths, photos, masks, result.images, result.generated, strict=True):
            full = {name: getattr(mask, name)[0] for name in ("edit", "keep", "blend")}
            groups.append(writer.photo(path.stem, photo, final, full, generated))
        timings = {"masks": masking_seconds, **result.timings, "total": time.perf_counter() - t_start}
        report = {
            "method": "diffusion-inpainting",
            "text": args.text,
            "model": {"name": os.fspath(args.model), "pipeline": type(baseline.pipeline).__name__, "dtype": args.dtype},
            "bundle": {"name": bundle.name, "root": str(bundle.root)},
            "images": [str(p) for p in paths],
            "settings": {
                "num_inference_steps": baseline.num_inference_steps, "guidance_scale": baseline.guidance_scale,
                "resolution": baseline.resolution, "seed": args.seed, "batch_size": settings.batch_size,
                "mask": settings.mask, "category": settings.category, "stitch": settings.stitch,
            },
            "categories": [m.category for m in masks],
            "device": str(baseline.device),
            "timings_seconds": timings,
            "outputs": {g.name: g.files for g in groups},
        }
        report_path = writer.json(report)
    if not args.quiet:
        print(f"inpainted {len(paths)} photo(s) with {args.text!r} in {timings['total']:.1f} s; wrote:")
        for line in describe_written(groups, [report_path]):
            print(line)
    return EXIT_OK


def quiet_libraries() -> None:
    """--quiet: diffusers' and transformers' own loggers and loading bars print errors only."""
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return  # reported as a one-line error when the model loads
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, run, and turn user errors into exit code 2 with a one-line message."""
    from ficekit.cli import run_command, setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    if args.quiet:
        quiet_libraries()
    return run_command(PROG, lambda: _run_or_import_error(args))


def _run_or_import_error(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except ImportError as e:
        raise ValueError(str(e)) from None


if __name__ == "__main__":
    sys.exit(main())
