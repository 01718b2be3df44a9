// Host launcher of the chunked Mamba2 SSD scan forward (device code and the math:
// ssd_scan_kernel.cuh; the CPU emulator test tests/ops/test_ssd_emu.cpp runs the same bodies and
// the same launch sequence). Compile-time P = 64, N in {64, 128}; Q a multiple of 64 up to 256.
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
int launch_all(const SsdScanFwdParams& p, cudaStream_t s) {
  const StreamLaunch launch{s};
  scan::forward_launches<P, N>(p, launch);
  scan::forward_output_launch<P, N>(p, launch);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

bool ssd_scan_supported(int64_t P, int64_t N, int64_t Q) {
  return P == 64 && (N == 64 || N == 128) && Q % scan::kTile == 0 && Q >= scan::kTile && Q <= scan::kMaxQ;
}

int ssd_scan_fwd(const SsdScanFwdParams& p, void* stream) {
  if (p.L == 0 || p.B == 0 || p.H == 0) return 0;
  if (!ssd_scan_supported(p.P, p.N, p.Q) || p.G <= 0 || p.H % p.G != 0 || p.B > 65535 || p.H > 65535)
    return static_cast<int>(cudaErrorInvalidValue);
  auto s = static_cast<cudaStream_t>(stream);
  if (p.N == 64) return launch_all<64, 64>(p, s);
  return launch_all<64, 128>(p, s);
}

}  // namespace prism::kernels::ssm
