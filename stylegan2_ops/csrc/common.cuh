// Device helpers shared by the kernels: element types, accumulation types, loads and stores.
// torch builds .cu files with __CUDA_NO_HALF_CONVERSIONS__, so half goes through explicit intrinsics.

#pragma once

#include <cuda_fp16.h>
#include <cstdint>

#include "ops.h"

namespace stylegan2_ops {

// Accumulation type: float for half (as the reference does inside its ops), else the type itself.
template <typename T> struct AccType { using type = T; };
template <> struct AccType<__half> { using type = float; };

__device__ __forceinline__ float load_acc(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float load_acc(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ double load_acc(const double* p, int64_t i) { return p[i]; }

__device__ __forceinline__ void store_acc(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ void store_acc(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_acc(double* p, int64_t i, double v) { p[i] = v; }

// Blocks for a grid-stride loop over n items: enough to fill the GPU, capped so the grid is legal.
inline unsigned int grid_for(int64_t n, int threads) {
    int64_t blocks = (n + threads - 1) / threads;
    const int64_t cap = int64_t(1) << 20;
    return static_cast<unsigned int>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

}  // namespace stylegan2_ops
