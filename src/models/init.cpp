// Initial parameter values (see init.h). Everything is drawn in fp32 on the CPU with ATen's serial
// CPU samplers (normal_/uniform_ run in one thread, whatever at::get_num_threads() says) and only
// then cast and copied to the parameter, so an fp32 and a bf16 model from the same seed differ by
// one rounding and a CUDA model equals the CPU one.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "models/init.h"
#include "prism/core/error.h"

namespace prism::models {
namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// splitmix64 finaliser: neighbouring seeds and similar names still give unrelated streams.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

at::Tensor initial_values(InitKind kind, const std::string& name, at::IntArrayRef shape, const ModelConfig& cfg,
                          uint64_t seed, double std) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(mix(seed ^ mix(fnv1a(name))));
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  switch (kind) {
    case InitKind::kNormal:
      return at::empty(shape, f32).normal_(0.0, std, gen);
    case InitKind::kEmbedding: {
      auto t = at::empty(shape, f32).normal_(0.0, std, gen);
      if (cfg.padding_idx) t[*cfg.padding_idx].zero_();
      return t;
    }
    case InitKind::kZeros:
      return at::zeros(shape, f32);
    case InitKind::kOnes:
      return at::ones(shape, f32);
    case InitKind::kMambaALog:
      // A = -exp(A_log) = -(1..H): head h decays at rate h+1 (the S4D-real / Mamba2 choice).
      return at::log(at::arange(1, shape[0] + 1, at::TensorOptions().dtype(at::kDouble))).to(at::kFloat);
    case InitKind::kMambaDtBias: {
      const auto& m = cfg.mamba;
      if (m.dt_bias_init_ones) return at::ones(shape, f32);
      PRISM_CHECK(m.time_step_min > 0.0 && m.time_step_max >= m.time_step_min && m.time_step_floor >= 0.0,
                  "init_weights: ", name, " needs 0 < time_step_min <= time_step_max and time_step_floor >= 0, got ",
                  m.time_step_min, ", ", m.time_step_max, ", ", m.time_step_floor);
      // dt = exp(U * (log max - log min) + log min) floored, then dt_bias = dt + log(-expm1(-dt)),
      // the inverse of softplus, so that softplus(0 + dt_bias) = dt at init. In fp64, then rounded.
      const double lo = std::log(m.time_step_min), hi = std::log(m.time_step_max);
      auto u = at::empty(shape, at::TensorOptions().dtype(at::kDouble)).uniform_(0.0, 1.0, gen);
      auto dt = at::exp(u * (hi - lo) + lo).clamp_min(m.time_step_floor);
      return (dt + at::log(-at::expm1(-dt))).to(at::kFloat);
    }
    case InitKind::kResidualOut: {
      // kaiming_uniform_(a = sqrt 5) on [out, in] is U(-1/sqrt(in), 1/sqrt(in)); GPT-2's depth scaling on top.
      const double bound = 1.0 / std::sqrt(static_cast<double>(shape[1])) /
                           std::sqrt(static_cast<double>(std::max<int64_t>(cfg.num_layers(), 1)));
      return at::empty(shape, f32).uniform_(-bound, bound, gen);
    }
  }
  throw Error("init_weights: unknown init kind for " + name);
}

}  // namespace prism::models
