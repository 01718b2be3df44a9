// Host launchers of the fused gated RMSNorm kernels (device code: gated_rmsnorm_kernel.cuh, which
// explains the numerics and the deterministic weight-gradient partial rows).
#include <cuda_runtime.h>

#include "gated_rmsnorm/gated_rmsnorm_kernel.cuh"
#include "gated_rmsnorm/gated_rmsnorm_params.h"

namespace prism::kernels::ssm {

using gated_rmsnorm::gated_norm_bwd_kernel;
using gated_rmsnorm::gated_norm_fwd_kernel;

int gated_rms_norm_fwd(const GatedRmsNormParams& p, void* stream) {
  if (p.rows == 0 || p.I == 0) return 0;
  if (p.group <= 0 || p.I % p.group != 0 || p.rows > 0x7fffffff) return static_cast<int>(cudaErrorInvalidValue);
  const dim3 grid(static_cast<unsigned>(p.rows), static_cast<unsigned>(p.I / p.group));
  gated_norm_fwd_kernel<kGatedNormThreads><<<grid, kGatedNormThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  return static_cast<int>(cudaGetLastError());
}

int gated_rms_norm_bwd(const GatedRmsNormBwdParams& q, void* stream) {
  const auto& p = q.f;
  if (p.rows == 0 || p.I == 0) return 0;
  if (p.group <= 0 || p.I % p.group != 0 || p.group > kGatedNormMaxGroup || !p.rstd)
    return static_cast<int>(cudaErrorInvalidValue);
  const size_t smem = static_cast<size_t>(p.group) * sizeof(float);
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(gated_norm_bwd_kernel<kGatedNormThreads>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(smem));
    if (e != cudaSuccess) return static_cast<int>(e);
  }
  const dim3 grid(static_cast<unsigned>(q.num_chunks), static_cast<unsigned>(p.I / p.group));
  gated_norm_bwd_kernel<kGatedNormThreads><<<grid, kGatedNormThreads, smem, static_cast<cudaStream_t>(stream)>>>(q);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace prism::kernels::ssm
