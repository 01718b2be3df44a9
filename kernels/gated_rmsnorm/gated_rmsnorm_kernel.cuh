// Fused gated RMSNorm of the Mamba2 mixer (architectures.md §1.2, norm_before_gate = False,
// grouped): u = y * silu(z) in fp32, n = u * rsqrt(mean_group(u^2) + eps), rounded to y's dtype,
// out = w * n rounded to the output dtype (transformers' order; src/ops/rmsnorm_ref.cpp).
//
// Forward: one block per (row, group), two passes over the group (the second re-reads y and z,
// which are in L1/L2); the fp32 rstd per (row, group) is saved for backward.
// Backward: one block per (chunk of rows, group). Per row: dn = dout * w, c = mean(dn * n),
// du = rstd * (dn - n * c), dy = du * silu(z), dz = du * y * silu'(z); the weight gradient
// sum_rows dout * round(n) accumulates in shared memory per block and is written as one fp32
// partial row per chunk (deterministic; the binding sums the partials).
//
// Device code only (host launchers: gated_rmsnorm.cu), written against common/device_compat.cuh
// so that tests/ops/test_gated_rmsnorm_emu.cpp runs these exact bodies on a CPU. The kernels are
// templates on the block size only so that this header defines no non-inline symbol.
#pragma once

#include "../common/kernel_abi.h"

#include <cmath>
#include <cstdint>

#include "../common/device_compat.cuh"
#include "gated_rmsnorm_params.h"

namespace prism::kernels::gated_rmsnorm {
PRISM_KERNEL_ABI_BEGIN

using ssm::DType;
using ssm::GatedRmsNormBwdParams;
using ssm::GatedRmsNormParams;

// Dtype-erased loads and stores (a uniform switch per access, free next to the memory traffic).
__device__ __forceinline__ float ld(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kFloat16: return dev::to_f(static_cast<const dev::half*>(p)[i]);
    case DType::kBFloat16: return dev::to_f(static_cast<const dev::bf16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void st(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::kFloat16: static_cast<dev::half*>(p)[i] = dev::from_f<dev::half>(v); break;
    case DType::kBFloat16: static_cast<dev::bf16*>(p)[i] = dev::from_f<dev::bf16>(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

/// v rounded to dtype t and back (the cast of a reference that rounds an intermediate).
__device__ __forceinline__ float round_to(DType t, float v) {
  switch (t) {
    case DType::kFloat16: return dev::to_f(dev::from_f<dev::half>(v));
    case DType::kBFloat16: return dev::to_f(dev::from_f<dev::bf16>(v));
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

/// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
/// `scratch` holds >= 33 floats; the call contains two __syncthreads().
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < nwarps ? scratch[lane] : 0.f;
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) scratch[32] = s;
  }
  __syncthreads();
  return scratch[32];
}

/// Grid (rows, I / group), block kThreads (kGatedNormThreads).
template <int kThreads>
__global__ void __launch_bounds__(kThreads) gated_norm_fwd_kernel(GatedRmsNormParams p) {
  __shared__ float scratch[33];
  const int64_t row = blockIdx.x, g = blockIdx.y, G = gridDim.y;
  const int64_t c0 = g * p.group, c1 = c0 + p.group;
  const int64_t yo = row * p.y_rs, zo = row * p.z_rs;
  float acc = 0.f;
  for (int64_t c = c0 + threadIdx.x; c < c1; c += kThreads) {
    const float u = ld(p.y, p.y_dtype, yo + c) * siluf_(ld(p.z, p.z_dtype, zo + c));
    acc = fmaf(u, u, acc);
  }
  // 1/sqrt rather than rsqrtf: both roundings are correct, rsqrtf's approximation is not.
  const float rstd = 1.f / sqrtf(block_sum(acc, scratch) / static_cast<float>(p.group) + p.eps);
  if (p.rstd && threadIdx.x == 0) p.rstd[row * G + g] = rstd;
  for (int64_t c = c0 + threadIdx.x; c < c1; c += kThreads) {
    const float u = ld(p.y, p.y_dtype, yo + c) * siluf_(ld(p.z, p.z_dtype, zo + c));
    const float n = round_to(p.y_dtype, u * rstd);
    st(p.out, p.out_dtype, row * p.I + c, p.w[c] * n);
  }
}

/// Grid (num_chunks, I / group), block kThreads, dynamic shared memory group * 4 bytes.
template <int kThreads>
__global__ void __launch_bounds__(kThreads) gated_norm_bwd_kernel(GatedRmsNormBwdParams q) {
  PRISM_DYNAMIC_SMEM(float, dw_s);  // [group]
  __shared__ float scratch[33];
  const auto& p = q.f;
  const int64_t chunk = blockIdx.x, g = blockIdx.y, G = gridDim.y;
  const int64_t c0 = g * p.group;
  // Each thread owns the dw_s slots c = threadIdx.x + k * kThreads (no barrier needed around them).
  for (int64_t c = threadIdx.x; c < p.group; c += kThreads) dw_s[c] = 0.f;
  const int64_t r0 = chunk * q.rows_per_chunk;
  const int64_t r1 = r0 + q.rows_per_chunk < p.rows ? r0 + q.rows_per_chunk : p.rows;
  for (int64_t row = r0; row < r1; ++row) {
    const float rstd = p.rstd[row * G + g];
    const int64_t yo = row * p.y_rs, zo = row * p.z_rs, oo = row * p.I;
    float acc = 0.f;
    for (int64_t c = threadIdx.x; c < p.group; c += kThreads) {
      const int64_t cc = c0 + c;
      const float n = ld(p.y, p.y_dtype, yo + cc) * siluf_(ld(p.z, p.z_dtype, zo + cc)) * rstd;
      acc = fmaf(ld(q.dout, p.out_dtype, oo + cc) * p.w[cc], n, acc);
    }
    const float mean_dn_n = block_sum(acc, scratch) / static_cast<float>(p.group);
    for (int64_t c = threadIdx.x; c < p.group; c += kThreads) {
      const int64_t cc = c0 + c;
      const float y = ld(p.y, p.y_dtype, yo + cc), z = ld(p.z, p.z_dtype, zo + cc);
      const float sz = siluf_(z);
      const float n = y * sz * rstd;
      const float go = ld(q.dout, p.out_dtype, oo + cc);
      const float du = rstd * (go * p.w[cc] - n * mean_dn_n);
      st(q.dy, p.y_dtype, oo + cc, du * sz);
      st(q.dz, p.z_dtype, oo + cc, du * y * dsiluf_(z));
      dw_s[c] = fmaf(go, round_to(p.y_dtype, n), dw_s[c]);
    }
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < p.group; c += kThreads) q.dw_partial[chunk * p.I + c0 + c] = dw_s[c];
}

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::gated_rmsnorm
