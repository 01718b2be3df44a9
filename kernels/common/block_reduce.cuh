// Building blocks shared by the SIMT kernels (rmsnorm, linear_cross_entropy, the Mamba2 kernels):
// 16-byte vector access and warp/block sums. Written against device_compat.cuh, so it compiles
// for nvcc and for the CPU block emulator alike.
#pragma once

#include "kernel_abi.h"

#include "device_compat.cuh"

namespace prism::kernels::dev {
PRISM_KERNEL_ABI_BEGIN

/// N elements of T loaded / stored as one aligned vector access.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

/// Elements of T per 16-byte vector.
template <typename T>
constexpr int vec_width() {
  return 16 / static_cast<int>(sizeof(T));
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

/// Sum over the block (any blockDim.x <= 1024); every thread gets the result. `scratch` holds 33
/// floats. Safe to call repeatedly with the same scratch: the slots a call writes are read only
/// before its second barrier. The call contains two __syncthreads().
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int num_warps = (blockDim.x + 31) >> 5;
    float s = warp_sum(lane < num_warps ? scratch[lane] : 0.f);
    if (lane == 0) scratch[32] = s;
  }
  __syncthreads();
  return scratch[32];
}

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::dev
