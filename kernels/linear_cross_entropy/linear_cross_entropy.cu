// Host launcher of the fused cross-entropy chunk kernel (device code and numerics:
// linear_cross_entropy_kernel.cuh).
#include <cuda_runtime.h>

#include <cstdint>

#include "linear_cross_entropy/linear_cross_entropy_kernel.cuh"
#include "linear_cross_entropy/linear_cross_entropy_params.h"

namespace prism::kernels {
namespace {

using namespace lce;  // NOLINT(google-build-using-namespace): the kernel of this file

template <typename T>
int launch(const LinearCeChunkParams& p, cudaStream_t s) {
  if (p.rows == 0) return 0;
  if (p.vocab <= 0 || p.logits == nullptr || p.labels == nullptr || p.loss == nullptr || p.lse == nullptr)
    return static_cast<int>(cudaErrorInvalidValue);
  constexpr int kVec = vec_width<T>();
  const int threads = threads_for(p.vocab);
  const auto grid = static_cast<unsigned>(p.rows);
  auto* x = static_cast<T*>(p.logits);
  const bool vec = p.vocab % kVec == 0 && (reinterpret_cast<uintptr_t>(p.logits) & 15u) == 0;
  if (vec) {
    linear_ce_chunk_kernel<T, kVec><<<grid, threads, 0, s>>>(x, p.labels, p.loss, p.lse, p.vocab, p.ignore_index,
                                                              p.logit_scale, p.z_loss_weight, p.grad_scale,
                                                              p.write_grad);
  } else {
    linear_ce_chunk_kernel<T, 1><<<grid, threads, 0, s>>>(x, p.labels, p.loss, p.lse, p.vocab, p.ignore_index,
                                                           p.logit_scale, p.z_loss_weight, p.grad_scale,
                                                           p.write_grad);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int linear_ce_chunk(const LinearCeChunkParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::kFloat32: return launch<float>(p, s);
    case DType::kFloat16: return launch<dev::half>(p, s);
    case DType::kBFloat16: return launch<dev::bf16>(p, s);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace prism::kernels
