// One-token Mamba2 decode step (selective_state_update), fp32 state updated in place:
//   state = state * exp(dt*A) + (dt*x) ⊗ B_g,   y = state · C_g + D*x.
// Device code only (host launcher: ssd_step.cu), written against common/device_compat.cuh so that
// tests/ops/test_ssd_emu.cpp runs this exact body and launch shape on a CPU.
//
// One block per (batch, head); each warp walks the head's P state rows with its lanes along N,
// so every state access is a coalesced row. B_g / C_g are staged in shared memory once.
// Operation order (and roundings, no FMA contraction) follows ssd_step_ref in
// src/ops/ssd_scan_ref.cpp: the updated state is the reference's to the last bit (up to expf);
// only y's dot product is summed in a different order (lane-strided fmaf, then a warp tree).
#pragma once

#include "../common/kernel_abi.h"

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../common/device_compat.cuh"
#include "ssd_params.h"
#include "ssm_device.cuh"

namespace prism::kernels::ssm::step {
PRISM_KERNEL_ABI_BEGIN

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads) ssd_step_kernel(SsdStepParams p) {
  PRISM_DYNAMIC_SMEM(float, bc);  // [2 * N]: B_g then C_g
  const int64_t b = blockIdx.y, h = blockIdx.x;
  const int64_t g = h / (p.H / p.G);
  for (int64_t n = threadIdx.x; n < p.N; n += kThreads) {
    bc[n] = ld(p.Bm.ptr, p.Bm.dtype, b * p.Bm.s0 + g * p.Bm.s1 + n);
    bc[p.N + n] = ld(p.Cm.ptr, p.Cm.dtype, b * p.Cm.s0 + g * p.Cm.s1 + n);
  }
  __syncthreads();
  const float dt = ld(p.dt.ptr, p.dt.dtype, b * p.dt.s0 + h * p.dt.s1);
  const float dA = expf(__fmul_rn(dt, ld(p.A.ptr, p.A.dtype, h * p.A.s0)));
  const float Dh = p.D.ptr ? ld(p.D.ptr, p.D.dtype, h * p.D.s0) : 0.f;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* sh = p.state + (b * p.H + h) * p.P * p.N;  // [P, N] this head's state
  for (int64_t pp = warp; pp < p.P; pp += kThreads / 32) {
    const float x = ld(p.x.ptr, p.x.dtype, b * p.x.s0 + h * p.x.s1 + pp * p.x.s2);
    const float dtx = __fmul_rn(dt, x);
    float* row = sh + pp * p.N;
    float acc = 0.f;
    for (int64_t n = lane; n < p.N; n += 32) {
      const float s = __fadd_rn(__fmul_rn(row[n], dA), __fmul_rn(dtx, bc[n]));
      row[n] = s;
      acc = fmaf(s, bc[p.N + n], acc);
    }
    acc = warp_sum(acc);  // every lane of the warp has the same trip count: full-warp shuffles
    if (lane == 0) p.y[(b * p.H + h) * p.P + pp] = p.D.ptr ? __fadd_rn(acc, __fmul_rn(Dh, x)) : acc;
  }
}

/// The launch: grid (H, B), kThreads threads, 2 N floats of dynamic shared memory.
/// `launch(grid_x, grid_y, smem_bytes, kernel, p)` runs it on the caller's stream (ssd_step.cu) or
/// through the block emulator (test_ssd_emu.cpp). The caller has checked B, H, G (ssd_step_fwd).
template <typename Launch>
void step_launch(const SsdStepParams& p, Launch&& launch) {
  const size_t smem = 2 * static_cast<size_t>(p.N) * sizeof(float);
  launch(static_cast<unsigned>(p.H), static_cast<unsigned>(p.B), smem, ssd_step_kernel, p);
}

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::ssm::step
