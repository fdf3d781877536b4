"""Random bundles: every role's real file format with randomly initialised weights (editor tests, benchmarks).

    write_random_bundle("/tmp/tiny", "tiny")   # 32-px generator and small networks, seconds to write
    write_random_bundle("/tmp/fice", "fice")   # FICE's architectures (about 2 GB)
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ficekit.bundle import BUNDLE_FILE, Bundle, EditDefaults, ModelSpec, build_parser_network, sha256_file, write_bundle
from ficekit.checkpoint_io import atomic_write
from ficekit.encoder import Encoder4Editing, save_e4e
from ficekit.generator import Generator, save_generator
from ficekit.perception.clip import build_open_clip_model
from ficekit.perception.densepose import DensePoseChartModel
from ficekit.perception.densepose_checkpoint import save_detectron2_pkl
from ficekit.perception.segmenter import (
    FICE_LABELS,
    build_fice_deeplab,
)

logger = logging.getLogger(__name__)

# ficekit's own parsing label names (those of the synthetic world; masking.PARSER_ROLES reads them).
RANDOM_PARSER_LABELS: dict[str, int] = {
    "background": 0, "head": 1, "hair": 2, "upper_garment": 3, "lower_garment": 4, "dress": 5, "outerwear": 6,
    "arms": 7, "hands": 8, "legs": 9, "shoes": 10,
}  # fmt: skip
RANDOM_PARSER_GROUPS: dict[str, list[str]] = {"garments": ["upper_garment", "lower_garment", "dress", "outerwear"]}

# preset -> architecture of every role (constructor kwargs).
RANDOM_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "generator": {
            "z_dim": 32, "w_dim": 32, "c_dim": 0, "img_resolution": 32, "img_channels": 3,
            "mapping_kwargs": {"num_layers": 2}, "synthesis_kwargs": {"channel_base": 512, "channel_max": 32},
        },
        "encoder": {"gan_size": 32, "units": [1, 1, 2, 1], "channels": [16, 16, 32, 32], "w_dim": 32, "input_size": 32},
        "densepose": {
            "depth": 18, "stem_out_channels": 8, "res2_out_channels": 8, "fpn_channels": 16, "decoder_conv_dims": 16,
            "decoder_num_classes": 16, "head_num_convs": 2, "head_conv_dim": 16, "pooler_resolution": 7,
        },
        "segmenter": {"type": "lraspp_mobilenet_v3_large"},
        "parser": {"type": "lraspp_mobilenet_v3_large"},
        "clip": {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
        },
    },
    "fice": {
        "generator": {
            "z_dim": 512, "w_dim": 512, "c_dim": 0, "img_resolution": 256, "img_channels": 3,
            "mapping_kwargs": {"num_layers": 8},
            "synthesis_kwargs": {"channel_base": 16384, "channel_max": 512, "num_fp16_res": 4, "conv_clamp": 256},
        },
        "encoder": {"gan_size": 256, "num_layers": 50, "w_dim": 512},
        "densepose": "R_50_FPN_s1x",
        "segmenter": None,  # FICE's own DeepLabV3-ResNet50
        "parser": {"type": "deeplabv3_resnet50"},
        "clip": "RN50x4",
    },
}  # fmt: skip
EXAMPLE_IMAGE = "examples/person.png"


def write_random_bundle(folder: str | os.PathLike, preset: str = "tiny", seed: int = 0) -> Bundle:
    """Write a bundle of randomly initialised models of every role, in their real file formats.

    'tiny': 32-px generator and small versions of every network (fast; for tests). 'fice': FICE's
    architectures (256-px StyleGAN2 with channel_base 16384, e4e IR-SE-50, DensePose R_50_FPN_s1x, DeepLabV3
    segmenter, CLIP RN50x4; about 2 GB). Includes a procedural 256-px example image. Deterministic in
    `seed`; the global RNG state is left as it was. Refuses to replace any existing file.
    """
    if preset not in RANDOM_PRESETS:
        raise ValueError(f"preset must be one of {sorted(RANDOM_PRESETS)}, got {preset!r}")
    arch = RANDOM_PRESETS[preset]
    root = Path(folder)
    names = {
        "generator": "generator.pt", "encoder": "e4e.pt", "densepose": "densepose.pkl",
        "segmenter": "segmentator.pt", "parser": "parser.pt", "clip": "clip.pt",
    }  # fmt: skip
    existing = [p for p in [BUNDLE_FILE, EXAMPLE_IMAGE, *names.values()] if (root / p).exists()]
    if existing:
        raise FileExistsError(f"{root} already holds {existing}; write_random_bundle replaces nothing")
    (root / EXAMPLE_IMAGE).parent.mkdir(parents=True, exist_ok=True)

    models: dict[str, ModelSpec] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(**arch["generator"]).eval()
        with torch.no_grad():  # a realistic mean w for truncation and e4e's start point
            z = torch.randn(1000, G.z_dim)
            G.mapping.w_avg.copy_(G.mapping(z, skip_w_avg_update=True)[:, 0].mean(0))
        save_generator(G, root / names["generator"])
        models["generator"] = ModelSpec(names["generator"], "fice")

        encoder = Encoder4Editing(**arch["encoder"]).eval()
        encoder.latent_avg.copy_(G.mapping.w_avg.view(1, 1, -1).expand_as(encoder.latent_avg))
        atomic_write(root / names["encoder"], lambda tmp: save_e4e(encoder, tmp))
        models["encoder"] = ModelSpec(names["encoder"], "e4e")

        densepose = DensePoseChartModel(arch["densepose"])
        atomic_write(root / names["densepose"], lambda tmp: save_detectron2_pkl(densepose, tmp, "ficekit.random_bundle.write_random_bundle"))
        config = arch["densepose"] if isinstance(arch["densepose"], str) else densepose.config.to_dict()
        models["densepose"] = ModelSpec(names["densepose"], "detectron2", {"config": config})

        seg_arch = arch["segmenter"]
        seg_net = build_fice_deeplab() if seg_arch is None else build_parser_network(seg_arch, len(FICE_LABELS))
        fice_state = {f"model.{k}": v for k, v in seg_net.state_dict().items()} | {"loss.weight": torch.ones(3)}
        atomic_write(root / names["segmenter"], lambda tmp: torch.save({"state": fice_state}, tmp))
        models["segmenter"] = ModelSpec(
            names["segmenter"], "fice_deeplab", {} if seg_arch is None else {"architecture": seg_arch}
        )

        parser_net = build_parser_network(arch["parser"], len(RANDOM_PARSER_LABELS))
        atomic_write(root / names["parser"], lambda tmp: torch.save({"state": parser_net.state_dict()}, tmp))
        parser_kwargs = {
            "labels": RANDOM_PARSER_LABELS, "input_kind": "imagenet", "architecture": arch["parser"],
            "groups": RANDOM_PARSER_GROUPS,
        }  # fmt: skip
        models["parser"] = ModelSpec(names["parser"], "parser", parser_kwargs)

        clip_kwargs: dict[str, Any]
        if isinstance(arch["clip"], str):
            import open_clip

            clip_kwargs = {"model_name": arch["clip"], "quick_gelu": True}
            clip_model = build_open_clip_model(open_clip.get_model_config(arch["clip"]), quick_gelu=True)
        else:
            clip_kwargs = {"model_name": f"{preset}-clip", "model_config": arch["clip"]}
            clip_model = build_open_clip_model(arch["clip"])
        atomic_write(root / names["clip"], lambda tmp: torch.save(clip_model.state_dict(), tmp))
        models["clip"] = ModelSpec(names["clip"], "open_clip", clip_kwargs)

    atomic_write(root / EXAMPLE_IMAGE, lambda tmp: _example_person(256).save(tmp, format="PNG"))
    models = {role: dataclasses.replace(spec, sha256=sha256_file(root / spec.file)) for role, spec in models.items()}
    provenance = {
        "kind": "random weights (real formats); for tests and benchmarks, not for editing",
        "created_by": "ficekit.random_bundle.write_random_bundle",
        "preset": preset,
        "seed": seed,
        "torch": torch.__version__,
    }
    return write_bundle(root, models, EditDefaults(), provenance, [EXAMPLE_IMAGE], name=f"random-{preset}")


def _example_person(size: int) -> Any:
    """A procedural 'person' on a gradient background (PIL RGB image); only for exercising the mechanics."""
    from PIL import Image

    s = size / 256  # shapes are drawn in a 256-px frame
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    yy, xx = yy / s, (xx - size / 2) / s  # 256-px frame, x measured from the centre line
    t = (yy / 256).unsqueeze(-1)
    img = torch.tensor([0.86, 0.88, 0.92]) * (1 - t) + torch.tensor([0.70, 0.72, 0.78]) * t  # [H, W, 3]

    def ellipse(cy: float, ry: float, rx: float) -> torch.Tensor:
        return ((yy - cy) / ry) ** 2 + (xx / rx) ** 2 <= 1

    def trapezoid(y0: float, y1: float, half0: float, half1: float, dx: float = 0) -> torch.Tensor:
        half = half0 + (half1 - half0) * ((yy - y0) / (y1 - y0)).clamp(0, 1)
        return (yy >= y0) & (yy <= y1) & ((xx - dx).abs() <= half)

    skin, hair, shirt, trousers, shoes = (
        (0.87, 0.72, 0.6),
        (0.25, 0.17, 0.12),
        (0.2, 0.45, 0.75),
        (0.18, 0.2, 0.28),
        (0.1, 0.1, 0.1),
    )
    layers = [
        (trapezoid(80, 150, 9, 7, -46) | trapezoid(80, 150, 9, 7, 46), skin),  # arms
        (trapezoid(150, 230, 13, 11, -15) | trapezoid(150, 230, 13, 11, 15), trousers),  # legs
        (trapezoid(228, 240, 15, 17, -17) | trapezoid(228, 240, 15, 17, 17), shoes),
        (trapezoid(72, 158, 38, 34), shirt),  # torso
        (trapezoid(62, 76, 7, 9), skin),  # neck
        (ellipse(44, 24, 22), hair),
        (ellipse(48, 20, 17), skin),  # face
    ]
    for region, rgb in layers:
        img[region] = torch.tensor(rgb)
    return Image.fromarray((img.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
