// Host launchers of the depthwise causal conv1d (+ SiLU) kernels (device code:
// causal_conv1d_kernel.cuh, which explains the layout, the numerics and the document resets).
#include <cuda_runtime.h>

#include "causal_conv1d/causal_conv1d_kernel.cuh"
#include "causal_conv1d/causal_conv1d_params.h"

namespace prism::kernels::ssm {
namespace {

using causal_conv1d::conv_bwd_kernel;
using causal_conv1d::conv_fwd_kernel;

template <typename T, int K>
int launch_fwd(const CausalConv1dFwdParams& p, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>((p.C + kConvThreads - 1) / kConvThreads),
                  static_cast<unsigned>((p.L + kConvFwdTile - 1) / kConvFwdTile), static_cast<unsigned>(p.B));
  conv_fwd_kernel<T, K><<<grid, kConvThreads, 0, s>>>(p);
  return static_cast<int>(cudaGetLastError());
}

template <typename T, int K>
int launch_bwd(const CausalConv1dBwdParams& q, cudaStream_t s) {
  const auto& p = q.f;
  const dim3 grid(static_cast<unsigned>((p.C + kConvThreads - 1) / kConvThreads),
                  static_cast<unsigned>(conv_bwd_num_tiles(p.L)), static_cast<unsigned>(p.B));
  conv_bwd_kernel<T, K><<<grid, kConvThreads, 0, s>>>(q);
  return static_cast<int>(cudaGetLastError());
}

template <template <typename, int> class F, typename Params>
int dispatch(const Params& q, DType dt, int K, cudaStream_t s) {
  auto by_k = [&](auto tag) -> int {
    using T = decltype(tag);
    switch (K) {
      case 2: return F<T, 2>::run(q, s);
      case 3: return F<T, 3>::run(q, s);
      case 4: return F<T, 4>::run(q, s);
    }
    return static_cast<int>(cudaErrorInvalidValue);
  };
  switch (dt) {
    case DType::kFloat32: return by_k(float{});
    case DType::kFloat16: return by_k(dev::half{});
    case DType::kBFloat16: return by_k(dev::bf16{});
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

template <typename T, int K> struct Fwd { static int run(const CausalConv1dFwdParams& p, cudaStream_t s) { return launch_fwd<T, K>(p, s); } };
template <typename T, int K> struct Bwd { static int run(const CausalConv1dBwdParams& p, cudaStream_t s) { return launch_bwd<T, K>(p, s); } };

}  // namespace

int causal_conv1d_fwd(const CausalConv1dFwdParams& p, void* stream) {
  if (p.L == 0 || p.C == 0 || p.B == 0) return 0;
  return dispatch<Fwd>(p, p.dtype, p.K, static_cast<cudaStream_t>(stream));
}

int causal_conv1d_bwd(const CausalConv1dBwdParams& q, void* stream) {
  if (q.f.L == 0 || q.f.C == 0 || q.f.B == 0) return 0;
  return dispatch<Bwd>(q, q.f.dtype, q.f.K, static_cast<cudaStream_t>(stream));
}

}  // namespace prism::kernels::ssm
