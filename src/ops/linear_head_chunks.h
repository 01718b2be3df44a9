// Pieces shared by the ops that run an lm head (hidden [N, D] @ weight^T [D, V]) in token chunks
// without holding [N, V] logits: ops::linear_cross_entropy and ops::linear_logprobs. Internal to
// the ops module.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "prism/ops/dispatch.h"

namespace prism::ops::detail {

/// Shapes, dtypes, devices and label range of an lm-head op; `op` prefixes every message.
void check_linear_head_args(const char* op, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& labels, int64_t ignore_index, double logits_scaling,
                            int64_t chunk_tokens);

/// Tokens per chunk: `chunk_tokens`, or (0) about 256 MiB of logits per chunk; clamped to [1, N].
int64_t linear_head_chunk_rows(int64_t chunk_tokens, int64_t N, int64_t V, int64_t elem_bytes);

/// acc (+)= dlogits^T @ hc: acc [V, D] is fp32 for bf16/fp16 operands (the sum over chunks is
/// rounded once, at the end), else the operands' dtype. `first`: overwrite instead of add (the
/// GEMM runs with beta = 0, so acc may start uninitialised).
void accumulate_weight_grad(const at::Tensor& acc, const at::Tensor& dlogits, const at::Tensor& hc, bool first);

/// Whether the fused CUDA kernels of an lm-head op apply: kAuto, both tensors on CUDA, same
/// fp32/fp16/bf16 dtype (linear_cross_entropy_uses_kernel and linear_logprobs_uses_kernel).
bool linear_head_uses_kernel(const at::Tensor& hidden, const at::Tensor& weight, Impl impl);

}  // namespace prism::ops::detail
