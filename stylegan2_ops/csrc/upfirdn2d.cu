// upfirdn2d launcher: picks the kernel for the dtype and enqueues it.

#include "upfirdn2d_kernel.cuh"

namespace stylegan2_ops {
namespace {

template <typename T> cudaError_t launch_typed(const Upfirdn2dParams& p, int64_t total, cudaStream_t stream) {
    const int threads = 256;
    upfirdn2d_kernel<T><<<grid_for(total, threads), threads, 0, stream>>>(p, total);
    return cudaGetLastError();
}

}  // namespace

cudaError_t launch_upfirdn2d(const Upfirdn2dParams& p, DType dtype, cudaStream_t stream) {
    const int64_t total = int64_t(p.n) * p.c * p.out_h * p.out_w;
    if (total <= 0) return cudaSuccess;
    switch (dtype) {
        case DType::kHalf: return launch_typed<__half>(p, total, stream);
        case DType::kFloat: return launch_typed<float>(p, total, stream);
        case DType::kDouble: return launch_typed<double>(p, total, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace stylegan2_ops
