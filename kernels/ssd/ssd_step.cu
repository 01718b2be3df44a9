// Host launcher of the one-token Mamba2 decode step (selective_state_update); device code and
// the math: ssd_step_kernel.cuh (the CPU emulator test tests/ops/test_ssd_emu.cpp runs the same
// body with the same launch shape).
#include <cuda_runtime.h>

#include "ssd/ssd_params.h"
#include "ssd/ssd_step_kernel.cuh"

namespace prism::kernels::ssm {
namespace {

struct StreamLaunch {
  cudaStream_t s;
  template <typename Kernel, typename... Args>
  void operator()(unsigned grid_x, unsigned grid_y, size_t smem, Kernel kernel, const Args&... args) const {
    kernel<<<dim3(grid_x, grid_y), step::kThreads, smem, s>>>(args...);
  }
};

}  // namespace

int ssd_step_fwd(const SsdStepParams& p, void* stream) {
  if (p.B == 0 || p.H == 0 || p.P == 0) return 0;
  if (p.G <= 0 || p.H % p.G != 0 || p.B > 65535) return static_cast<int>(cudaErrorInvalidValue);
  step::step_launch(p, StreamLaunch{static_cast<cudaStream_t>(stream)});
  return static_cast<int>(cudaGetLastError());
}

}  // namespace prism::kernels::ssm
