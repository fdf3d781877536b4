"""CUDA path of bias_act and upfirdn2d against the reference path: values, first and second derivatives.

Every test runs on two backends:
- 'cuda' (marked gpu): the real extension on a GPU, through the public API with impl='cuda'.
- 'emulated' (marked nvcc): the same kernel sources (csrc/*_kernel.cuh) compiled for the host with a
  one-thread grid, behind a Python mirror of the binding (csrc/ops.cpp). It runs the autograd
  Functions, the kernels' arithmetic and their indexing on machines without a GPU; only the launch
  configuration and the binding's C++ are left to the 'cuda' backend.
"""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import stylegan2_ops
from stylegan2_ops import _build, _dispatch
from stylegan2_ops.bias_act import activation_funcs

ACTS = sorted(activation_funcs)
DTYPES = [torch.float16, torch.float32]
REL_TOL = {torch.float16: 1.5e-2, torch.float32: 2e-5, torch.float64: 1e-10}

# ------------------------------------------------------------------------------------------------
# Host emulation of the kernels.

_HARNESS = r"""
// Host emulation of the stylegan2_ops CUDA kernels (tests only).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#undef __global__
#undef __device__
#undef __forceinline__
#define __global__
#define __device__
#define __forceinline__ inline
#define __ldg(p) (*(p))
using std::max;
using std::min;
namespace {
struct EmuDim { unsigned int x, y, z; };
const EmuDim emu_zero = {0, 0, 0};
const EmuDim emu_one = {1, 1, 1};
}  // namespace
#define blockIdx emu_zero
#define threadIdx emu_zero
#define blockDim emu_one
#define gridDim emu_one
#include "bias_act_kernel.cuh"
#include "upfirdn2d_kernel.cuh"

using namespace stylegan2_ops;

template <typename T> static int run_bias_act(const BiasActParams& p) {
    switch (p.act) {
        case 1: bias_act_kernel<T, 1>(p); return 0;
        case 2: bias_act_kernel<T, 2>(p); return 0;
        case 3: bias_act_kernel<T, 3>(p); return 0;
        case 4: bias_act_kernel<T, 4>(p); return 0;
        case 5: bias_act_kernel<T, 5>(p); return 0;
        case 6: bias_act_kernel<T, 6>(p); return 0;
        case 7: bias_act_kernel<T, 7>(p); return 0;
        case 8: bias_act_kernel<T, 8>(p); return 0;
        case 9: bias_act_kernel<T, 9>(p); return 0;
    }
    return -1;
}

extern "C" int emu_bias_act(int dtype, const void* x, const void* b, const void* xref, const void* yref,
                            const void* dy, void* y, int64_t n, int64_t step_b, int64_t size_b, int grad, int act,
                            double alpha, double gain, double clamp) {
    const BiasActParams p{x, b, xref, yref, dy, y, n, step_b, size_b, grad, act, alpha, gain, clamp};
    switch (dtype) {
        case 0: return run_bias_act<__half>(p);
        case 1: return run_bias_act<float>(p);
        case 2: return run_bias_act<double>(p);
    }
    return -1;
}

extern "C" int emu_upfirdn2d(int dtype, const void* x, const float* f, void* y, int n, int c, int in_h, int in_w,
                             int out_h, int out_w, const int64_t* in_stride, const int64_t* out_stride,
                             int channels_last, int fh, int fw, int upx, int upy, int downx, int downy, int padx0,
                             int pady0, int flip, double gain) {
    Upfirdn2dParams p;
    p.x = x; p.f = f; p.y = y; p.n = n; p.c = c; p.in_h = in_h; p.in_w = in_w; p.out_h = out_h; p.out_w = out_w;
    for (int d = 0; d < 4; ++d) { p.in_stride[d] = in_stride[d]; p.out_stride[d] = out_stride[d]; }
    p.channels_last = channels_last; p.fh = fh; p.fw = fw; p.upx = upx; p.upy = upy; p.downx = downx;
    p.downy = downy; p.padx0 = padx0; p.pady0 = pady0; p.flip = flip; p.gain = gain;
    const int64_t total = int64_t(n) * c * out_h * out_w;
    switch (dtype) {
        case 0: upfirdn2d_kernel<__half>(p, total); return 0;
        case 1: upfirdn2d_kernel<float>(p, total); return 0;
        case 2: upfirdn2d_kernel<double>(p, total); return 0;
    }
    return -1;
}
"""

_DTYPE_CODE = {torch.float16: 0, torch.float32: 1, torch.float64: 2}


def _non_overlapping_and_dense(t: torch.Tensor) -> bool:
    """Mirror of TensorImpl::is_non_overlapping_and_dense: some dimension order makes t contiguous."""
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape, strict=True) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


class EmulatedExtension:
    """The binding of csrc/ops.cpp, mirrored in Python, over the kernels compiled for the host."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        i64, dbl, ptr, i32 = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p, ctypes.c_int
        lib.emu_bias_act.argtypes = [i32, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i32, i32, dbl, dbl, dbl]
        lib.emu_upfirdn2d.argtypes = [i32, ptr, ptr, ptr] + [i32] * 6 + [ptr, ptr] + [i32] * 10 + [dbl]
        self.calls = {"bias_act": 0, "upfirdn2d": 0}

    @staticmethod
    def _ptr(t: torch.Tensor) -> int | None:
        return t.data_ptr() if t.numel() > 0 else None

    def bias_act(
        self, x: torch.Tensor, b: torch.Tensor, xref: torch.Tensor, yref: torch.Tensor, dy: torch.Tensor,
        grad: int, dim: int, act: int, alpha: float, gain: float, clamp: float,
    ) -> torch.Tensor:  # fmt: skip
        self.calls["bias_act"] += 1
        assert x.device.type == "cpu" and x.dtype in _DTYPE_CODE
        assert grad in (0, 1, 2) and 1 <= act <= 9
        if grad > 0:  # the binding's TORCH_CHECKs: a Function that saves too little fails here
            if act == 2 or 4 <= act <= 8:
                assert yref.numel() > 0, "this activation's gradient needs yref"
            if act == 3:
                assert xref.numel() > 0 or yref.numel() > 0, "lrelu's gradient needs xref or yref"
            if act == 9:
                assert xref.numel() > 0, "swish's gradient needs xref"
            if clamp >= 0:
                assert yref.numel() > 0, "a clamped gradient needs yref"
        if not _non_overlapping_and_dense(x):
            x = x.contiguous()

        def like_x(t: torch.Tensor) -> torch.Tensor:
            if t.numel() == 0:
                return t
            assert t.shape == x.shape and t.dtype == x.dtype
            if t.stride() == x.stride():
                return t
            u = torch.empty_like(x)
            u.copy_(t)
            return u

        xref, yref, dy = like_x(xref), like_x(yref), like_x(dy)
        step_b, size_b = 1, 1
        if b.numel() > 0:
            assert 0 <= dim < x.ndim and b.ndim == 1 and b.shape[0] == x.shape[dim] and b.dtype == x.dtype
            b = b.contiguous()
            size_b = x.shape[dim]
            step_b = x.stride(dim) if size_b > 1 else 1
        y = torch.empty_like(x)
        if x.numel() > 0:
            rc = self.lib.emu_bias_act(
                _DTYPE_CODE[x.dtype], x.data_ptr(), self._ptr(b), self._ptr(xref), self._ptr(yref), self._ptr(dy),
                y.data_ptr(), x.numel(), step_b, size_b, grad, act, alpha, gain, clamp,
            )  # fmt: skip
            assert rc == 0
        return y

    def upfirdn2d(
        self, x: torch.Tensor, f: torch.Tensor, upx: int, upy: int, downx: int, downy: int,
        padx0: int, padx1: int, pady0: int, pady1: int, flip: bool, gain: float,
    ) -> torch.Tensor:  # fmt: skip
        self.calls["upfirdn2d"] += 1
        assert x.device.type == "cpu" and x.ndim == 4 and x.dtype in _DTYPE_CODE
        assert f.ndim == 2 and f.dtype == torch.float32 and min(upx, upy, downx, downy) >= 1
        n, c, in_h, in_w = x.shape
        fh, fw = f.shape
        padded_h, padded_w = in_h * upy + pady0 + pady1, in_w * upx + padx0 + padx1
        assert padded_h >= fh and padded_w >= fw
        out_h, out_w = (padded_h - fh + downy) // downy, (padded_w - fw + downx) // downx
        f = f.contiguous()
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        y = torch.empty([n, c, out_h, out_w], dtype=x.dtype, memory_format=fmt)
        in_stride = (ctypes.c_int64 * 4)(*x.stride())
        out_stride = (ctypes.c_int64 * 4)(*y.stride())
        if y.numel() > 0:
            rc = self.lib.emu_upfirdn2d(
                _DTYPE_CODE[x.dtype], x.data_ptr(), f.data_ptr(), y.data_ptr(), n, c, in_h, in_w, out_h, out_w,
                in_stride, out_stride, int(y.stride(1) == 1 and c > 1), fh, fw, upx, upy, downx, downy, padx0,
                pady0, int(flip), gain,
            )  # fmt: skip
            assert rc == 0
        return y


@pytest.fixture(scope="module")
def emulation_library(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """The kernel headers compiled for the host with the C++ compiler and the CUDA toolkit's headers."""
    from torch.utils import cpp_extension

    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no host C++ compiler (g++) to build the kernel emulation")
    try:
        cuda_home = _build._cuda_home(cpp_extension.CUDA_HOME)
    except _build.BuildError as e:
        pytest.skip(f"no CUDA toolkit headers for the kernel emulation: {e}")
    folder = tmp_path_factory.mktemp("emulation")
    (folder / "harness.cpp").write_text(_HARNESS)
    lib = folder / "emulation.so"
    cmd = [cxx, "-std=c++17", "-O1", "-shared", "-fPIC", f"-I{_build.CSRC_DIR}", f"-I{Path(cuda_home) / 'include'}",
           str(folder / "harness.cpp"), "-o", str(lib)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"compiling the kernel emulation failed:\n{proc.stderr}"
    return ctypes.CDLL(str(lib))


@pytest.fixture(
    params=[
        pytest.param("cuda", marks=pytest.mark.gpu),
        pytest.param("emulated", marks=pytest.mark.nvcc),
    ]
)
def device(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> torch.device:
    """The device to run on; for 'emulated', impl='cuda' is routed to the host emulation."""
    if request.param == "cuda":
        from torch.utils import cpp_extension

        if not cpp_extension.is_ninja_available():
            pytest.skip("ninja is not installed: cannot build the CUDA kernels")
        try:
            _build._cuda_home(cpp_extension.CUDA_HOME)
        except _build.BuildError as e:
            pytest.skip(f"no CUDA toolkit to build the kernels: {e}")
        _build.get_extension(strict=True)  # a build failure fails the test, with the reason
        return torch.device("cuda")
    ext = EmulatedExtension(request.getfixturevalue("emulation_library"))

    def use_cuda(x: torch.Tensor, impl: str, op: str) -> bool:
        if impl not in _dispatch.IMPLS:
            raise ValueError(f"{op}: impl must be one of {_dispatch.IMPLS}, got {impl!r}")
        return impl != "ref"  # 'auto' picks the kernels, as it does for CUDA tensors

    monkeypatch.setattr(_dispatch, "use_cuda", use_cuda)
    monkeypatch.setattr(_build, "get_extension", lambda strict: ext)
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------------
# Comparison helpers.


def assert_close(
    actual: torch.Tensor | None, expected: torch.Tensor | None, what: str, tol: float | None = None
) -> None:
    """Max error relative to the largest expected magnitude (robust for half precision)."""
    assert actual is not None and expected is not None, f"{what}: missing gradient"
    assert actual.shape == expected.shape, f"{what}: shape {list(actual.shape)} != {list(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    tol = REL_TOL[expected.dtype] if tol is None else tol
    a, e = actual.double(), expected.double()
    assert torch.isfinite(a).all() == torch.isfinite(e).all(), f"{what}: non-finite values differ"
    scale = e.abs().max().item() if e.numel() else 0.0
    err = (a - e).abs().max().item() if e.numel() else 0.0
    assert err <= tol * max(scale, 1e-3), f"{what}: max error {err:.3g} vs scale {scale:.3g} (tol {tol})"


def grads(out: torch.Tensor, inputs: list[torch.Tensor], grad_out: torch.Tensor, create_graph: bool) -> list:
    return list(
        torch.autograd.grad(out, inputs, grad_out, create_graph=create_graph, allow_unused=True, materialize_grads=True)
    )


def compare_first_and_second_order(
    fn_cuda: Callable[..., torch.Tensor],
    fn_ref: Callable[..., torch.Tensor],
    inputs: list[torch.Tensor],
    names: list[str],
    tol_scale: float = 1.0,
) -> None:
    """Compare fn(*inputs), its VJP and the VJP's derivative (w.r.t. inputs and the cotangent)."""
    dtype = inputs[0].dtype
    tol1 = REL_TOL[dtype] * tol_scale
    gen = torch.Generator().manual_seed(1)
    leaves = {tag: [t.detach().clone().requires_grad_(True) for t in inputs] for tag in ("cuda", "ref")}
    outs = {"cuda": fn_cuda(*leaves["cuda"]), "ref": fn_ref(*leaves["ref"])}
    y_r = outs["ref"]
    assert_close(outs["cuda"].detach(), y_r.detach(), "value", tol1)

    w = torch.randn(y_r.shape, generator=gen, dtype=torch.float64).to(y_r)
    vs = [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t) for t in inputs]
    first, second = {}, {}
    for tag in ("cuda", "ref"):
        wt = w.clone().requires_grad_(True)
        g = grads(outs[tag], leaves[tag], wt, create_graph=True)
        first[tag] = [t.detach() for t in g]
        total = sum((gi * vi).sum() for gi, vi in zip(g, vs, strict=True))
        second[tag] = [t.detach() for t in grads(total, [*leaves[tag], wt], torch.ones_like(total), create_graph=False)]
    for name, a, e in zip(names, first["cuda"], first["ref"], strict=True):
        assert_close(a, e, f"d/d{name}", tol1 * 2)
    for name, a, e in zip([*names, "dy"], second["cuda"], second["ref"], strict=True):
        assert_close(a, e, f"second-order d/d{name}", tol1 * 4)


# ------------------------------------------------------------------------------------------------
# bias_act.


def _bias_act_inputs(
    shape: list[int], dim: int, act: str, dtype: torch.dtype, device: torch.device, with_bias: bool,
    alpha: float | None, gain: float | None, clamp: float | None, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Random x (and b) whose pre-clamp outputs stay clear of the clamp bound (where the derivative jumps)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    b = torch.randn([shape[dim]], generator=gen, dtype=torch.float64) if with_bias else None
    if clamp is not None:
        bb = 0 if b is None else b.reshape([-1 if i == dim else 1 for i in range(len(shape))])
        for z in (0.1, 0.3, -2.0, 3.0, None):  # move near elements to x + b = z, for the first z that is clear
            v = stylegan2_ops.bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain)
            near = (v.abs() - clamp).abs() < 0.05 * clamp
            if not near.any():
                break
            assert z is not None, "no input value clear of the clamp bound"
            x = torch.where(near, (z - bb) + torch.zeros_like(x), x)
    x = x.to(dtype=dtype, device=device)
    b = b.to(dtype=dtype, device=device) if b is not None else None
    return x, b


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("clamp", [None, 0.55])  # 0.55 rounds down in float16
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("act", ACTS)
def test_bias_act_matches_ref(
    device: torch.device, act: str, with_bias: bool, clamp: float | None, dtype: torch.dtype
) -> None:
    x, b = _bias_act_inputs([3, 5, 4, 3], 1, act, dtype, device, with_bias, None, None, clamp)
    inputs, names = ([x, b], ["x", "b"]) if b is not None else ([x], ["x"])

    def run(impl: str) -> Callable[..., torch.Tensor]:
        return lambda x, b=None: stylegan2_ops.bias_act(x, b, dim=1, act=act, clamp=clamp, impl=impl)

    compare_first_and_second_order(run("cuda"), run("ref"), inputs, names)


@pytest.mark.parametrize(
    "act, alpha, gain, clamp",
    [
        ("lrelu", 0.1, 1.5, None),
        ("lrelu", -0.3, None, None),  # negative slope: the gradient must come from x, not y's sign
        ("lrelu", 0.2, None, 0.55),
        ("tanh", None, -2.0, None),
        ("linear", None, 3.0, 0.55),
        ("swish", None, 0.5, 0.55),
        ("softplus", None, 0.0, None),
        ("selu", None, 2.0, None),
    ],
)
def test_bias_act_alpha_gain(
    device: torch.device, act: str, alpha: float | None, gain: float | None, clamp: float | None
) -> None:
    x, b = _bias_act_inputs([2, 6, 5], 1, act, torch.float32, device, True, alpha, gain, clamp)

    def run(impl: str) -> Callable[..., torch.Tensor]:
        return lambda x, b: stylegan2_ops.bias_act(x, b, 1, act, alpha=alpha, gain=gain, clamp=clamp, impl=impl)

    compare_first_and_second_order(run("cuda"), run("ref"), [x, b], ["x", "b"])


_VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "contiguous": lambda t: t,
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "transposed": lambda t: t.transpose(1, 3),  # dense, but in no standard layout
    "sliced": lambda t: t[:, :, 1:, ::2],  # not dense
    "expanded": lambda t: t[:1].expand(2, *t.shape[1:]),  # a stride-0 dimension
}


@pytest.mark.parametrize("dim", [0, 1, 3])
@pytest.mark.parametrize("layout", sorted(_VIEWS))
def test_bias_act_layouts(device: torch.device, layout: str, dim: int) -> None:
    """Bias along other dims, and inputs that are channels-last, permuted, sliced or expanded."""
    gen = torch.Generator().manual_seed(3)
    view = _VIEWS[layout]
    base = torch.randn([3, 4, 5, 6], generator=gen).to(device)
    b = torch.randn([view(base).shape[dim]], generator=gen).to(device)
    for act in ("lrelu", "swish", "tanh"):

        def run(impl: str, act: str = act) -> Callable[..., torch.Tensor]:
            return lambda base, b: stylegan2_ops.bias_act(view(base), b, dim, act, clamp=1.1, impl=impl)

        compare_first_and_second_order(run("cuda"), run("ref"), [base, b], ["x", "b"])


@pytest.mark.parametrize("act", ["relu", "lrelu", "elu", "selu", "softplus"])
def test_bias_act_at_kinks(device: torch.device, act: str) -> None:
    """x + b exactly 0 (and neighbours): the derivative picks the same side of the kink as torch."""
    b = torch.tensor([0.5, -1.0, 2.0], device=device)
    x = torch.tensor([[-0.5, 1.0, -2.0], [-0.25, 1.5, -1.0], [-0.75, 0.5, -3.0]], device=device)
    for dtype in (torch.float32, torch.float16):

        def run(impl: str) -> Callable[..., torch.Tensor]:
            return lambda x, b: stylegan2_ops.bias_act(x, b, 1, act, impl=impl)

        compare_first_and_second_order(run("cuda"), run("ref"), [x.to(dtype), b.to(dtype)], ["x", "b"])


def test_bias_act_float64_gradcheck(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(4)
    for act in ACTS:
        x = (torch.randn([2, 3, 4], generator=gen, dtype=torch.float64) * 2).to(device).requires_grad_()
        b = torch.randn([3], generator=gen, dtype=torch.float64).to(device).requires_grad_()

        def fn(x: torch.Tensor, b: torch.Tensor, act: str = act) -> torch.Tensor:
            return stylegan2_ops.bias_act(x, b, 1, act, clamp=2.5, impl="cuda")

        assert torch.autograd.gradcheck(fn, (x, b)), act
        assert torch.autograd.gradgradcheck(fn, (x, b)), act


def test_bias_act_identity_and_limits(device: torch.device) -> None:
    x = torch.randn([2, 3], device=device, requires_grad=True)
    assert stylegan2_ops.bias_act(x, impl="cuda") is x  # nothing to do, as in the reference path

    y = stylegan2_ops.bias_act(x, act="tanh", impl="cuda")
    (dx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (ddx,) = torch.autograd.grad(dx.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="beyond the second order"):
        torch.autograd.grad(ddx.sum(), x)


# ------------------------------------------------------------------------------------------------
# upfirdn2d.


def _filter(kind: str, gen: torch.Generator) -> torch.Tensor:
    """Asymmetric random filters, so that a flipped or transposed filter shows."""
    if kind == "sep4":
        return torch.rand([4], generator=gen) + 0.1
    if kind == "sep7":
        return torch.rand([7], generator=gen) + 0.1
    if kind == "2d3x4":
        return torch.rand([3, 4], generator=gen) + 0.1
    if kind == "2d1x1":
        return torch.rand([1, 1], generator=gen) + 0.5
    raise AssertionError(kind)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("flip", [False, True], ids=["conv", "corr"])
@pytest.mark.parametrize("fkind", ["sep4", "2d3x4"])
@pytest.mark.parametrize("down", [1, 2, 4])
@pytest.mark.parametrize("up", [1, 2, 4])
def test_upfirdn2d_matches_ref(
    device: torch.device, up: int, down: int, fkind: str, flip: bool, dtype: torch.dtype
) -> None:
    gen = torch.Generator().manual_seed(10 * up + down)
    f = _filter(fkind, gen).to(device)
    x = torch.randn([2, 3, 7, 9], generator=gen).to(device=device, dtype=dtype)
    padding = [2, -1, 1, 3] if up > 1 else [1, 2, -1, 2]  # mixed signs, unequal sides

    def run(impl: str) -> Callable[..., torch.Tensor]:
        return lambda x: stylegan2_ops.upfirdn2d(
            x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=1.7, impl=impl
        )

    compare_first_and_second_order(run("cuda"), run("ref"), [x], ["x"])


@pytest.mark.parametrize(
    "up, down, padding, fkind",
    [
        ((2, 1), (1, 3), [0, 0, 0, 0], "2d3x4"),  # different factors per axis
        ((1, 4), (2, 1), [3, 1, -2, 0], "sep4"),
        (1, 1, [-1, -2, -2, -1], "2d1x1"),  # pure crop
        (3, 2, [5, 4, 4, 5], "sep7"),  # odd up, long filter
        (1, 1, [0, 0, 0, 0], "2d3x4"),  # plain filtering, no padding
    ],
)
def test_upfirdn2d_more_cases(
    device: torch.device, up: int | tuple, down: int | tuple, padding: list[int], fkind: str
) -> None:
    gen = torch.Generator().manual_seed(5)
    f = _filter(fkind, gen).to(device)
    x = torch.randn([1, 2, 6, 5], generator=gen).to(device)

    def run(impl: str) -> Callable[..., torch.Tensor]:
        return lambda x: stylegan2_ops.upfirdn2d(x, f, up=up, down=down, padding=padding, impl=impl)

    compare_first_and_second_order(run("cuda"), run("ref"), [x], ["x"])


@pytest.mark.parametrize("layout", sorted(_VIEWS))
def test_upfirdn2d_layouts(device: torch.device, layout: str) -> None:
    gen = torch.Generator().manual_seed(6)
    view = _VIEWS[layout]
    base = torch.randn([2, 4, 8, 10], generator=gen).to(device)
    f = stylegan2_ops.setup_filter([1, 3, 3, 1], device=device)
    for op in ("upsample2d", "downsample2d", "filter2d"):

        def run(impl: str, op: str = op) -> Callable[..., torch.Tensor]:
            return lambda base: getattr(stylegan2_ops, op)(view(base), f, impl=impl)

        compare_first_and_second_order(run("cuda"), run("ref"), [base], ["x"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_resampling_helpers_match_ref(device: torch.device, dtype: torch.dtype) -> None:
    """upsample2d/downsample2d/filter2d with StyleGAN2's filters, 2-D (4 taps) and separable (8 taps)."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn([2, 3, 9, 8], generator=gen).to(device=device, dtype=dtype)
    for taps in ([1, 3, 3, 1], [1, 2, 4, 6, 6, 4, 2, 1]):
        f = stylegan2_ops.setup_filter(taps, device=device)
        for op, kwargs in (("upsample2d", {"up": 2}), ("downsample2d", {"down": 2}), ("filter2d", {"padding": 1})):
            a = getattr(stylegan2_ops, op)(x, f, impl="cuda", **kwargs)
            e = getattr(stylegan2_ops, op)(x, f, impl="ref", **kwargs)
            assert_close(a, e, f"{op} with {len(taps)} taps")


def test_upfirdn2d_float64_gradcheck(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(8)
    x = torch.randn([1, 2, 5, 4], generator=gen, dtype=torch.float64).to(device).requires_grad_()
    for fkind, up, down, padding in (("2d3x4", 2, 1, [1, 2, 2, -1]), ("sep4", 1, 2, [2, 1, 0, 3])):
        f = _filter(fkind, gen).to(device)

        def fn(x: torch.Tensor, f: torch.Tensor = f, up: int = up, down: int = down, padding: list = padding):
            return stylegan2_ops.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=True, impl="cuda")

        assert torch.autograd.gradcheck(fn, (x,)), fkind
        assert torch.autograd.gradgradcheck(fn, (x,)), fkind


def test_upfirdn2d_cuda_errors(device: torch.device) -> None:
    x = torch.randn([1, 1, 4, 4], device=device)
    f = torch.ones([3, 3], device=device)
    with pytest.raises(ValueError, match="gradient for the filter"):
        stylegan2_ops.upfirdn2d(x, f.clone().requires_grad_(), impl="cuda")
    with pytest.raises(ValueError, match="shorter than the filter"):
        stylegan2_ops.upfirdn2d(x, f, padding=-1, impl="cuda")
    with pytest.raises(ValueError, match="float16/32/64"):
        stylegan2_ops.upfirdn2d(x.bfloat16(), f, padding=1, impl="cuda")
    with pytest.raises(ValueError, match="float16/32/64"):
        stylegan2_ops.bias_act(x.bfloat16(), act="relu", impl="cuda")
    # The identity filter (None) also runs on the kernel.
    y = stylegan2_ops.upfirdn2d(x, None, up=2, impl="cuda")
    assert_close(y, stylegan2_ops.upfirdn2d_ref(x, None, up=2), "f=None")
    assert math.isclose(y[0, 0, ::2, ::2].sum().item(), x.sum().item(), rel_tol=1e-5)


# ------------------------------------------------------------------------------------------------
# Both ops inside the networks that use them.


def test_networks_match_ref(device: torch.device) -> None:
    """Generator and discriminator (impl='auto') on the kernels vs the reference path: images, scores,
    and an R1-style penalty, whose gradient needs both ops' second derivatives."""
    from ficekit.generator import Discriminator, Generator

    sizes = dict(img_resolution=32, img_channels=3)
    small = dict(channel_base=512, channel_max=32, conv_clamp=0.5)
    torch.manual_seed(0)
    G = Generator(z_dim=32, c_dim=0, w_dim=32, **sizes, mapping_kwargs=dict(num_layers=2), synthesis_kwargs=small)
    D = Discriminator(c_dim=0, **sizes, **small)
    G, D = G.to(device).eval(), D.to(device)
    z = torch.randn([2, 32], generator=torch.Generator().manual_seed(1)).to(device)

    def run() -> list[torch.Tensor]:
        img = G(z, None, noise_mode="const")
        img_in = img.detach().requires_grad_(True)
        score = D(img_in, None)
        (g_img,) = torch.autograd.grad(score.sum(), img_in, create_graph=True)
        penalty = g_img.square().sum()
        params = [p for p in D.parameters() if p.requires_grad]
        return [img, score, g_img, *grads(penalty, params, torch.ones_like(penalty), create_graph=False)]

    got = run()
    with _dispatch_ref():
        expected = run()
    for i, (a, e) in enumerate(zip(got, expected, strict=True)):
        assert_close(a.detach(), e.detach(), f"network output {i}", 1e-4)


class _dispatch_ref:
    """Context manager routing impl='auto' to the reference path (both backends)."""

    def __enter__(self) -> None:
        self.saved = _dispatch.use_cuda
        _dispatch.use_cuda = lambda x, impl, op: False

    def __exit__(self, *exc: object) -> None:
        _dispatch.use_cuda = self.saved


# ------------------------------------------------------------------------------------------------
# What impl='auto' picks: dtypes the kernels lack and compiled graphs take the reference path.


class _FakeCudaTensor:
    """Just what `_dispatch.use_cuda` reads of a tensor: a CUDA tensor of the given dtype."""

    is_cuda = True
    device = torch.device("cuda")

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


@pytest.fixture
def working_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the CUDA kernels built, so 'auto' would pick them for CUDA tensors they can take."""
    monkeypatch.setattr(_build, "get_extension", lambda strict: object())


def test_auto_takes_kernels_for_float_cuda_tensors(working_build: None) -> None:
    for dtype in (torch.float16, torch.float32, torch.float64):
        assert _dispatch.use_cuda(_FakeCudaTensor(dtype), "auto", "bias_act")
    assert not _dispatch.use_cuda(_FakeCudaTensor(torch.float32), "ref", "bias_act")


def test_auto_takes_reference_for_bfloat16(working_build: None) -> None:
    """bf16 autocast (OptimizeConfig precision='bf16') on a GPU: the kernels take float16/32/64 only, so 'auto'
    must not send bfloat16 to them (it raised inside the generator on an H200 before)."""
    assert not _dispatch.use_cuda(_FakeCudaTensor(torch.bfloat16), "auto", "upfirdn2d")
    assert not _dispatch.use_cuda(_FakeCudaTensor(torch.bfloat16), "auto", "bias_act")


def test_auto_takes_reference_while_compiling(working_build: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torch.compile the opaque kernels would break the graph at every layer; 'auto' traces the reference."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not _dispatch.use_cuda(_FakeCudaTensor(torch.float32), "auto", "bias_act")


@pytest.mark.gpu
def test_bfloat16_auto_matches_reference_on_gpu() -> None:  # skipped without CUDA by conftest's gpu marker
    x = torch.randn([2, 8, 16, 16], device="cuda").bfloat16()
    b = torch.randn([8], device="cuda").bfloat16()
    f = stylegan2_ops.setup_filter([1, 3, 3, 1], device=torch.device("cuda"))
    y = stylegan2_ops.bias_act(x, b, act="lrelu", impl="auto")
    torch.testing.assert_close(y, stylegan2_ops.bias_act(x, b, act="lrelu", impl="ref"), rtol=0, atol=0)
    y = stylegan2_ops.upfirdn2d(x, f.bfloat16(), up=2, padding=[2, 1, 2, 1], impl="auto")
    expected = stylegan2_ops.upfirdn2d(x, f.bfloat16(), up=2, padding=[2, 1, 2, 1], impl="ref")
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
