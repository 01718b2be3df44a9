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
#include "../ssd/ssm_device.cuh"
#include "gated_rmsnorm_params.h"

namespace prism::kernels::gated_rmsnorm {
PRISM_KERNEL_ABI_BEGIN

using ssm::GatedRmsNormBwdParams;
using ssm::GatedRmsNormParams;

// Dtype-erased loads/stores, silu and the block sum are the Mamba2 kernels' shared helpers.
using ssm::block_sum;
using ssm::dsiluf_;
using ssm::ld;
using ssm::round_to;
using ssm::siluf_;
using ssm::st;

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
