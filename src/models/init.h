// Initialisation rules for training from scratch: which distribution each parameter kind gets,
// following transformers' `_init_weights` of each family (docs/models.md "Initialisation").
// causal_lm.cpp tags every parameter slot with its rule when it declares it, so the rule sits
// next to the tensor's name and shape and no name matching is needed.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "prism/models/model_config.h"

namespace prism::models {

enum class InitKind {
  kNormal,       ///< N(0, initializer_range): linear and conv1d weights, lm_head
  kEmbedding,    ///< N(0, initializer_range), row `padding_idx` zero
  kZeros,        ///< biases
  kOnes,         ///< RMSNorm weights (incl. the gated norm), Mamba2 D
  kMambaALog,    ///< log(1..H)
  kMambaDtBias,  ///< softplus^-1 of a log-uniform dt, or 1 (Mamba2Config::dt_bias_init_ones)
  kResidualOut,  ///< Nemotron-H rescale_prenorm_residual: U(+-1/sqrt(fan_in)) / sqrt(num_layers)
};

/// The initial values of one parameter as an fp32 CPU tensor of `shape`. Random draws come from
/// a CPU generator seeded from (seed, name), so a tensor's values depend only on the seed, its
/// name and its shape: not on the thread count, the device, the dtype or the other parameters.
at::Tensor initial_values(InitKind kind, const std::string& name, at::IntArrayRef shape, const ModelConfig& cfg,
                          uint64_t seed, double std);

}  // namespace prism::models
