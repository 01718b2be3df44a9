// Device helpers of the Mamba2 kernels: dtype-erased loads/stores (a uniform switch per access,
// free next to the memory traffic), SiLU and its derivative, block reductions. Written against
// common/device_compat.cuh, so the kernels that use it also run on a CPU through the block
// emulator (PRISM_KERNEL_EMULATE; tests/ops/test_ssd_emu.cpp). Under nvcc the conversions are
// the same intrinsics as before (__half2float, __float2bfloat16_rn, ...).
#pragma once

#include "../common/kernel_abi.h"

#include <cmath>
#include <cstdint>

#include "../common/block_reduce.cuh"
#include "../common/device_compat.cuh"
#include "ssm_types.h"

namespace prism::kernels::ssm {
PRISM_KERNEL_ABI_BEGIN

// dev::to_f<T> / dev::from_f<T> for T in {float, half, bf16}: __half2float / __float2half_rn /
// __bfloat162float / __float2bfloat16_rn under nvcc, c10's round-to-nearest-even on the host.
using dev::from_f;
using dev::to_f;

__device__ __forceinline__ float ld(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kFloat16: return to_f(static_cast<const dev::half*>(p)[i]);
    case DType::kBFloat16: return to_f(static_cast<const dev::bf16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void st(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::kFloat16: static_cast<dev::half*>(p)[i] = from_f<dev::half>(v); break;
    case DType::kBFloat16: static_cast<dev::bf16*>(p)[i] = from_f<dev::bf16>(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

/// v rounded to dtype t and back (the cast of a reference that rounds an intermediate).
__device__ __forceinline__ float round_to(DType t, float v) {
  switch (t) {
    case DType::kFloat16: return to_f(from_f<dev::half>(v));
    case DType::kBFloat16: return to_f(from_f<dev::bf16>(v));
    default: return v;
  }
}

// expf, not __expf: the fast intrinsic is off by up to ~2 + 1.2|v| ulp, more than the reference.
__device__ __forceinline__ float sigmoidf_(float v) { return 1.f / (1.f + expf(-v)); }
__device__ __forceinline__ float siluf_(float v) { return v * sigmoidf_(v); }
/// d silu(v) / dv = s (1 + v (1 - s)), s = sigmoid(v).
__device__ __forceinline__ float dsiluf_(float v) {
  const float s = sigmoidf_(v);
  return s * (1.f + v * (1.f - s));
}

using dev::block_sum;
using dev::warp_sum;

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::ssm
