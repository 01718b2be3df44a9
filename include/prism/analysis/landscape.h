// The study's pass-rate landscape (paper-setup.md §6 "Pass-rate landscape"): the evaluation suite
// run on the weights W(α, β) = W_base + α(W_mid − W_base) + β(W_rl − W_mid) over a grid of (α, β).
// (0, 0) is the base, (1, 0) the mid-trained model, (1, 1) the RL model; the default 5×5 grid is
// centred at the mid-trained model with one axis toward the base and one toward RL (the paper's).
// Each point's model is built once in memory from the three checkpoints (load_combination: no
// checkpoint is written per point) and evaluated by eval::run_suite, as `prism-train eval` does.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "prism/eval/suite.h"

namespace prism::analysis {

/// α ∈ {0, 0.5, 1, 1.5, 2} (toward the base below 1), β ∈ {−1, −0.5, 0, 0.5, 1} (toward RL above 0).
std::vector<double> default_landscape_alphas();
std::vector<double> default_landscape_betas();

/// Parses a grid axis: a comma-separated list ("0,0.5,1") or start:stop:count with count ≥ 2
/// points evenly spaced including both ends ("-1:1:5"). Values must be finite and distinct.
/// Throws prism::Error naming `what` (the option) and the spec, on one line.
std::vector<double> parse_grid_axis(const std::string& spec, const std::string& what);

/// Coefficients (c_base, c_mid, c_rl) of W(α, β) as Σ c_i W_i: (1 − α, α − β, β).
std::vector<double> landscape_coefficients(double alpha, double beta);

struct LandscapeOptions {
  std::vector<double> alphas = default_landscape_alphas();
  std::vector<double> betas = default_landscape_betas();
  std::string dtype = "fp32";  ///< model dtype of every point: fp32 | bf16
  std::string device = "cpu";  ///< cpu | cuda | cuda:N | auto
  std::string tokenizer;       ///< tokenizer.json (or its directory); default: the base's
  /// When set, each point's eval report (report.json, report.md, samples.jsonl) is written to
  /// <points_dir>/<point_label(α, β)>.
  std::string points_dir;
  /// Told before each point is evaluated (points done, total, α, β).
  std::function<void(size_t, size_t, double, double)> progress;
};

struct LandscapePoint {
  double alpha = 0, beta = 0;
  std::vector<double> coefficients;  ///< (c_base, c_mid, c_rl)
  eval::SuiteScore score;
  double seconds = 0;  ///< building the model and evaluating it
  int64_t generated_tokens = 0;
  std::string report_dir;  ///< "" unless LandscapeOptions::points_dir
};

struct Landscape {
  std::string base, mid, rl;  ///< resolved HF directories
  std::vector<double> alphas, betas;
  std::vector<LandscapePoint> points;  ///< row-major: points[i * betas.size() + j] is (alphas[i], betas[j])
  double seconds = 0;
};

/// "alpha=<α>_beta=<β>" with %g numbers: the per-point report directory's name.
std::string point_label(double alpha, double beta);

/// Evaluates `suite` at every grid point (α outer, β inner). The three checkpoints must hold the
/// same parameters with the same shapes (error naming the file and tensor otherwise); only one
/// point's model is in memory at a time.
Landscape evaluate_landscape(const std::string& base, const std::string& mid, const std::string& rl,
                             const eval::SuiteConfig& suite, const LandscapeOptions& opts = {});

}  // namespace prism::analysis
