"""Segmentation-network architectures a parser checkpoint can be built into, by name (bundle.json's
"architecture": {"type": name, ...options}); the parser loader and the parser trainer both build from here.

Every builder makes random weights and downloads nothing (torchvision's 'weights' options are refused).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ficekit.perception.small_unet import SmallUNet

# To add an architecture: a function (num_classes, **options) -> nn.Module returning logits
# [N, C, H, W] or a dict with them under 'out', built with random weights and downloading nothing; add it
# here under a new name. A bundle then names it: "architecture": {"type": "<name>", ...options}.


def _torchvision_segmentation(name: str, allowed: tuple[str, ...]) -> Callable[..., nn.Module]:
    def build(num_classes: int, **options: Any) -> nn.Module:
        # torchvision ignores unknown kwargs (and 'weights' would download): accept only the named options.
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(f"{name} takes the option(s) {list(allowed)}, got {unknown}")
        from torchvision.models import segmentation

        constructor = getattr(segmentation, name)
        return constructor(weights=None, weights_backbone=None, num_classes=num_classes, **options)

    build.__doc__ = f"torchvision.models.segmentation.{name} with random weights (options: {list(allowed)})."
    return build


def _small_unet(num_classes: int, **options: Any) -> nn.Module:
    """ficekit.perception.small_unet.SmallUNet (options: in_channels, base_channels, depth)."""
    return SmallUNet(num_classes, **options)


PARSER_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "deeplabv3_resnet50": _torchvision_segmentation("deeplabv3_resnet50", ("aux_loss",)),
    "lraspp_mobilenet_v3_large": _torchvision_segmentation("lraspp_mobilenet_v3_large", ()),
    "fcn_resnet50": _torchvision_segmentation("fcn_resnet50", ("aux_loss",)),
    "small_unet": _small_unet,  # compact U-Net, fast on a CPU (the demo bundle's parser)
}


def build_parser_network(architecture: Mapping[str, Any], num_classes: int) -> nn.Module:
    """A segmentation network with random weights from {'type': name in PARSER_ARCHITECTURES, **options}."""
    check_architecture(architecture)
    options = {k: v for k, v in architecture.items() if k != "type"}
    try:
        return PARSER_ARCHITECTURES[architecture["type"]](num_classes, **options)
    except (TypeError, ValueError) as e:
        raise ValueError(f"architecture {dict(architecture)} cannot be built: {e}") from e


def check_architecture(architecture: Any) -> None:
    if not isinstance(architecture, Mapping) or architecture.get("type") not in PARSER_ARCHITECTURES:
        raise ValueError(
            f"architecture must be a dict {{'type': one of {sorted(PARSER_ARCHITECTURES)}, ...options}}, "
            f"got {architecture!r}"
        )
