"""StyleGAN2's two custom ops, bias_act and upfirdn2d: CUDA kernels plus a pure-torch reference path.

The CUDA kernels are compiled on first use (never at import) with torch.utils.cpp_extension and
ninja; `python -m stylegan2_ops build` compiles them ahead of time.
"""

from ._dispatch import default_impl
from .bias_act import activation_funcs, bias_act, bias_act_ref
from .upfirdn2d import (
    downsample2d,
    filter2d,
    filter_size,
    parse_padding,
    setup_filter,
    upfirdn2d,
    upfirdn2d_ref,
    upsample2d,
)

__all__ = [
    "activation_funcs",
    "bias_act",
    "bias_act_ref",
    "default_impl",
    "downsample2d",
    "filter2d",
    "filter_size",
    "parse_padding",
    "setup_filter",
    "upfirdn2d",
    "upfirdn2d_ref",
    "upsample2d",
]
