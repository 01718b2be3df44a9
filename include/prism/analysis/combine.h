// Weights as linear combinations of checkpoints, W = Σ_i c_i W_i, built tensor by tensor from the
// memory maps (the loss-landscape grid W(α, β) = W_base + α(W_mid − W_base) + β(W_rl − W_mid)
// is combine({base, mid, rl}, {1 − α, α − β, β})).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "prism/models/causal_lm.h"

namespace prism::analysis {

/// A model whose every parameter is Σ_i coeffs[i] · W_i (accumulated in fp64 in chunks, then cast
/// to `opts.dtype` on `opts.device`). The first checkpoint's config.json defines the model; every
/// checkpoint must hold each parameter with the same shape. Peak memory: the model plus one chunk.
std::unique_ptr<models::CausalLM> load_combination(const std::vector<std::string>& checkpoints,
                                                   const std::vector<double>& coeffs,
                                                   const models::LoadOptions& opts = {});

}  // namespace prism::analysis
