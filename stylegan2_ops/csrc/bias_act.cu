// bias_act launcher: picks the kernel for the dtype and activation and enqueues it.

#include "bias_act_kernel.cuh"

namespace stylegan2_ops {
namespace {

template <typename T> cudaError_t launch_typed(const BiasActParams& p, cudaStream_t stream) {
    void (*kernel)(BiasActParams) = nullptr;
    switch (p.act) {
        case 1: kernel = bias_act_kernel<T, 1>; break;
        case 2: kernel = bias_act_kernel<T, 2>; break;
        case 3: kernel = bias_act_kernel<T, 3>; break;
        case 4: kernel = bias_act_kernel<T, 4>; break;
        case 5: kernel = bias_act_kernel<T, 5>; break;
        case 6: kernel = bias_act_kernel<T, 6>; break;
        case 7: kernel = bias_act_kernel<T, 7>; break;
        case 8: kernel = bias_act_kernel<T, 8>; break;
        case 9: kernel = bias_act_kernel<T, 9>; break;
        default: return cudaErrorInvalidValue;
    }
    const int threads = 256;
    kernel<<<grid_for(p.n, threads), threads, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace

cudaError_t launch_bias_act(const BiasActParams& p, DType dtype, cudaStream_t stream) {
    if (p.n <= 0) return cudaSuccess;
    switch (dtype) {
        case DType::kHalf: return launch_typed<__half>(p, stream);
        case DType::kFloat: return launch_typed<float>(p, stream);
        case DType::kDouble: return launch_typed<double>(p, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace stylegan2_ops
