// upfirdn2d kernel: upsample (zero insertion), pad/crop, FIR filter, downsample, in one pass.
// Generic kernel: one thread per output pixel (grid-stride loop). Each output visits only the
// filter taps that land on non-zero (i.e. original) pixels of the upsampled image, so the cost is
// about fh*fw/(upx*upy) multiply-adds per output. Semantics: see Upfirdn2dParams in ops.h.
// Kept in a header, apart from the launcher, so that tests can run it on the host (emulation).

#pragma once

#include "common.cuh"

namespace stylegan2_ops {

// Floor and ceiling of a / b for b > 0 and any sign of a (C++ division truncates toward zero).
__device__ __forceinline__ int floor_div(int a, int b) {
    const int q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}
__device__ __forceinline__ int ceil_div(int a, int b) { return -floor_div(-a, b); }

template <typename T> __global__ void upfirdn2d_kernel(Upfirdn2dParams p, int64_t total) {
    using A = typename AccType<T>::type;
    const T* x = static_cast<const T*>(p.x);
    T* y = static_cast<T*>(p.y);
    const A gain = A(p.gain);

    const int64_t step = int64_t(blockDim.x) * gridDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step) {
        // Output coordinates, enumerated in y's memory order so that stores coalesce.
        int n, c, oy, ox;
        int64_t t = idx;
        if (p.channels_last) {
            c = int(t % p.c); t /= p.c;
            ox = int(t % p.out_w); t /= p.out_w;
            oy = int(t % p.out_h); t /= p.out_h;
            n = int(t);
        } else {
            ox = int(t % p.out_w); t /= p.out_w;
            oy = int(t % p.out_h); t /= p.out_h;
            c = int(t % p.c); t /= p.c;
            n = int(t);
        }

        // Position in the padded, upsampled image that filter tap (0, 0) lands on; tap (j, i)
        // reads upsampled pixel (by + j, bx + i), which is input pixel (iy, ix) exactly when
        // by + j = iy * upy and bx + i = ix * upx.
        const int by = oy * p.downy - p.pady0;
        const int bx = ox * p.downx - p.padx0;
        const int iy0 = max(ceil_div(by, p.upy), 0);
        const int iy1 = min(floor_div(by + p.fh - 1, p.upy), p.in_h - 1);
        const int ix0 = max(ceil_div(bx, p.upx), 0);
        const int ix1 = min(floor_div(bx + p.fw - 1, p.upx), p.in_w - 1);

        const T* xp = x + n * p.in_stride[0] + c * p.in_stride[1];
        A acc = A(0);
        for (int iy = iy0; iy <= iy1; ++iy) {
            const int j = iy * p.upy - by;
            const int fy = p.flip ? j : p.fh - 1 - j;
            const float* frow = p.f + int64_t(fy) * p.fw;
            const T* xrow = xp + iy * p.in_stride[2];
            for (int ix = ix0; ix <= ix1; ++ix) {
                const int i = ix * p.upx - bx;
                const int fx = p.flip ? i : p.fw - 1 - i;
                acc += load_acc(xrow, ix * p.in_stride[3]) * A(__ldg(frow + fx));
            }
        }
        store_acc(y, n * p.out_stride[0] + c * p.out_stride[1] + oy * p.out_stride[2] + ox * p.out_stride[3],
                  acc * gain);
    }
}

}  // namespace stylegan2_ops
