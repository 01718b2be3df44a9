// Rotary position embedding (rotate-half / NeoX convention as in HF Llama checkpoints), with
// the inverse frequencies computed by the same fp32 ATen ops transformers uses so that cos/sin
// agree bit for bit.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace prism::ops {

struct RopeConfig {
  std::string type = "default";  ///< "default" or "llama3"
  double theta = 10000.0;
  int64_t dim = 0;               ///< rotary dim (head_dim * partial_rotary_factor), even
  // llama3 scaling (modeling_rope_utils._compute_llama3_parameters)
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

/// Inverse frequencies [dim/2], fp32.
at::Tensor rope_inv_freq(const RopeConfig& cfg, const at::Device& device);

/// cos, sin [B, L, dim] in `dtype` for integer positions [B, L].
std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inv_freq, const at::Tensor& positions,
                                               c10::ScalarType dtype);

/// x [B, H, L, d] with cos/sin [B, L, rot]; rotates the first `rot` channels of each head.
/// On a CPU in training (x requires grad, fp32/fp64, rot == d) a one-pass autograd Function with
/// the same expression (forward bit-identical); otherwise the ATen composite.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace prism::ops
