"""Writing an edit's files: per photo the result, a comparison grid and the masks at the photo's own size, plus
one report.json — the one writer `ficekit.edit`, the inpainting baseline and interactive sessions share.

The output folder is checked before any work; names are claimed so that nothing existing is overwritten; a
failure while writing removes what this call wrote and raises one OutputError line; reports are strict JSON
(non-finite numbers become null).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import imageio
from .framing import fit_to_square

MASK_NAMES = ("edit", "keep", "blend")


class OutputError(OSError):
    """The output folder cannot be used or a file could not be written (one line, names the path)."""


def check_output_dir(out: str | os.PathLike) -> Path:
    """Create `out` if needed and prove a file can be written there, before any model runs."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".ficekit-write-test-"):
            pass
    except OSError as e:
        raise OutputError(f"--out {out} cannot be written: {e.strerror or e}") from None
    return out


@dataclass
class PhotoOutputs:
    """The files written for one photo: kind ('result', 'grid', 'mask_edit', ...) -> path."""

    name: str
    files: dict[str, Path] = field(default_factory=dict)


class OutputWriter:
    """Writes PNGs and reports into one folder; `rollback()` removes everything it wrote, as leaving a
    `with OutputWriter(out) as writer:` block with an exception does (no partial outputs)."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.written: list[Path] = []

    def png(self, image: torch.Tensor, filename: str) -> Path:
        """Save a [3|1,H,W] image in [0,1] under a new name (a suffix -N when `filename` exists)."""
        return self._claimed(filename, imageio.png_bytes(image))

    def json(self, data: Any, filename: str = "report.json") -> Path:
        """Save `data` as strict JSON (NaN/inf -> null) under a new name."""
        text = json.dumps(jsonable(data), indent=2, allow_nan=False)
        return self._claimed(filename, text.encode())

    def _claimed(self, filename: str, data: bytes) -> Path:
        try:
            path = imageio.write_atomic(imageio.claim_path(self.out / filename), data)
        except OSError as e:
            raise OutputError(f"could not write {self.out / filename}: {e.strerror or e}") from None
        self.written.append(path)
        return path

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        """Leaving with an exception (a failed write, Ctrl-C) removes every file this writer wrote."""
        if kind is not None:
            self.rollback()

    def rollback(self) -> None:
        """Remove the files this writer wrote (best effort; a file that cannot be removed is left)."""
        for path in reversed(self.written):
            try:
                path.unlink()
            except OSError:
                pass
        self.written.clear()

    def photo(
        self,
        stem: str,
        photo: torch.Tensor,
        result: torch.Tensor,
        masks: Mapping[str, torch.Tensor],
        generated: torch.Tensor | None = None,
        suffix: str = "",
    ) -> PhotoOutputs:
        """<stem><suffix>_result.png, _grid.png (photo | blend | generated | result) and _mask_<name>.png, all at
        the photo's own size and aligned with it."""
        outputs = PhotoOutputs(stem)
        outputs.files["result"] = self.png(result, f"{stem}{suffix}_result.png")
        columns = [photo, masks["blend"], *([generated.clamp(0, 1)] if generated is not None else []), result]
        outputs.files["grid"] = self.png(imageio.comparison_grid(columns), f"{stem}{suffix}_grid.png")
        for name in MASK_NAMES:
            if name in masks:
                outputs.files[f"mask_{name}"] = self.png(masks[name], f"{stem}{suffix}_mask_{name}.png")
        return outputs


def full_size(result: Any, index: int, photo: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """G(w) [3,H,W] and the edit/keep/blend masks [1,H,W] of photo `index` of an EditResult at the photo's size."""
    _, framing = fit_to_square(photo[None], result.generated.shape[-1])
    generated = framing.unfit(result.generated[index : index + 1])[0]
    masks = {name: framing.unfit(getattr(result.masks, name)[index : index + 1])[0].clamp(0, 1) for name in MASK_NAMES}
    return generated, masks


def jsonable(obj: Any) -> Any:
    """`obj` as plain JSON values: dataclasses and mappings as objects, paths as strings, tensors as lists,
    non-finite floats as None (strict JSON has no NaN)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    return str(obj)


def describe_written(groups: Sequence[PhotoOutputs], extra: Sequence[Path] = ()) -> list[str]:
    """Console lines listing what was written, grouped per photo."""
    lines = []
    for group in groups:
        lines.append(f"  {group.name}:")
        lines.extend(f"    {path}" for path in group.files.values())
    lines.extend(f"  {path}" for path in extra)
    return lines
