"""Converting rosinality stylegan2-pytorch generator weights (`g_ema`) to NVlabs names and layout.

rosinality's Generator(size, style_dim, n_mlp, channel_multiplier) computes the same function as
NVlabs' skip generator with channel_base = 16384 * channel_multiplier, no conv clamp and no fp16
(its modulated conv folds the 1/sqrt(fan_in) scale into the weight before demodulation, which
differs only inside the 1e-8 epsilon). The architecture is not stored with the weights, so it is
inferred from the tensor shapes.
"""

from __future__ import annotations

import math
import re

import torch

_STYLE_KEY = re.compile(r"^style\.(\d+)\.weight$")


def infer_generator_kwargs(state: dict[str, torch.Tensor]) -> dict:
    """NVlabs Generator init kwargs that reproduce a rosinality `g_ema` state dict."""
    style_layers = sorted(int(m.group(1)) for k in state if (m := _STYLE_KEY.match(k)))
    if not style_layers:
        raise ValueError("no mapping layers ('style.N.weight') found")
    style_dim = int(state[f"style.{style_layers[0]}.weight"].shape[1])
    num_convs = len([k for k in state if re.match(r"^convs\.\d+\.conv\.weight$", k)])
    log_size = num_convs // 2 + 2
    resolution = 2**log_size
    img_channels = int(state["to_rgb1.conv.weight"].shape[1])
    # Channels at 64 px (out channels of convs.6, the first conv at 64 px) are 256 * channel_multiplier.
    if resolution >= 64:
        channel_base = int(state["convs.6.conv.weight"].shape[1]) * 64
    else:
        channel_base = 16384 * 2  # all channels are capped at 512 below 64 px; any base >= 512 * res works
    channel_max = int(state["conv1.conv.weight"].shape[1])
    return dict(
        z_dim=style_dim, c_dim=0, w_dim=style_dim, img_resolution=resolution, img_channels=img_channels,
        mapping_kwargs=dict(num_layers=len(style_layers)),
        synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max, num_fp16_res=0, conv_clamp=None),
    )


def _conv_layer(state: dict, src: str, dst: str, out: dict) -> None:
    """A StyledConv (modulated conv + noise + fused lrelu bias) -> NVlabs SynthesisLayer."""
    out[f"{dst}.weight"] = state[f"{src}.conv.weight"].squeeze(0)
    out[f"{dst}.affine.weight"] = state[f"{src}.conv.modulation.weight"]
    out[f"{dst}.affine.bias"] = state[f"{src}.conv.modulation.bias"]
    out[f"{dst}.noise_strength"] = state[f"{src}.noise.weight"].reshape([])
    out[f"{dst}.bias"] = state[f"{src}.activate.bias"]


def _torgb_layer(state: dict, src: str, dst: str, out: dict) -> None:
    out[f"{dst}.weight"] = state[f"{src}.conv.weight"].squeeze(0)
    out[f"{dst}.affine.weight"] = state[f"{src}.conv.modulation.weight"]
    out[f"{dst}.affine.bias"] = state[f"{src}.conv.modulation.bias"]
    out[f"{dst}.bias"] = state[f"{src}.bias"].reshape(-1)


def convert_state_dict(state: dict[str, torch.Tensor], kwargs: dict) -> dict[str, torch.Tensor]:
    """Rename and reshape a rosinality `g_ema` state dict into NVlabs Generator names.

    Resample filters are not part of rosinality's weights; the caller keeps the constructed ones.
    A missing source key raises KeyError naming it.
    """
    out: dict[str, torch.Tensor] = {}
    for idx in range(kwargs["mapping_kwargs"]["num_layers"]):
        out[f"mapping.fc{idx}.weight"] = state[f"style.{idx + 1}.weight"]
        out[f"mapping.fc{idx}.bias"] = state[f"style.{idx + 1}.bias"]

    log_size = int(math.log2(kwargs["img_resolution"]))
    out["synthesis.b4.const"] = state["input.input"].squeeze(0)
    _conv_layer(state, "conv1", "synthesis.b4.conv1", out)
    _torgb_layer(state, "to_rgb1", "synthesis.b4.torgb", out)
    for i, log_res in enumerate(range(3, log_size + 1)):
        res = 2**log_res
        _conv_layer(state, f"convs.{2 * i}", f"synthesis.b{res}.conv0", out)
        _conv_layer(state, f"convs.{2 * i + 1}", f"synthesis.b{res}.conv1", out)
        _torgb_layer(state, f"to_rgbs.{i}", f"synthesis.b{res}.torgb", out)

    # Constant noise: noise_0 is b4.conv1, then two per resolution (conv0, conv1).
    out["synthesis.b4.conv1.noise_const"] = state["noises.noise_0"].reshape(4, 4)
    for i, log_res in enumerate(range(3, log_size + 1)):
        res = 2**log_res
        out[f"synthesis.b{res}.conv0.noise_const"] = state[f"noises.noise_{2 * i + 1}"].reshape(res, res)
        out[f"synthesis.b{res}.conv1.noise_const"] = state[f"noises.noise_{2 * i + 2}"].reshape(res, res)
    return out
