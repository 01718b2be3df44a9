// causal_conv1d: argument checks and dispatch (style.md §3 rule 4, the kernel triplet).
//
// Shapes, dtypes and cu_seqlens are checked once here with the argument's name, its expected shape
// and what was found. Dispatch: the CUDA kernel (kernels/causal_conv1d, forward + backward through
// an autograd Function in causal_conv1d_cuda.cpp) for CUDA tensors in fp32/fp16/bf16 with
// K in 2..4, unless p.impl forces the reference; everything else runs the reference.
#include <ATen/ATen.h>

#include "prism/core/error.h"
#include "prism/ops/causal_conv1d.h"

namespace prism::ops {

#ifdef PRISM_HAS_CUDA_KERNELS
bool causal_conv1d_cuda_supports(const at::Tensor& x, const at::Tensor& weight);  // causal_conv1d_cuda.cpp
CausalConv1dResult causal_conv1d_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                      const CausalConv1dParams& p);
#endif

CausalConv1dResult causal_conv1d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                 const CausalConv1dParams& p) {
  PRISM_CHECK(x.defined() && x.dim() == 3, "causal_conv1d: x must be [B, C, L], got ",
              x.defined() ? x.sizes() : at::IntArrayRef{});
  PRISM_CHECK(x.is_floating_point(), "causal_conv1d: x must be a floating-point tensor, got ", x.scalar_type());
  const int64_t Bsz = x.size(0), C = x.size(1), L = x.size(2);
  PRISM_CHECK(weight.defined() && ((weight.dim() == 2 && weight.size(0) == C) ||
                                   (weight.dim() == 3 && weight.size(0) == C && weight.size(1) == 1)),
              "causal_conv1d: weight must be [C, K] or [C, 1, K] with C = ", C, ", got ",
              weight.defined() ? weight.sizes() : at::IntArrayRef{});
  const int64_t K = weight.size(-1);
  PRISM_CHECK(K >= 1, "causal_conv1d: kernel width K (weight.size(-1)) must be >= 1, got ", K);
  PRISM_CHECK(weight.is_floating_point() && weight.device() == x.device(),
              "causal_conv1d: weight must be a floating-point tensor on ", x.device(), ", got ", weight.scalar_type(),
              " on ", weight.device());
  if (bias.defined())
    PRISM_CHECK(bias.dim() == 1 && bias.size(0) == C && bias.device() == x.device(),
                "causal_conv1d: bias must be [C] = [", C, "] on ", x.device(), ", got ", bias.sizes(), " on ",
                bias.device());
  if (p.initial_state.defined())
    PRISM_CHECK(p.initial_state.sizes() == at::IntArrayRef({Bsz, C, K - 1}) && p.initial_state.is_floating_point(),
                "causal_conv1d: initial_state must be [B, C, K-1] = [", Bsz, ", ", C, ", ", K - 1, "], got ",
                p.initial_state.sizes(), " ", p.initial_state.scalar_type());
  if (p.cu_seqlens.defined()) {
    PRISM_CHECK(Bsz == 1, "causal_conv1d: cu_seqlens (packed documents) needs batch size 1, got B = ", Bsz);
    PRISM_CHECK(p.cu_seqlens.dim() == 1 && p.cu_seqlens.numel() >= 2 &&
                    (p.cu_seqlens.scalar_type() == at::kLong || p.cu_seqlens.scalar_type() == at::kInt),
                "causal_conv1d: cu_seqlens must be an int64 [num_docs + 1] tensor, got ", p.cu_seqlens.scalar_type(),
                " ", p.cu_seqlens.sizes());
    auto cu = p.cu_seqlens.to(at::kCPU, at::kLong).contiguous();
    const int64_t* c = cu.data_ptr<int64_t>();
    const int64_t n = cu.numel();
    PRISM_CHECK(c[0] == 0 && c[n - 1] == L, "causal_conv1d: cu_seqlens must start at 0 and end at L = ", L,
                ", got ", c[0], " .. ", c[n - 1]);
    for (int64_t i = 1; i < n; ++i)
      PRISM_CHECK(c[i] >= c[i - 1], "causal_conv1d: cu_seqlens must be non-decreasing, got ", c[i - 1], " then ",
                  c[i], " at index ", i);
  }
#ifdef PRISM_HAS_CUDA_KERNELS
  if (p.impl == Impl::kAuto && causal_conv1d_cuda_supports(x, weight)) return causal_conv1d_cuda(x, weight, bias, p);
#endif
  return causal_conv1d_ref(x, weight, bias, p);
}

}  // namespace prism::ops
