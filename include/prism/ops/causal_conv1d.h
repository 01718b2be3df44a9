// Depthwise causal conv1d over time (the Mamba2 short convolution), PyTorch cross-correlation
// with K-1 positions of left context: out[c, t] = bias[c] + sum_j w[c, j] * x[c, t-(K-1)+j].
// Left context comes from `initial_state` (the cache: the last K-1 inputs) or zeros, and is cut
// at document starts (cu_seqlens) so a packed forward equals separate forwards.
#pragma once

#include <ATen/core/Tensor.h>

#include "prism/ops/dispatch.h"

namespace prism::ops {

struct CausalConv1dParams {
  at::Tensor cu_seqlens;     ///< packed documents, int64 [num_docs + 1] (B == 1); undefined = one
  at::Tensor initial_state;  ///< [B, C, K-1] inputs preceding position 0 (undefined = zeros)
  bool silu = true;          ///< apply SiLU to the output (all Mamba2 targets do)
  Impl impl = Impl::kAuto;   ///< kAuto: the CUDA kernel (kernels/causal_conv1d) for CUDA tensors
};

struct CausalConv1dResult {
  at::Tensor out;          ///< [B, C, L] in x's dtype
  at::Tensor final_state;  ///< [B, C, K-1]: the last K-1 inputs (with the initial state prepended);
                           ///< not differentiable on the kernel path (a decode cache, not a training output)
};

/// x [B, C, L], weight [C, K] (or [C, 1, K] as stored), bias [C] or undefined.
CausalConv1dResult causal_conv1d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                 const CausalConv1dParams& p);
CausalConv1dResult causal_conv1d_ref(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                     const CausalConv1dParams& p);

}  // namespace prism::ops
