// Representation similarity of two checkpoints: linear CKA (Kornblith et al. 2019) with column
// centring between mean-pooled hidden states, per layer (paper-setup.md §6 "CKA"):
//   CKA(X, Y) = ‖Ycᵀ Xc‖_F² / (‖Xcᵀ Xc‖_F ‖Ycᵀ Yc‖_F),  Xc = X − column means,
// X, Y ∈ R^{n×d}: one row per input, the hidden state of a layer averaged over the input's tokens.
// Computed through n×n Gram matrices (‖YcᵀXc‖_F² = tr(Kc Lc), Kc = H X Xᵀ H), so bootstrap
// subsets cost O(n²) per layer and the features are never re-read.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace prism::analysis {

/// Linear CKA with centring of two feature matrices [n, d1] and [n, d2] (same n ≥ 2), in fp64.
/// NaN when either centred matrix is zero.
double linear_cka(const at::Tensor& x, const at::Tensor& y);

/// Linear CKA from uncentred Gram matrices K = X Xᵀ and L = Y Yᵀ ([n, n]); centres them.
double linear_cka_gram(const at::Tensor& k, const at::Tensor& l);

struct CkaOptions {
  std::string field = "text";  ///< JSONL field holding the input text
  int64_t num_inputs = 200;    ///< first N records of the file (0 = all)
  int64_t resamples = 20;      ///< bootstrap resamples ...
  int64_t subset = 100;        ///< ... of this many inputs each, drawn without replacement
  uint64_t seed = 0;
  int64_t max_tokens = 512;        ///< inputs are truncated to this many tokens (0 = no limit)
  bool add_special_tokens = true;  ///< as the tokenizer's post-processor adds them (BOS …)
  std::string dtype = "fp32";      ///< forward dtype: fp32 | bf16
  std::string device = "cpu";      ///< cpu | cuda | auto
  std::string tokenizer;           ///< tokenizer.json (or its directory); default: each model's own
};

struct CkaResult {
  std::string model_a, model_b, inputs;
  int64_t num_inputs = 0;
  int64_t total_tokens_a = 0, total_tokens_b = 0;
  int64_t truncated = 0;                      ///< inputs cut at max_tokens
  std::vector<double> full;                   ///< per layer (0 = embedding output): CKA over all inputs
  std::vector<double> boot_mean;              ///< per layer: mean over resamples
  std::vector<double> boot_std;               ///< per layer: sample std over resamples (n − 1)
  int64_t min_layer = -1;                     ///< argmin of boot_mean
  double min_value = 0.0;                     ///< boot_mean[min_layer]
  double min_std = 0.0;                       ///< std over resamples of each resample's minimum over layers
  double min_full = 0.0;                      ///< minimum of `full`
  std::vector<std::vector<int64_t>> subsets;  ///< the inputs (0-based record order) of each resample
  double seconds = 0.0;
};

/// Mean-pooled hidden states ([num_layers + 1, n, D] fp64) of the model in `dir` on token
/// sequences run one at a time (batch 1, no padding); entry 0 is the embedding output.
at::Tensor pooled_hidden_states(const std::string& dir, const std::vector<std::vector<int32_t>>& inputs,
                                const std::string& dtype = "fp32", const std::string& device = "cpu");

/// Reads the inputs, tokenizes them with each model's tokenizer, runs both models (one after the
/// other: never both in memory) and bootstraps per-layer CKA. The models must have the same
/// number of layers.
CkaResult compare_representations(const std::string& model_a, const std::string& model_b, const std::string& inputs,
                                  const CkaOptions& opts = {});

}  // namespace prism::analysis
