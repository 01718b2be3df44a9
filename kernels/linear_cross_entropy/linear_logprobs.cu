// Host launchers of the linear_logprobs chunk kernels (device code and numerics:
// linear_logprobs_kernel.cuh).
#include <cuda_runtime.h>

#include <cstdint>

#include "linear_cross_entropy/linear_logprobs_kernel.cuh"
#include "linear_cross_entropy/linear_logprobs_params.h"

namespace prism::kernels {
namespace {

using namespace llp;  // NOLINT(google-build-using-namespace): the kernels of this file

template <typename T>
bool vectorized(const LinearLogprobsChunkParams& p) {
  return p.vocab % vec_width<T>() == 0 && (reinterpret_cast<uintptr_t>(p.logits) & 15u) == 0;
}

template <typename T>
int launch_fwd(const LinearLogprobsChunkParams& p, cudaStream_t s) {
  if (p.rows == 0) return 0;
  if (p.vocab <= 0 || p.logits == nullptr || p.labels == nullptr || p.logprob == nullptr || p.entropy == nullptr ||
      p.lse == nullptr)
    return static_cast<int>(cudaErrorInvalidValue);
  constexpr int kVec = vec_width<T>();
  const int threads = threads_for(p.vocab);
  const auto grid = static_cast<unsigned>(p.rows);
  const auto* x = static_cast<const T*>(p.logits);
  if (vectorized<T>(p))
    linear_logprobs_fwd_kernel<T, kVec>
        <<<grid, threads, 0, s>>>(x, p.labels, p.logprob, p.entropy, p.lse, p.vocab, p.ignore_index, p.logit_scale);
  else
    linear_logprobs_fwd_kernel<T, 1>
        <<<grid, threads, 0, s>>>(x, p.labels, p.logprob, p.entropy, p.lse, p.vocab, p.ignore_index, p.logit_scale);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int launch_bwd(const LinearLogprobsChunkParams& p, cudaStream_t s) {
  if (p.rows == 0) return 0;
  if (p.vocab <= 0 || p.logits == nullptr || p.labels == nullptr || p.entropy == nullptr || p.lse == nullptr ||
      (p.grad_logprob == nullptr && p.grad_entropy == nullptr))
    return static_cast<int>(cudaErrorInvalidValue);
  constexpr int kVec = vec_width<T>();
  const int threads = threads_for(p.vocab);
  const auto grid = static_cast<unsigned>(p.rows);
  auto* x = static_cast<T*>(p.logits);
  if (vectorized<T>(p))
    linear_logprobs_bwd_kernel<T, kVec><<<grid, threads, 0, s>>>(
        x, p.labels, p.lse, p.entropy, p.grad_logprob, p.grad_entropy, p.vocab, p.ignore_index, p.logit_scale);
  else
    linear_logprobs_bwd_kernel<T, 1><<<grid, threads, 0, s>>>(x, p.labels, p.lse, p.entropy, p.grad_logprob,
                                                              p.grad_entropy, p.vocab, p.ignore_index, p.logit_scale);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int linear_logprobs_fwd_chunk(const LinearLogprobsChunkParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::kFloat32:
      return launch_fwd<float>(p, s);
    case DType::kFloat16:
      return launch_fwd<dev::half>(p, s);
    case DType::kBFloat16:
      return launch_fwd<dev::bf16>(p, s);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

int linear_logprobs_bwd_chunk(const LinearLogprobsChunkParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::kFloat32:
      return launch_bwd<float>(p, s);
    case DType::kFloat16:
      return launch_bwd<dev::half>(p, s);
    case DType::kBFloat16:
      return launch_bwd<dev::bf16>(p, s);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace prism::kernels
