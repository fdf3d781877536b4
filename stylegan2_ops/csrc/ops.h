// Plain-C++ interface between the binding (ops.cpp, which sees torch) and the CUDA kernels
// (*.cu, which do not): parameter structs and launcher declarations. Keeping torch headers out of
// the .cu files keeps nvcc fast; only ops.cpp pays for them.

#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace stylegan2_ops {

// Element type of the tensors a kernel reads and writes. Half and float accumulate in float,
// double in double.
enum class DType : int { kHalf = 0, kFloat = 1, kDouble = 2 };

// Fused bias + activation + gain + clamp over a dense tensor, or one of its two derivatives.
//
// grad == 0: y = clamp(act(x + b) * gain)
// grad == 1: y = x * act'(z) * gain * [|yref| < clamp]        with z = xref + b (x holds dy)
// grad == 2: y = x * act''(z) * gain * dy * [|yref| < clamp]  (x holds the incoming d(dx))
//
// Activations whose derivative is cheapest from their output read it from yref (divided by gain);
// swish reads z from xref; lrelu reads z when xref is given (needed for alpha < 0), else yref.
// All element tensors share one dense memory layout; b runs along the dimension whose stride is
// step_b and whose size is size_b.
struct BiasActParams {
    const void* x;     // input (grad 0) or incoming gradient (grad 1, 2); never null
    const void* b;     // bias [size_b] or null
    const void* xref;  // saved input x (without bias) or null
    const void* yref;  // saved output y or null
    const void* dy;    // grad 2 only: the gradient that reached the first backward; null = ones
    void* y;           // output, same layout as x
    int64_t n;         // number of elements
    int64_t step_b;    // stride, in elements, of the bias dimension
    int64_t size_b;    // size of the bias dimension
    int grad;          // 0, 1 or 2 (see above)
    int act;           // activation index: 1 linear, 2 relu, 3 lrelu, 4 tanh, 5 sigmoid,
                       // 6 elu, 7 selu, 8 softplus, 9 swish
    double alpha;      // lrelu slope
    double gain;       // output scale
    double clamp;      // clamp bound; negative = no clamping
};

// Upsample by zero insertion, pad (negative = crop), correlate with a 2-D FIR filter, keep every
// down-th pixel. Output pixel (ox, oy) reads upsampled pixel (ox * downx - padx0 + i, ...) with
// filter tap g[j][i] = f[fh-1-j][fw-1-i] (convolution) or f[j][i] when flip != 0 (correlation).
struct Upfirdn2dParams {
    const void* x;      // input [N, C, inH, inW] with arbitrary strides
    const float* f;     // contiguous filter [fh, fw], float32
    void* y;            // output [N, C, outH, outW]
    int n, c;           // batch size, channels
    int in_h, in_w;     // input size
    int out_h, out_w;   // output size
    int64_t in_stride[4];   // x strides (N, C, H, W) in elements; any values, including 0
    int64_t out_stride[4];  // y strides (N, C, H, W) in elements
    int channels_last;  // 1 = enumerate outputs with C fastest (matches a channels-last y)
    int fh, fw;         // filter size
    int upx, upy;       // upsampling factors (>= 1)
    int downx, downy;   // downsampling factors (>= 1)
    int padx0, pady0;   // leading padding in upsampled pixels (negative = crop)
    int flip;           // 1 = correlation, 0 = convolution
    double gain;        // output scale
};

// Launchers: enqueue the kernel on `stream` and return the launch status.
cudaError_t launch_bias_act(const BiasActParams& p, DType dtype, cudaStream_t stream);
cudaError_t launch_upfirdn2d(const Upfirdn2dParams& p, DType dtype, cudaStream_t stream);

}  // namespace stylegan2_ops
