// Activation checkpointing for one decoder layer (LibTorch has no torch.utils.checkpoint in C++):
// forward runs the layer without recording a graph and keeps only its input; backward runs it
// again with grad enabled and differentiates that recomputation. Trades one extra layer forward
// per backward for not holding the layer's activations between forward and backward.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

namespace prism::models {

/// A layer as a function of its input hidden state. Everything else it reads (RoPE tables,
/// masks, cu_seqlens) must be captured by value: it is called again during backward, after the
/// forward that created it has returned.
using LayerFn = std::function<at::Tensor(const at::Tensor& input)>;

/// fn(input), differentiable w.r.t. `input` and every tensor of `params`, recomputed in backward.
/// `params` must list every tensor fn uses that may need a gradient, as the very tensors fn uses
/// (autograd only connects the graph through explicit inputs). Undefined entries are not allowed;
/// parameters with requires_grad = false are fine (they get no gradient). fn must be
/// deterministic (no dropout): the recomputation has to reproduce the forward exactly.
at::Tensor checkpointed(LayerFn fn, const at::Tensor& input, at::TensorList params);

}  // namespace prism::models
