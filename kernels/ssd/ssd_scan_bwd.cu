// Host launcher of the chunked Mamba2 SSD scan backward (device code, the decomposition and the
// determinism argument: ssd_scan_kernel.cuh; tests/ops/test_ssd_emu.cpp runs the same bodies and
// launch sequence on a CPU). Same shapes as the forward: P = 64, N in {64, 128}, Q % 64 == 0, Q <= 256.
#include <cuda_runtime.h>

#include "ssd/ssd_params.h"
#include "ssd/ssd_scan_kernel.cuh"

namespace prism::kernels::ssm {
namespace {

struct StreamLaunch {
  cudaStream_t s;
  template <typename Kernel, typename... Args>
  void operator()(scan::Grid g, Kernel kernel, const Args&... args) const {
    kernel<<<dim3(g.x, g.y, g.z), scan::kThreads, 0, s>>>(args...);
  }
};

template <int P, int N>
int launch_all(const SsdScanBwdParams& q, cudaStream_t s) {
  scan::backward_launches<P, N>(q, StreamLaunch{s});
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int ssd_scan_bwd(const SsdScanBwdParams& q, void* stream) {
  const SsdScanFwdParams& p = q.f;
  if (p.B == 0 || p.H == 0) return 0;
  if (!ssd_scan_supported(p.P, p.N, p.Q) || p.G <= 0 || p.H % p.G != 0 || p.B > 65535 || p.H > 65535 || p.L <= 0 ||
      !q.dy || !q.dx || !q.ddt || !q.dA || !q.dB || !q.dC || (p.D.ptr && !q.dD))
    return static_cast<int>(cudaErrorInvalidValue);
  auto s = static_cast<cudaStream_t>(stream);
  if (p.N == 64) return launch_all<64, 64>(q, s);
  return launch_all<64, 128>(q, s);
}

}  // namespace prism::kernels::ssm
