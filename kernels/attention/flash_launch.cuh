// The CUDA launcher of flash_run.cuh: one generic __global__ entry per kernel struct, dynamic
// shared memory opted in above 48 KiB.
#pragma once

#include "../common/kernel_abi.h"

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "flash_run.cuh"

namespace prism::kernels::attn {
PRISM_KERNEL_ABI_BEGIN

template <class K, class P>
__global__ void __launch_bounds__(K::kThreads) flash_kernel_entry(const P p) {
  extern __shared__ __align__(128) char smem[];
  K::run(p, smem,
         BlockCtx{static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y), static_cast<int>(blockIdx.z),
                  static_cast<int>(gridDim.x), static_cast<int>(gridDim.y), static_cast<int>(gridDim.z),
                  static_cast<int>(threadIdx.x)});
}

struct CudaLauncher {
  cudaStream_t stream;

  template <class K, class P>
  int go(const P& p, int gx, int gy, int gz) const {
    if (gx <= 0 || gy <= 0 || gz <= 0) return 0;
    if (gy > 65535 || gz > 65535) return static_cast<int>(cudaErrorInvalidConfiguration);
    const size_t smem = K::smem_bytes(p);
    if (smem > 48 * 1024) {
      // Opt in once per device (the attribute is per function and device; decode launches are
      // small enough for a driver call per launch to show).
      static std::atomic<uint64_t> opted_in{0};
      int dev = 0;
      if (const cudaError_t e = cudaGetDevice(&dev); e != cudaSuccess) return static_cast<int>(e);
      const uint64_t bit = dev < 64 ? uint64_t{1} << dev : 0;
      if (bit == 0 || (opted_in.load(std::memory_order_relaxed) & bit) == 0) {
        const cudaError_t e = cudaFuncSetAttribute(flash_kernel_entry<K, P>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   static_cast<int>(smem));
        if (e != cudaSuccess) return static_cast<int>(e);
        opted_in.fetch_or(bit, std::memory_order_relaxed);
      }
    }
    flash_kernel_entry<K, P><<<dim3(gx, gy, gz), K::kThreads, smem, stream>>>(p);
    return static_cast<int>(cudaGetLastError());
  }
};

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::attn
