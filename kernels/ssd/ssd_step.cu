// One-token Mamba2 decode step (selective_state_update), fp32 state updated in place:
//   state = state * exp(dt*A) + (dt*x) ⊗ B_g,   y = state · C_g + D*x.
// One block per (batch, head); each warp walks the head's P state rows with its lanes along N,
// so every state access is a coalesced row. B_g / C_g are staged in shared memory once.
// Operation order (and roundings, no FMA contraction) follows ssd_step in src/ops/ssd_scan_ref.cpp.
#include <cuda_runtime.h>

#include "ssd/ssd_params.h"
#include "ssd/ssm_device.cuh"

namespace prism::kernels::ssm {
namespace {

constexpr int kStepThreads = 128;

__global__ void __launch_bounds__(kStepThreads) ssd_step_kernel(SsdStepParams p) {
  extern __shared__ float bc[];  // [2 * N]: B_g then C_g
  const int64_t b = blockIdx.y, h = blockIdx.x;
  const int64_t g = h / (p.H / p.G);
  for (int64_t n = threadIdx.x; n < p.N; n += kStepThreads) {
    bc[n] = ld(p.Bm.ptr, p.Bm.dtype, b * p.Bm.s0 + g * p.Bm.s1 + n);
    bc[p.N + n] = ld(p.Cm.ptr, p.Cm.dtype, b * p.Cm.s0 + g * p.Cm.s1 + n);
  }
  __syncthreads();
  const float dt = ld(p.dt.ptr, p.dt.dtype, b * p.dt.s0 + h * p.dt.s1);
  const float dA = expf(__fmul_rn(dt, ld(p.A.ptr, p.A.dtype, h * p.A.s0)));
  const float Dh = p.D.ptr ? ld(p.D.ptr, p.D.dtype, h * p.D.s0) : 0.f;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* sh = p.state + (b * p.H + h) * p.P * p.N;
  for (int64_t pp = warp; pp < p.P; pp += kStepThreads / 32) {
    const float x = ld(p.x.ptr, p.x.dtype, b * p.x.s0 + h * p.x.s1 + pp * p.x.s2);
    const float dtx = __fmul_rn(dt, x);
    float* row = sh + pp * p.N;
    float acc = 0.f;
    for (int64_t n = lane; n < p.N; n += 32) {
      const float s = __fadd_rn(__fmul_rn(row[n], dA), __fmul_rn(dtx, bc[n]));
      row[n] = s;
      acc = fmaf(s, bc[p.N + n], acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) p.y[(b * p.H + h) * p.P + pp] = p.D.ptr ? __fadd_rn(acc, __fmul_rn(Dh, x)) : acc;
  }
}

}  // namespace

int ssd_step_fwd(const SsdStepParams& p, void* stream) {
  if (p.B == 0 || p.H == 0 || p.P == 0) return 0;
  if (p.G <= 0 || p.H % p.G != 0 || p.B > 65535) return static_cast<int>(cudaErrorInvalidValue);
  const dim3 grid(static_cast<unsigned>(p.H), static_cast<unsigned>(p.B));
  const size_t smem = 2 * static_cast<size_t>(p.N) * sizeof(float);
  ssd_step_kernel<<<grid, kStepThreads, smem, static_cast<cudaStream_t>(stream)>>>(p);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace prism::kernels::ssm
