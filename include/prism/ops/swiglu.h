// SwiGLU's gate: silu(gate) * up (the gated MLP of Llama-style models).
#pragma once

#include <ATen/core/Tensor.h>

namespace prism::ops {

/// silu(gate) * up, gate and up of one shape. Training on a CPU (grad mode, fp32 / fp64,
/// contiguous inputs) runs a custom autograd Function that works through the rows in cache-sized
/// blocks and recomputes silu(gate) in backward instead of keeping it; otherwise the ATen
/// composite (at::silu(gate) * up).
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);

}  // namespace prism::ops
