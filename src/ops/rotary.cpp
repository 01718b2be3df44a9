// RoPE: inverse frequencies and cos/sin computed with the same fp32 tensor ops as
// transformers' modeling_rope_utils / LlamaRotaryEmbedding (arange in int64 cast to fp32,
// pow(theta, i/dim), matmul of [dim/2,1] x [1,L] which is one exact product per element).
#include <ATen/ATen.h>

#include <cmath>

#include "prism/core/error.h"
#include "prism/ops/rotary.h"

namespace prism::ops {

at::Tensor rope_inv_freq(const RopeConfig& cfg, const at::Device& device) {
  PRISM_CHECK(cfg.dim > 0 && cfg.dim % 2 == 0, "rope: rotary dim must be even and > 0, got ", cfg.dim);
  auto idx = at::arange(0, cfg.dim, 2, at::TensorOptions().dtype(at::kLong).device(device)).to(at::kFloat);
  auto inv_freq = 1.0 / at::pow(cfg.theta, idx / static_cast<double>(cfg.dim));
  if (cfg.type == "default") return inv_freq;
  PRISM_CHECK(cfg.type == "llama3", "rope: unsupported rope type '", cfg.type, "' (supported: default, llama3)");
  // _compute_llama3_parameters, elementwise on fp32 tensors.
  const double old_ctx = static_cast<double>(cfg.original_max_position_embeddings);
  const double low_wavelen = old_ctx / cfg.low_freq_factor;
  const double high_wavelen = old_ctx / cfg.high_freq_factor;
  auto wavelen = 2 * M_PI / inv_freq;
  auto f1 = at::where(wavelen > low_wavelen, inv_freq / cfg.factor, inv_freq);
  auto smooth = (old_ctx / wavelen - cfg.low_freq_factor) / (cfg.high_freq_factor - cfg.low_freq_factor);
  auto smoothed = (1 - smooth) * f1 / cfg.factor + smooth * f1;
  auto medium = (wavelen < high_wavelen).logical_not() & (wavelen > low_wavelen).logical_not();
  return at::where(medium, smoothed, f1);
}

std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inv_freq, const at::Tensor& positions,
                                               c10::ScalarType dtype) {
  const int64_t b = positions.size(0);
  auto invf = inv_freq.to(at::kFloat).view({1, -1, 1}).expand({b, -1, 1});  // [B, dim/2, 1]
  auto pos = positions.to(inv_freq.device()).to(at::kFloat).unsqueeze(1);  // [B, 1, L]
  auto freqs = at::matmul(invf, pos).transpose(1, 2);                       // [B, L, dim/2]
  auto emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

// rotary_cpu.cpp: the one-pass CPU autograd Function (training, fp32 / fp64, full rotary).
bool apply_rope_cpu_supports(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
at::Tensor apply_rope_cpu(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t rot = cos.size(-1);
  const int64_t d = x.size(-1);
  PRISM_CHECK(rot <= d && rot % 2 == 0, "rope: rotary dim ", rot, " does not fit head_dim ", d);
  // Training on a CPU: one pass forward and backward. Inference keeps the composite below.
  if (apply_rope_cpu_supports(x, cos, sin)) return apply_rope_cpu(x, cos, sin);
  auto c = cos.unsqueeze(1);  // [B, 1, L, rot]
  auto s = sin.unsqueeze(1);
  auto xr = rot == d ? x : x.narrow(-1, 0, rot);
  auto x1 = xr.narrow(-1, 0, rot / 2);
  auto x2 = xr.narrow(-1, rot / 2, rot / 2);
  auto rotated = at::cat({-x2, x1}, -1);
  auto out = xr * c + rotated * s;
  if (rot == d) return out;
  return at::cat({out, x.narrow(-1, rot, d - rot)}, -1);
}

}  // namespace prism::ops
