// Python binding of both ops: argument checks, memory layout, output allocation, dtype dispatch
// and the launch on torch's current stream. The kernels themselves live in the .cu files.
// Only this translation unit includes torch headers (the light ones, not torch/extension.h).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/python.h>

#include <algorithm>
#include <climits>
#include <cstdlib>

#include "ops.h"

namespace stylegan2_ops {
namespace {

template <typename T> struct DTypeOf;
template <> struct DTypeOf<at::Half> { static constexpr DType value = DType::kHalf; };
template <> struct DTypeOf<float> { static constexpr DType value = DType::kFloat; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::kDouble; };

// The kernels' element type for x; float16/32/64 only (the dispatch macro rejects others, naming them).
DType dtype_of(const at::Tensor& x) {
    DType dtype = DType::kFloat;
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "stylegan2_ops", [&] { dtype = DTypeOf<scalar_t>::value; });
    return dtype;
}

void check_launch(cudaError_t err, const char* op) {
    TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

// An optional companion of x (given as an empty tensor when absent), checked and laid out like x.
at::Tensor like_x(const at::Tensor& t, const at::Tensor& x, const char* what) {
    if (t.numel() == 0) return t;
    TORCH_CHECK(t.sizes().equals(x.sizes()), "bias_act: ", what, " must have x's shape ", x.sizes(), ", got ",
                t.sizes());
    TORCH_CHECK(t.scalar_type() == x.scalar_type() && t.device() == x.device(), "bias_act: ", what,
                " must match x's dtype and device");
    if (t.strides().equals(x.strides())) return t;
    at::Tensor u = at::empty_like(x);  // x is dense, so this keeps its strides
    u.copy_(t);
    return u;
}

at::Tensor bias_act(at::Tensor x, at::Tensor b, at::Tensor xref, at::Tensor yref, at::Tensor dy, int64_t grad,
                    int64_t dim, int64_t act, double alpha, double gain, double clamp) {
    TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor");
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2, got ", grad);
    TORCH_CHECK(act >= 1 && act <= 9, "bias_act: unknown activation index ", act);
    const DType dtype = dtype_of(x);
    const bool clamped = clamp >= 0;
    if (grad > 0) {
        const bool from_y = act == 2 || (act >= 4 && act <= 8);
        TORCH_CHECK(!from_y || yref.numel() > 0, "bias_act: this activation's gradient needs yref");
        TORCH_CHECK(act != 3 || xref.numel() > 0 || yref.numel() > 0, "bias_act: lrelu's gradient needs xref or yref");
        TORCH_CHECK(act != 9 || xref.numel() > 0, "bias_act: swish's gradient needs xref");
        TORCH_CHECK(!clamped || yref.numel() > 0, "bias_act: a clamped gradient needs yref");
    }
    const c10::cuda::OptionalCUDAGuard device_guard(x.device());

    if (!x.is_non_overlapping_and_dense()) x = x.contiguous();
    xref = like_x(xref, x, "xref");
    yref = like_x(yref, x, "yref");
    dy = like_x(dy, x, "dy");

    int64_t step_b = 1, size_b = 1;
    if (b.numel() > 0) {
        TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim ", dim, " out of range for a ", x.dim(), "-D x");
        TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim), "bias_act: b must be 1-D with ", x.size(dim),
                    " entries, got shape ", b.sizes());
        TORCH_CHECK(b.scalar_type() == x.scalar_type() && b.device() == x.device(),
                    "bias_act: b must match x's dtype and device");
        b = b.contiguous();
        size_b = x.size(dim);
        step_b = size_b > 1 ? x.stride(dim) : 1;
    }

    at::Tensor y = at::empty_like(x);
    BiasActParams p;
    p.x = x.data_ptr();
    p.b = b.numel() > 0 ? b.data_ptr() : nullptr;
    p.xref = xref.numel() > 0 ? xref.data_ptr() : nullptr;
    p.yref = yref.numel() > 0 ? yref.data_ptr() : nullptr;
    p.dy = dy.numel() > 0 ? dy.data_ptr() : nullptr;
    p.y = y.data_ptr();
    p.n = x.numel();
    p.step_b = step_b;
    p.size_b = size_b;
    p.grad = static_cast<int>(grad);
    p.act = static_cast<int>(act);
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    if (p.n > 0) check_launch(launch_bias_act(p, dtype, c10::cuda::getCurrentCUDAStream()), "bias_act");
    return y;
}

at::Tensor upfirdn2d(at::Tensor x, at::Tensor f, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
                     int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip, double gain) {
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be [N, C, H, W], got shape ", x.sizes());
    TORCH_CHECK(f.dim() == 2 && f.size(0) >= 1 && f.size(1) >= 1, "upfirdn2d: f must be a non-empty 2-D filter, got ",
                f.sizes());
    TORCH_CHECK(f.scalar_type() == at::kFloat, "upfirdn2d: f must be float32");
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must be on x's device");
    TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up/down factors must be >= 1");
    const DType dtype = dtype_of(x);
    const c10::cuda::OptionalCUDAGuard device_guard(x.device());

    const int64_t in_h = x.size(2), in_w = x.size(3), fh = f.size(0), fw = f.size(1);
    const int64_t padded_h = in_h * upy + pady0 + pady1;
    const int64_t padded_w = in_w * upx + padx0 + padx1;
    const int64_t out_h = (padded_h - fh + downy) / downy;
    const int64_t out_w = (padded_w - fw + downx) / downx;
    TORCH_CHECK(padded_h >= fh && padded_w >= fw, "upfirdn2d: the padded image (", padded_h, "x", padded_w,
                ") is smaller than the filter (", fh, "x", fw, ")");
    const int64_t coord_max = std::max({in_h * upy, in_w * upx, out_h * downy, out_w * downx}) +
                              std::max({std::abs(padx0), std::abs(pady0)}) + std::max(fh, fw);
    TORCH_CHECK(coord_max < INT_MAX && x.size(0) < INT_MAX && x.size(1) < INT_MAX, "upfirdn2d: x is too large");

    f = f.contiguous();
    at::Tensor y = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options(), x.suggest_memory_format());

    Upfirdn2dParams p;
    p.x = x.data_ptr();
    p.f = f.data_ptr<float>();
    p.y = y.data_ptr();
    p.n = static_cast<int>(x.size(0));
    p.c = static_cast<int>(x.size(1));
    p.in_h = static_cast<int>(in_h);
    p.in_w = static_cast<int>(in_w);
    p.out_h = static_cast<int>(out_h);
    p.out_w = static_cast<int>(out_w);
    for (int d = 0; d < 4; ++d) {
        p.in_stride[d] = x.stride(d);
        p.out_stride[d] = y.stride(d);
    }
    p.channels_last = (y.stride(1) == 1 && y.size(1) > 1) ? 1 : 0;
    p.fh = static_cast<int>(fh);
    p.fw = static_cast<int>(fw);
    p.upx = static_cast<int>(upx);
    p.upy = static_cast<int>(upy);
    p.downx = static_cast<int>(downx);
    p.downy = static_cast<int>(downy);
    p.padx0 = static_cast<int>(padx0);
    p.pady0 = static_cast<int>(pady0);
    p.flip = flip ? 1 : 0;
    p.gain = gain;
    if (y.numel() > 0) check_launch(launch_upfirdn2d(p, dtype, c10::cuda::getCurrentCUDAStream()), "upfirdn2d");
    return y;
}

}  // namespace
}  // namespace stylegan2_ops

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "StyleGAN2 bias_act and upfirdn2d CUDA kernels (stylegan2_ops)";
    m.def("bias_act", &stylegan2_ops::bias_act, "Fused bias + activation + gain + clamp, or its derivatives",
          pybind11::arg("x"), pybind11::arg("b"), pybind11::arg("xref"), pybind11::arg("yref"), pybind11::arg("dy"),
          pybind11::arg("grad"), pybind11::arg("dim"), pybind11::arg("act"), pybind11::arg("alpha"),
          pybind11::arg("gain"), pybind11::arg("clamp"));
    m.def("upfirdn2d", &stylegan2_ops::upfirdn2d, "Upsample, pad, FIR-filter and downsample a batch of images",
          pybind11::arg("x"), pybind11::arg("f"), pybind11::arg("upx"), pybind11::arg("upy"), pybind11::arg("downx"),
          pybind11::arg("downy"), pybind11::arg("padx0"), pybind11::arg("padx1"), pybind11::arg("pady0"),
          pybind11::arg("pady1"), pybind11::arg("flip"), pybind11::arg("gain"));
}
