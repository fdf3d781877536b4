"""Model bundles: a folder with `bundle.json` naming every model file, its format, its loader kwargs and the
default edit settings, so the architecture travels with the weights.

bundle.json (format_version 1)::

    {
      "format_version": 1,
      "name": "fice",
      "models": {                                  # role -> model; paths are relative to the folder
        "generator": {"file": "generator.pt", "format": "fice", "kwargs": {}, "sha256": "<64 hex> or null"},
        "encoder":   {"file": "e4e.pt", "format": "e4e", "kwargs": {}},
        "densepose": {"file": "densepose.pkl", "format": "detectron2", "kwargs": {"config": "R_50_FPN_s1x"}},
        "segmenter": {"file": "segmentator.pt", "format": "fice_deeplab", "kwargs": {}},
                     # or FICE's classes read off the parser (a bundle without FICE's segmenter, e.g. demo):
                     # {"file": "parser.pt", "format": "parser_view",
                     #  "kwargs": {"parser": {...the parser record's kwargs...},
                     #             "groups": {"background": ["background"], "body": [...], "head": ["head", "hair"]}}}
        "parser":    {"file": "parser.pt", "format": "parser",
                      "kwargs": {"labels": {"background": 0, ...}, "input_kind": "imagenet",
                                 "architecture": {"type": "deeplabv3_resnet50"}, "groups": {"head": [...]}}},
        "clip":      {"file": "RN50x4.pt", "format": "open_clip",
                      "kwargs": {"model_name": "RN50x4", "quick_gelu": true, "trust_torchscript": true}}
      },
      "defaults": {"iterations": 500, "lr": 0.05, "weights": {"clip": 1, ...}, "regularizer": "w_delta",
                   "mask": "fice", "stitch": "fice", "schedule": "constant", "clip_augment": 0, "clip_region": "image",
                   "inversion": "e4e", "inversion_steps": null, "start": "inversion", "followup_iterations": null,
                   "colour_match": "off"},
      "example_images": ["examples/person.png"],
      "provenance": {...free-form: where the weights come from...}
    }

Roles and formats (FORMATS); kwargs go to the format's loader:
    generator  'fice' | 'nvlabs' | 'rosinality'   network (which network of the file)
    encoder    'e4e'                              encoder_kwargs (default: recorded in / read off the file)
    densepose  'detectron2'                       config: a DensePose config name or dict (required)
    segmenter  'fice_deeplab'                     architecture (default FICE's DeepLabV3-ResNet50)
               'parser_view'                      parser (required: a parser's kwargs as in the parser record;
                                                  the file is that parser's file), groups (required: FICE class
                                                  'background' / 'body' / 'head' -> parser class names, a
                                                  partition of the parser's classes); loads a
                                                  ParserSegmenterView whose probabilities are the groups' sums
    parser     'parser'                           labels, input_kind, architecture (see ficekit.perception.
                                                  parser_networks, which says how to add one), groups, state_key
    clip       'open_clip'                        model_name, model_config (dict or JSON path), quick_gelu,
                                                  preprocess_cfg, trust_torchscript (only with a sha256),
                                                  pretrained (an open_clip tag, with file null; open_clip
                                                  fetches it or finds it in its cache)
    gallery    'texture_gallery'                  (none) exemplar garments of the texture and collage terms
                                                  (ficekit.texture, ficekit.collage)
generator, encoder and clip are required; the others are optional (Bundle.has).

Bundle names: 'demo' (shipped in the repository's checkpoints/demo/, installed as package data of
`ficekit_checkpoints`), 'fice' ($FICEKIT_HOME/fice, default ~/.cache/ficekit/fice, written by
`python -m ficekit.download fice`), or any folder / bundle.json path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ficekit.checkpoint_io import atomic_write
from ficekit.domain import DomainRecord, DomainRecordError
from ficekit.encoder import load_e4e
from ficekit.generator import load_generator
from ficekit.perception.clip import load_clip, read_model_config
from ficekit.perception.densepose import load_densepose, resolve_config
from ficekit.perception.parser_networks import build_parser_network, check_architecture
from ficekit.perception.segmenter import (
    FICE_LABELS,
    INPUT_CONVERSIONS,
    FiceSegmenter,
    ParserSegmenterView,
    check_view_groups,
    load_parser,
    load_segmenter,
)
from ficekit.regularizers import REGULARIZERS
from ficekit.settings import FICE_WEIGHTS, EditSettings

logger = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.json"
FORMAT_VERSION = 1
KNOWN_BUNDLES: tuple[str, ...] = ("demo", "fice")
ROLES: tuple[str, ...] = ("generator", "encoder", "densepose", "segmenter", "parser", "clip", "gallery")
# Every edit needs these; densepose (shape loss), segmenter (FICE's head mask) and parser (garment masks) are
# optional, and the pipeline uses what a bundle has (Bundle.has).
REQUIRED_ROLES: tuple[str, ...] = ("generator", "encoder", "clip")
DEMO_PACKAGE = "ficekit_checkpoints"  # data-only package that setup.py maps onto the repository's checkpoints/


class BundleError(ValueError):
    """A bundle.json is malformed or names something unknown, or a model does not match its record."""


class BundleNotFoundError(FileNotFoundError):
    """A bundle, its bundle.json or one of the files it names does not exist."""


class ChecksumError(BundleError):
    """A model file's sha256 differs from the one recorded in bundle.json."""


# ---------------------------------------------------------------------------------------------------
# Records.


@dataclass(frozen=True)
class ModelSpec:
    """One model of a bundle: its file (relative to the bundle folder), format, loader kwargs, sha256."""

    file: str | None  # Path relative to the bundle folder (absolute works too); None = clip tag in kwargs.
    format: str  # One of FORMATS[role].
    kwargs: dict[str, Any] = field(default_factory=dict)  # Loader kwargs (see the module docstring).
    sha256: str | None = None  # Lower-case hex digest of the file; None = not checked.


@dataclass(frozen=True)
class EditDefaults:
    """Default edit settings of a bundle (FICE's recipe unless the bundle says otherwise); validated by the same
    rules as EditSettings (ficekit.settings), which the bundle's defaults become."""

    iterations: int = 500  # Optimiser steps of a first round.
    lr: float = 0.05  # Adam learning rate.
    weights: dict[str, float] = field(default_factory=lambda: dict(FICE_WEIGHTS))  # Term -> weight (replaces).
    regularizer: str = "w_delta"  # Latent regulariser name.
    mask: str = "fice"  # Masking mode name.
    stitch: str = "fice"  # Stitch method, one of ficekit.stitch.STITCH_METHODS.
    schedule: str = "constant"  # Learning-rate schedule name.
    clip_augment: int = 0  # Random views the CLIP term averages over (ficekit); 0 = FICE.
    clip_region: str = "image"  # What the CLIP term scores: 'image' = G(w) (FICE), 'edit' = G(w) over the kept photo.
    inversion: str = "e4e"  # Photo -> W+ method (e4e = FICE).
    inversion_steps: int | None = None  # Steps of an optimize/pti inversion; None = the method's default.
    start: str = "inversion"  # First round starts at the inversion (FICE) or 'collage' (ficekit.pipeline.start_latent).
    followup_iterations: int | None = None  # Steps of a session's follow-up round; None = iterations // 3.
    colour_match: str = "off"  # 'collage' = result's garment colours matched to the collage's; 'off' = FICE.
    compile: str = "off"  # 'off' = eager reference loop; 'auto' = compiled step (minutes to compile on a CPU).
    perception_every: int = 1  # Perception terms every k-th step (OptimizeConfig.perception_every); 1 = FICE.
    early_stop: int = 0  # Loss-plateau window in steps (OptimizeConfig.early_stop); 0 = every step (FICE).
    early_stop_tol: float = 0.01  # Relative fall below which the loss has plateaued (OptimizeConfig.early_stop_tol).

    def __post_init__(self) -> None:
        if not isinstance(self.regularizer, str) or not self.regularizer:
            raise ValueError(f"defaults.regularizer must be a non-empty string, got {self.regularizer!r}")
        if not isinstance(self.weights, Mapping):
            raise ValueError(f"defaults.weights must map term names to numbers >= 0, got {self.weights!r}")
        # A regulariser the user registers after loading the bundle is checked when an edit's settings are made.
        known = self.regularizer if self.regularizer in REGULARIZERS else "w_delta"
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | {"regularizer": known}
        try:
            EditSettings(**values).validate()
        except ValueError as e:
            raise ValueError(f"defaults.{e}") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EditDefaults:
        """From bundle.json's 'defaults' object; missing keys take FICE's values, unknown keys raise."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known) - {"resolution"})
        if unknown:
            raise ValueError(f"defaults: unknown key(s) {unknown}; known: {known}")
        values = dict(data)
        if values.get("resolution", 0) is None:
            del values["resolution"]  # older bundles wrote "resolution": null; the generator fixes the resolution
        elif "resolution" in values:
            raise ValueError("defaults.resolution is not a setting: the generator's resolution is the working one")
        if "weights" in values and isinstance(values["weights"], Mapping):
            values["weights"] = {str(k): float(v) if _is_number(v) else v for k, v in values["weights"].items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------------
# Formats: role -> format -> loader and the kwargs it takes. A loader gets (path or None, kwargs, device,
# bundle folder) and returns the frozen module.

Loader = Callable[[Path | None, Mapping[str, Any], "torch.device | str", Path], nn.Module]


@dataclass(frozen=True)
class _Format:
    loader: Loader
    required: tuple[str, ...] = ()  # kwargs the bundle must give
    optional: tuple[str, ...] = ()  # kwargs it may give
    check: Callable[[Mapping[str, Any]], None] | None = None  # validates kwargs when bundle.json is read
    file_optional: bool = False  # True: file may be null (clip with a pretrained tag)


def _generator_loader(fmt: str) -> Loader:
    def load(path: Path | None, kwargs: Mapping[str, Any], device: Any, root: Path) -> nn.Module:
        return load_generator(path, device=device, format=fmt, network=kwargs.get("network"))

    return load


def _load_e4e(path: Path | None, kwargs: Mapping[str, Any], device: Any, root: Path) -> nn.Module:
    return load_e4e(path, device=device, encoder_kwargs=kwargs.get("encoder_kwargs"))


def _load_densepose(path: Path | None, kwargs: Mapping[str, Any], device: Any, root: Path) -> nn.Module:
    return load_densepose(path, config=kwargs["config"], device=device)


def _load_fice_segmenter(path: Path | None, kwargs: Mapping[str, Any], device: Any, root: Path) -> nn.Module:
    if "architecture" not in kwargs:
        return load_segmenter(path, device=device)
    net = build_parser_network(kwargs["architecture"], len(FICE_LABELS))
    parser = load_parser(path, net, FICE_LABELS, input_kind="fice", device=device)
    return FiceSegmenter(parser.model).to(device)


def _load_parser(path: Path | None, kwargs: Mapping[str, Any], device: Any, root: Path) -> nn.Module:
    net = build_parser_network(kwargs["architecture"], len(kwargs["labels"]))
    return load_parser(
        path,
        net,
        kwargs["labels"],
        input_kind=kwargs["input_kind"],
        groups=kwargs.get("groups"),
        state_key=kwargs.get("state_key", "state"),
        device=device,
    )


def _load_parser_view(path: Path | None, kwargs: Mapping[str, Any], device: Any, root: Path) -> nn.Module:
    parser = _load_parser(path, kwargs["parser"], device, root)
    return ParserSegmenterView(parser, kwargs["groups"]).to(device)


def _load_open_clip(path: Path | None, kwargs: Mapping[str, Any], device: Any, root: Path) -> nn.Module:
    model_config = kwargs.get("model_config")
    if isinstance(model_config, str):
        model_config = _resolve(root, model_config)
    return load_clip(
        kwargs["model_name"],
        pretrained=path if path is not None else kwargs["pretrained"],
        model_config=model_config,
        quick_gelu=kwargs.get("quick_gelu"),
        preprocess_cfg=kwargs.get("preprocess_cfg"),
        trust_torchscript=bool(kwargs.get("trust_torchscript", False)),
        device=device,
    )


def _check_densepose(kwargs: Mapping[str, Any]) -> None:
    resolve_config(kwargs["config"])


def _check_segmenter(kwargs: Mapping[str, Any]) -> None:
    if "architecture" in kwargs:
        check_architecture(kwargs["architecture"])


def _check_parser(kwargs: Mapping[str, Any]) -> None:
    labels = kwargs["labels"]
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(f"labels must be a non-empty dict name -> channel, got {labels!r}")
    if kwargs["input_kind"] not in INPUT_CONVERSIONS:
        raise ValueError(f"input_kind must be one of {sorted(INPUT_CONVERSIONS)}, got {kwargs['input_kind']!r}")
    check_architecture(kwargs["architecture"])


def _check_parser_view(kwargs: Mapping[str, Any]) -> None:
    parser = kwargs["parser"]
    if not isinstance(parser, Mapping):
        raise ValueError(f"parser must be the parser record's kwargs (a dict), got {type(parser).__name__}")
    fmt = _FORMATS["parser"]["parser"]
    missing = [k for k in fmt.required if k not in parser]
    unknown = sorted(set(parser) - set(fmt.required) - set(fmt.optional))
    if missing or unknown:
        parts = [f"missing {missing}"] if missing else []
        parts += [f"unknown {unknown}"] if unknown else []
        raise ValueError(
            f"parser: kwargs {', '.join(parts)}; required {list(fmt.required)}, optional {list(fmt.optional)}"
        )
    _check_parser(parser)
    check_view_groups(parser["labels"], kwargs["groups"])


def _check_clip(kwargs: Mapping[str, Any]) -> None:
    if not isinstance(kwargs["model_name"], str) or not kwargs["model_name"]:
        raise ValueError(f"model_name must be a non-empty string, got {kwargs['model_name']!r}")
    config = kwargs.get("model_config")
    if isinstance(config, Mapping):
        read_model_config(config)
    elif config is not None and not isinstance(config, str):
        raise ValueError(f"model_config must be a dict or a JSON file path, got {type(config).__name__}")


def _load_texture_gallery(path: Path | None, kwargs: Mapping[str, Any], device: Any, root: Path) -> nn.Module:
    from ficekit.texture import load_gallery

    return load_gallery(path, device)


_CLIP_OPTIONAL = ("pretrained", "model_config", "quick_gelu", "trust_torchscript", "preprocess_cfg")
_FORMATS: dict[str, dict[str, _Format]] = {
    "generator": {
        fmt: _Format(_generator_loader(fmt), optional=("network",)) for fmt in ("fice", "nvlabs", "rosinality")
    },
    "encoder": {"e4e": _Format(_load_e4e, optional=("encoder_kwargs",))},
    "densepose": {"detectron2": _Format(_load_densepose, required=("config",), check=_check_densepose)},
    "segmenter": {
        "fice_deeplab": _Format(_load_fice_segmenter, optional=("architecture",), check=_check_segmenter),
        "parser_view": _Format(_load_parser_view, required=("parser", "groups"), check=_check_parser_view),
    },
    "parser": {
        "parser": _Format(
            _load_parser,
            required=("labels", "input_kind", "architecture"),
            optional=("groups", "state_key"),
            check=_check_parser,
        )
    },
    "gallery": {"texture_gallery": _Format(_load_texture_gallery)},
    "clip": {
        "open_clip": _Format(
            _load_open_clip, required=("model_name",), optional=_CLIP_OPTIONAL, check=_check_clip, file_optional=True
        )
    },
}
FORMATS: dict[str, tuple[str, ...]] = {role: tuple(formats) for role, formats in _FORMATS.items()}


def _format_of(role: str, spec: ModelSpec) -> _Format:
    """The format record for (role, spec.format); BundleError naming what is known otherwise."""
    if role not in _FORMATS:
        raise BundleError(f"unknown model role {role!r}; known roles: {list(ROLES)}")
    if spec.format not in _FORMATS[role]:
        raise BundleError(f"{role}: unknown format {spec.format!r}; formats for {role}: {list(FORMATS[role])}")
    return _FORMATS[role][spec.format]


def _check_spec(role: str, spec: ModelSpec) -> None:
    """Validate a model record without touching its file (role, format, kwargs, sha256, file/tag)."""
    fmt = _format_of(role, spec)
    if not isinstance(spec.kwargs, Mapping):
        raise BundleError(f"{role}: kwargs must be an object, got {type(spec.kwargs).__name__}")
    missing = [k for k in fmt.required if k not in spec.kwargs]
    unknown = sorted(set(spec.kwargs) - set(fmt.required) - set(fmt.optional))
    if missing or unknown:
        parts = [f"missing {missing}"] if missing else []
        parts += [f"unknown {unknown}"] if unknown else []
        raise BundleError(
            f"{role} ({spec.format}): kwargs {', '.join(parts)}; required {list(fmt.required)}, "
            f"optional {list(fmt.optional)}"
        )
    if spec.file is None and not (fmt.file_optional and "pretrained" in spec.kwargs):
        hint = " (or give kwargs['pretrained'], an open_clip tag)" if fmt.file_optional else ""
        raise BundleError(f"{role} ({spec.format}): 'file' is null; a model file is needed{hint}")
    if spec.file is not None and (not isinstance(spec.file, str) or not spec.file):
        raise BundleError(f"{role}: 'file' must be a non-empty path string or null, got {spec.file!r}")
    if spec.file is not None and "pretrained" in spec.kwargs:
        raise BundleError(f"{role}: give either 'file' or kwargs['pretrained'] (a tag), not both")
    if spec.sha256 is not None and not (isinstance(spec.sha256, str) and re.fullmatch(r"[0-9a-f]{64}", spec.sha256)):
        raise BundleError(f"{role}: sha256 must be 64 lower-case hex digits or null, got {spec.sha256!r}")
    if spec.kwargs.get("trust_torchscript") and spec.sha256 is None:
        raise BundleError(
            f"{role}: trust_torchscript (torch.jit.load runs the file's TorchScript code) needs the file's sha256 "
            "in the record, so that only that exact file is trusted"
        )
    if fmt.check is not None:
        try:
            fmt.check(spec.kwargs)
        except (ValueError, TypeError) as e:
            raise BundleError(f"{role} ({spec.format}): bad kwargs: {e}") from e


def load_model(role: str, spec: ModelSpec, root: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """Load one model record (files relative to `root`) with its format's loader; no sha256 check.

    Bundle.load is the usual entry (it also verifies the sha256); this is for records not yet in a bundle.
    Raises BundleError for a bad record and the loader's CheckpointError for a bad file.
    """
    _check_spec(role, spec)
    root = Path(root)
    path = _resolve(root, spec.file) if spec.file is not None else None
    if path is not None and not path.is_file():
        raise BundleNotFoundError(f"{role} model file {path} does not exist")
    return _format_of(role, spec).loader(path, spec.kwargs, device, root)


def _resolve(root: Path, file: str) -> Path:
    return Path(file) if Path(file).is_absolute() else root / file


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Lower-case hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------
# The bundle.


@dataclass(frozen=True)
class Bundle:
    """A bundle read from its folder: models by role, default edit settings, example images, provenance."""

    name: str  # Bundle name (bundle.json 'name', else the folder name).
    root: Path  # The bundle folder; model files are relative to it.
    models: dict[str, ModelSpec]  # Role -> model record.
    defaults: EditDefaults  # Default edit settings.
    example_images: list[Path]  # Absolute paths of the example images.
    provenance: dict[str, Any]  # Where the weights come from (free-form).
    domain: DomainRecord | None = None  # Photos the models know, the domain score's range; None = no check.
    # sha256 checks already passed: role -> (path, size, mtime_ns) of the file as verified.
    _verified: dict[str, tuple[str, int, int]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def has(self, role: str) -> bool:
        """Whether the bundle has a model for `role`."""
        return role in self.models

    def spec(self, role: str) -> ModelSpec:
        """The model record of `role`; BundleError naming the roles present if there is none."""
        if role not in self.models:
            raise BundleError(f"bundle {self.name!r} has no {role!r} model; it has {list(self.models)}")
        return self.models[role]

    def path(self, role: str) -> Path | None:
        """Absolute path of the model file of `role` (None for a clip named only by a pretrained tag)."""
        spec = self.spec(role)
        return _resolve(self.root, spec.file) if spec.file is not None else None

    def verify(self, role: str) -> None:
        """Check the sha256 of `role`'s file if bundle.json records one; a passed check is remembered
        until the file's size or modification time changes."""
        spec, path = self.spec(role), self.path(role)
        if spec.sha256 is None or path is None:
            return
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise BundleNotFoundError(f"bundle {self.name!r}: the {role} model file {path} does not exist") from None
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if self._verified.get(role) == key:
            return
        actual = sha256_file(path)
        if actual != spec.sha256:
            raise ChecksumError(
                f"bundle {self.name!r}: the {role} model file {path} has sha256 {actual}, but {BUNDLE_FILE} "
                f"records {spec.sha256}; the file is corrupt or was replaced (download it again)"
            )
        self._verified[role] = key
        logger.debug("sha256 of %s verified", path)

    def load(self, role: str, device: torch.device | str = "cpu") -> nn.Module:
        """The frozen, ready module of `role` on `device`, loaded by its format's loader after the sha256 check."""
        self.verify(role)
        return load_model(role, self.spec(role), self.root, device)

    def to_dict(self) -> dict[str, Any]:
        """bundle.json content."""
        return _bundle_dict(
            self.name, self.models, self.defaults, self.provenance, self._relative_examples(), self.domain
        )

    def _relative_examples(self) -> list[str]:
        return [_relative_to(self.root, p) for p in self.example_images]


def _relative_to(root: Path, path: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _bundle_dict(
    name: str,
    models: Mapping[str, ModelSpec],
    defaults: EditDefaults,
    provenance: Mapping[str, Any],
    example_images: list[str],
    domain: DomainRecord | None = None,
) -> dict[str, Any]:
    data = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "models": {role: dataclasses.asdict(spec) for role, spec in models.items()},
        "defaults": defaults.to_dict(),
        "example_images": example_images,
        "provenance": dict(provenance),
    }
    if domain is not None:
        data["domain"] = domain.to_dict()
    return data


def ficekit_home() -> Path:
    """$FICEKIT_HOME, default ~/.cache/ficekit: where downloaded bundles live."""
    return Path(os.environ.get("FICEKIT_HOME") or Path.home() / ".cache" / "ficekit").expanduser()


def demo_bundle_dir() -> Path:
    """Folder of the shipped demo bundle: checkpoints/demo of this source tree (editable install or a
    checkout), else the `ficekit_checkpoints` package data of a regular install."""
    candidates = []
    source_root = Path(__file__).resolve().parent.parent
    if (source_root / "setup.py").is_file():
        candidates.append(source_root / "checkpoints" / "demo")
    spec = importlib.util.find_spec(DEMO_PACKAGE)  # locates the data package; runs no code of it
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "demo" for p in spec.submodule_search_locations]
    for folder in candidates:
        if (folder / BUNDLE_FILE).is_file():
            return folder
    looked = ", ".join(str(c) for c in candidates) or f"no {DEMO_PACKAGE} package is installed"
    raise BundleNotFoundError(
        f"the demo bundle is not in this installation (looked in: {looked}); reinstall ficekit from a checkout "
        f"that has checkpoints/demo/, train one with `python -m ficekit.synthetic.train --out checkpoints/demo`, "
        f"or pass a bundle folder"
    )


def _locate(name_or_path: str | os.PathLike) -> Path:
    """bundle.json path for a bundle name or a folder / bundle.json path."""
    if isinstance(name_or_path, str) and name_or_path == "demo":
        return demo_bundle_dir() / BUNDLE_FILE
    if isinstance(name_or_path, str) and name_or_path == "fice":
        folder = ficekit_home() / "fice"
        if not (folder / BUNDLE_FILE).is_file():
            unfinished = folder.is_dir() and any(folder.iterdir())
            raise BundleNotFoundError(
                f"the fice bundle is not downloaded ({folder / BUNDLE_FILE} does not exist); fetch it with "
                f"`python -m ficekit.download fice{' --force' if unfinished else ''}` (set FICEKIT_HOME to keep "
                f"it elsewhere){'; the folder holds files of an unfinished download' if unfinished else ''}"
            )
        return folder / BUNDLE_FILE
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / BUNDLE_FILE).is_file():
            raise BundleNotFoundError(f"{path} is a folder without a {BUNDLE_FILE}; not a bundle")
        return path / BUNDLE_FILE
    if path.is_file():
        return path
    if isinstance(name_or_path, str) and os.sep not in name_or_path and "/" not in name_or_path:
        raise BundleNotFoundError(
            f"unknown bundle {name_or_path!r}: known names are {list(KNOWN_BUNDLES)}, or give the path of a "
            f"bundle folder (or of its {BUNDLE_FILE})"
        )
    raise BundleNotFoundError(f"bundle folder not found: {path}")


def load_bundle(name_or_path: str | os.PathLike) -> Bundle:
    """Read a bundle: 'demo', 'fice', or the path of a bundle folder or its bundle.json.

    Checks the record (roles, formats, kwargs) and that every model file and example image exists; model
    files are read (and sha256-checked) only by Bundle.load. Raises BundleNotFoundError (a
    FileNotFoundError) for anything missing and BundleError (a ValueError) for a malformed bundle.json.
    """
    json_path = _locate(name_or_path)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise BundleError(f"{json_path} is not UTF-8 text ({e})") from e
    except json.JSONDecodeError as e:
        raise BundleError(f"{json_path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from e
    try:
        bundle = _parse(data, json_path.parent)
    except BundleError as e:
        raise type(e)(f"{json_path}: {e}") from e
    except BundleNotFoundError as e:
        raise BundleNotFoundError(f"{json_path}: {e}") from e
    logger.debug("read bundle %r from %s", bundle.name, json_path)
    return bundle


_TOP_KEYS = ("format_version", "name", "models", "defaults", "example_images", "provenance", "domain")
_MODEL_KEYS = ("file", "format", "kwargs", "sha256")


def _parse(data: Any, root: Path) -> Bundle:
    """A Bundle from bundle.json content, validated; files must exist under `root`."""
    if not isinstance(data, Mapping):
        raise BundleError(f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise BundleError(f"unknown key(s) {unknown}; known: {list(_TOP_KEYS)}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"format_version is {version!r}; this ficekit reads version {FORMAT_VERSION}")
    name = data.get("name", root.name)
    if not isinstance(name, str) or not name:
        raise BundleError(f"name must be a non-empty string, got {name!r}")
    raw_models = data.get("models")
    if not isinstance(raw_models, Mapping):
        raise BundleError(f"'models' must be an object role -> model, got {type(raw_models).__name__}")
    models: dict[str, ModelSpec] = {}
    for role, entry in raw_models.items():
        if role not in ROLES:
            raise BundleError(f"unknown model role {role!r}; known roles: {list(ROLES)}")
        if not isinstance(entry, Mapping):
            raise BundleError(f"{role}: expected an object with {list(_MODEL_KEYS)}, got {type(entry).__name__}")
        bad = sorted(set(entry) - set(_MODEL_KEYS))
        if bad or "format" not in entry or "file" not in entry:
            raise BundleError(
                f"{role}: expected keys {list(_MODEL_KEYS)} ('file' and 'format' required), got {list(entry)}"
            )
        models[role] = ModelSpec(entry["file"], entry["format"], entry.get("kwargs") or {}, entry.get("sha256"))
    _check_models(models, root)

    raw_defaults = data.get("defaults") or {}
    if not isinstance(raw_defaults, Mapping):
        raise BundleError(f"defaults must be an object, got {type(raw_defaults).__name__}")
    try:
        defaults = EditDefaults.from_dict(raw_defaults)
    except (TypeError, ValueError) as e:
        raise BundleError(f"defaults: {e}") from e

    raw_examples = data.get("example_images") or []
    if not isinstance(raw_examples, list) or not all(isinstance(p, str) and p for p in raw_examples):
        raise BundleError(f"example_images must be a list of paths, got {raw_examples!r}")
    examples = [_resolve(root, p) for p in raw_examples]
    for path in examples:
        if not path.is_file():
            raise BundleNotFoundError(f"example image {path} does not exist")
    provenance = data.get("provenance") or {}
    if not isinstance(provenance, Mapping):
        raise BundleError(f"provenance must be an object, got {type(provenance).__name__}")
    return Bundle(name, root.resolve(), models, defaults, examples, dict(provenance), _parse_domain(data.get("domain")))


def _parse_domain(raw: Any) -> DomainRecord | None:
    """bundle.json's optional `domain` record; BundleError naming the bad field."""
    if raw is None:
        return None
    try:
        return DomainRecord.from_dict(raw)
    except DomainRecordError as e:
        raise BundleError(str(e)) from e


def _check_models(models: Mapping[str, ModelSpec], root: Path) -> None:
    """Every record valid, every required role present, every named file there."""
    for role, spec in models.items():
        _check_spec(role, spec)
    missing = [r for r in REQUIRED_ROLES if r not in models]
    if missing:
        raise BundleError(f"no model for role(s) {missing}; a bundle needs {list(REQUIRED_ROLES)}")
    for role, spec in models.items():
        if spec.file is not None and not _resolve(root, spec.file).is_file():
            raise BundleNotFoundError(f"the {role} model file {_resolve(root, spec.file)} does not exist")


# ---------------------------------------------------------------------------------------------------
# Writing bundles.


def write_bundle(
    folder: str | os.PathLike,
    models: Mapping[str, ModelSpec],
    defaults: EditDefaults | None = None,
    provenance: Mapping[str, Any] | None = None,
    example_images: Iterable[str | os.PathLike] = (),
    name: str | None = None,
    overwrite: bool = False,
    domain: DomainRecord | None = None,
) -> Bundle:
    """Write `folder`/bundle.json atomically for model files already in `folder`, and return the Bundle.

    Model files and example images are paths relative to `folder` (absolute paths inside it are made
    relative). `domain` is the optional domain record (ficekit.domain). Validates everything first; refuses
    to replace an existing bundle.json unless `overwrite`.
    """
    root = Path(folder)
    target = root / BUNDLE_FILE
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; refusing to overwrite it (pass overwrite=True)")
    examples = [
        _relative_to(root.resolve(), Path(p).resolve()) if Path(p).is_absolute() else str(p) for p in example_images
    ]
    data = _bundle_dict(
        name or root.resolve().name, models, defaults or EditDefaults(), provenance or {}, examples, domain
    )
    _parse(json.loads(json.dumps(data)), root)  # the same checks as reading, on exactly what is written
    root.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return load_bundle(root)


def write_domain(name_or_path: str | os.PathLike, domain: DomainRecord | None) -> Bundle:
    """Set (or, with None, remove) the `domain` record of an existing bundle's bundle.json, atomically, leaving
    every other key exactly as written; returns the bundle read back."""
    json_path = _locate(name_or_path)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise BundleError(f"{json_path}: expected a JSON object, got {type(data).__name__}")
    data.pop("domain", None)
    if domain is not None:
        data["domain"] = domain.to_dict()
    _parse(json.loads(json.dumps(data)), json_path.parent)
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(json_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return load_bundle(json_path)
