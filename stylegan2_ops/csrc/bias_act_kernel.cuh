// bias_act kernel: fused bias + activation + gain + clamp, and its first and second derivatives.
// One thread per element (grid-stride loop); the activation is a template parameter, the
// derivative order a uniform runtime branch. Semantics: see BiasActParams in ops.h.
// Kept in a header, apart from the launcher, so that tests can run it on the host (emulation).

#pragma once

#include "common.cuh"

namespace stylegan2_ops {

constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSoftplusThreshold = 20.0;  // above it softplus(z) = z, as torch does

__device__ __forceinline__ float math_exp(float v) { return expf(v); }
__device__ __forceinline__ double math_exp(double v) { return exp(v); }
__device__ __forceinline__ float math_expm1(float v) { return expm1f(v); }
__device__ __forceinline__ double math_expm1(double v) { return expm1(v); }
__device__ __forceinline__ float math_log1p(float v) { return log1pf(v); }
__device__ __forceinline__ double math_log1p(double v) { return log1p(v); }
__device__ __forceinline__ float math_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double math_tanh(double v) { return tanh(v); }

template <typename A> __device__ __forceinline__ A sigmoid(A z) {
    return A(1) / (A(1) + math_exp(-z));  // exp overflow gives inf and a clean 0
}

// The value a stored element of type T takes for v (clamped outputs are compared to it).
template <typename T, typename A> __device__ __forceinline__ A as_stored(A v) { return v; }
template <> __device__ __forceinline__ float as_stored<__half, float>(float v) {
    return __half2float(__float2half_rn(v));
}

// act(z).
template <int ACT, typename A> __device__ __forceinline__ A act_value(A z, A alpha) {
    if constexpr (ACT == 1) return z;
    if constexpr (ACT == 2) return z < A(0) ? A(0) : z;
    if constexpr (ACT == 3) return z < A(0) ? z * alpha : z;
    if constexpr (ACT == 4) return math_tanh(z);
    if constexpr (ACT == 5) return sigmoid(z);
    if constexpr (ACT == 6) return z > A(0) ? z : math_expm1(z);
    if constexpr (ACT == 7) return z > A(0) ? A(kSeluScale) * z : A(kSeluScale * kSeluAlpha) * math_expm1(z);
    if constexpr (ACT == 8) return z > A(kSoftplusThreshold) ? z : math_log1p(math_exp(z));
    if constexpr (ACT == 9) return z * sigmoid(z);
    return A(0);
}

// act'(z), from the activation's output a = act(z) where that is enough, else from z.
template <int ACT, typename A> __device__ __forceinline__ A act_deriv1(A z, A a, bool have_z, A alpha) {
    if constexpr (ACT == 1) return A(1);
    if constexpr (ACT == 2) return a > A(0) ? A(1) : A(0);
    if constexpr (ACT == 3) return (have_z ? z > A(0) : a > A(0)) ? A(1) : alpha;
    if constexpr (ACT == 4) return A(1) - a * a;
    if constexpr (ACT == 5) return a * (A(1) - a);
    if constexpr (ACT == 6) return a > A(0) ? A(1) : a + A(1);                        // exp(z) = a + 1
    if constexpr (ACT == 7) return a > A(0) ? A(kSeluScale) : a + A(kSeluScale * kSeluAlpha);
    if constexpr (ACT == 8) return -math_expm1(-a);                                  // sigmoid(z) = 1 - exp(-a)
    if constexpr (ACT == 9) {
        const A s = sigmoid(z);
        return s + z * s * (A(1) - s);
    }
    return A(0);
}

// act''(z), likewise (zero for the piecewise-linear activations). At the kink z = 0 of elu/selu
// these follow torch: act' takes the negative side's value, act'' the positive side's (0).
template <int ACT, typename A> __device__ __forceinline__ A act_deriv2(A z, A a) {
    if constexpr (ACT == 4) return A(-2) * a * (A(1) - a * a);
    if constexpr (ACT == 5) return a * (A(1) - a) * (A(1) - A(2) * a);
    if constexpr (ACT == 6) return a >= A(0) ? A(0) : a + A(1);
    if constexpr (ACT == 7) return a >= A(0) ? A(0) : a + A(kSeluScale * kSeluAlpha);
    if constexpr (ACT == 8) {
        const A s = -math_expm1(-a);
        return s * (A(1) - s);
    }
    if constexpr (ACT == 9) {
        const A s = sigmoid(z);
        return s * (A(1) - s) * (A(2) + z * (A(1) - A(2) * s));
    }
    return A(0);
}

template <typename T, int ACT> __global__ void bias_act_kernel(BiasActParams p) {
    using A = typename AccType<T>::type;
    const T* x = static_cast<const T*>(p.x);
    const T* b = static_cast<const T*>(p.b);
    const T* xref = static_cast<const T*>(p.xref);
    const T* yref = static_cast<const T*>(p.yref);
    const T* dy = static_cast<const T*>(p.dy);
    T* y = static_cast<T*>(p.y);

    const A alpha = A(p.alpha);
    const A gain = A(p.gain);
    const bool do_clamp = p.clamp >= 0;
    const A clamp = A(p.clamp);
    const A clamp_stored = as_stored<T, A>(clamp);
    const bool have_z = xref != nullptr;

    const int64_t step = int64_t(blockDim.x) * gridDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.n; i += step) {
        const A bias = b ? load_acc(b, (i / p.step_b) % p.size_b) : A(0);
        const A v = load_acc(x, i);
        A out;
        if (p.grad == 0) {
            out = act_value<ACT, A>(v + bias, alpha) * gain;
            if (do_clamp)
                out = out > clamp ? clamp : (out < -clamp ? -clamp : out);  // NaN passes through
        } else {
            const A z = have_z ? load_acc(xref, i) + bias : A(0);
            const A yr = yref ? load_acc(yref, i) : A(0);
            const A a = gain != A(0) ? yr / gain : A(0);
            if (p.grad == 1) {
                out = v * act_deriv1<ACT, A>(z, a, have_z, alpha) * gain;
            } else {
                const A g = dy ? load_acc(dy, i) : A(1);
                out = v * act_deriv2<ACT, A>(z, a) * gain * g;
            }
            if (do_clamp && !(yr > -clamp_stored && yr < clamp_stored))
                out = A(0);  // clamped outputs pass no gradient
        }
        store_acc(y, i, out);
    }
}

}  // namespace stylegan2_ops
