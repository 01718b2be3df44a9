// What the SIMT kernels (kernels/rmsnorm, kernels/linear_cross_entropy) need from the device side:
// element conversions, and the CUDA spellings they use. Compiled by nvcc it is plain CUDA.
// Compiled by the host compiler with PRISM_KERNEL_EMULATE it maps those spellings onto
// common/block_emu.h (one OS thread per CUDA thread, barriers for __syncthreads and warp
// shuffles), so the very same kernel bodies run on a CPU in tests/ops/test_*_emu.cpp. That is how
// kernels written on machines without a GPU get their indexing, vector paths, reductions and
// barrier placement checked before they meet one.
//
// Kernel code written against this header uses only: __global__ / __device__ / __forceinline__ /
// __launch_bounds__, __shared__ arrays and scalars, PRISM_DYNAMIC_SMEM for dynamic shared memory,
// threadIdx / blockIdx / blockDim / gridDim, __syncthreads, __shfl_xor_sync (float, double),
// __shfl_up_sync (float, double), __fadd_rn / __fmul_rn, the dev::to_f / dev::from_f conversions
// and <cmath> float functions.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#define PRISM_DYNAMIC_SMEM(type, name) extern __shared__ type name[]

namespace prism::kernels::dev {

using bf16 = __nv_bfloat16;
using half = __half;

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<half>(half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<bf16>(bf16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ half from_f<half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float v) { return __float2bfloat16_rn(v); }

}  // namespace prism::kernels::dev

#elif defined(PRISM_KERNEL_EMULATE)

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <math.h>

#include "block_emu.h"

#define __global__
#define __launch_bounds__(...)
#ifndef __device__
#define __device__
#endif
#ifndef __host__
#define __host__
#endif
#ifndef __forceinline__
#define __forceinline__ inline
#endif
// One block runs at a time, so function-local statics are exactly per-block shared memory.
#define __shared__ static
#define PRISM_DYNAMIC_SMEM(type, name) type* name = ::prism::kernels::emu::dynamic_smem<type>()
#define threadIdx (::prism::kernels::emu::tls().thread_idx)
#define blockIdx (::prism::kernels::emu::tls().block_idx)
#define blockDim (::prism::kernels::emu::tls().block_dim)
#define gridDim (::prism::kernels::emu::tls().grid_dim)

inline void __syncthreads() { ::prism::kernels::emu::syncthreads(); }
inline float __shfl_xor_sync(unsigned /*mask*/, float v, int lane_mask) {
  return ::prism::kernels::emu::shfl_xor(v, lane_mask);
}
inline double __shfl_xor_sync(unsigned /*mask*/, double v, int lane_mask) {
  return ::prism::kernels::emu::shfl_xor(v, lane_mask);
}
inline float __shfl_up_sync(unsigned /*mask*/, float v, int delta) { return ::prism::kernels::emu::shfl_up(v, delta); }
inline double __shfl_up_sync(unsigned /*mask*/, double v, int delta) {
  return ::prism::kernels::emu::shfl_up(v, delta);
}
// Host float arithmetic is IEEE round-to-nearest and not contracted into FMAs on x86-64 without
// -mfma: the plain operators are the _rn intrinsics.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }

namespace prism::kernels::dev {

// c10's conversions round to nearest even, like __float2bfloat16_rn / __float2half_rn.
using bf16 = c10::BFloat16;
using half = c10::Half;

template <typename T> inline float to_f(T v) { return static_cast<float>(v); }
template <typename T> inline T from_f(float v) { return T(v); }

}  // namespace prism::kernels::dev

#else
#error "kernels/common/device_compat.cuh: compile with nvcc, or define PRISM_KERNEL_EMULATE for the host emulation"
#endif
