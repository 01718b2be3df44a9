#include "prism/analysis/landscape.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "analysis/checkpoint_set.h"
#include "prism/analysis/combine.h"
#include "prism/analysis/weights.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/runtime/runtime.h"

namespace prism::analysis {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

const char* kAxisForm = "a comma-separated list (0,0.5,1) or start:stop:count (-1:1:5)";

double parse_number(const std::string& text, const std::string& what, const std::string& spec) {
  const std::string t = trim(text);
  char* end = nullptr;
  const double v = t.empty() ? 0.0 : std::strtod(t.c_str(), &end);
  if (t.empty() || end != t.c_str() + t.size() || !std::isfinite(v))
    throw Error(str("'", t, "' is not a finite number"), key_context("", what, kAxisForm, "'" + spec + "'"));
  return v;
}

}  // namespace

std::vector<double> default_landscape_alphas() { return {0.0, 0.5, 1.0, 1.5, 2.0}; }
std::vector<double> default_landscape_betas() { return {-1.0, -0.5, 0.0, 0.5, 1.0}; }

std::vector<double> parse_grid_axis(const std::string& spec, const std::string& what) {
  std::vector<double> out;
  if (spec.find(':') != std::string::npos) {
    std::vector<std::string> parts;
    for (size_t b = 0;;) {
      const size_t e = spec.find(':', b);
      parts.push_back(spec.substr(b, e == std::string::npos ? std::string::npos : e - b));
      if (e == std::string::npos) break;
      b = e + 1;
    }
    if (parts.size() != 3) throw Error("expected start:stop:count", key_context("", what, kAxisForm, "'" + spec + "'"));
    const double a = parse_number(parts[0], what, spec), z = parse_number(parts[1], what, spec);
    const double n = parse_number(parts[2], what, spec);
    if (n < 2 || n != std::floor(n) || n > 1000)
      throw Error("the count must be an integer from 2 to 1000", key_context("", what, kAxisForm, "'" + spec + "'"));
    const auto count = static_cast<int64_t>(n);
    for (int64_t i = 0; i < count; ++i)
      // The ends exactly as written (the corners (0, 0), (1, 0), (1, 1) must be the checkpoints).
      out.push_back(i == count - 1 ? z : a + (z - a) * static_cast<double>(i) / static_cast<double>(count - 1));
  } else {
    for (size_t b = 0;;) {
      const size_t e = spec.find(',', b);
      out.push_back(parse_number(spec.substr(b, e == std::string::npos ? std::string::npos : e - b), what, spec));
      if (e == std::string::npos) break;
      b = e + 1;
    }
  }
  std::set<double> seen(out.begin(), out.end());
  if (seen.size() != out.size())
    throw Error("values must be distinct", key_context("", what, kAxisForm, "'" + spec + "'"));
  return out;
}

std::vector<double> landscape_coefficients(double alpha, double beta) { return {1.0 - alpha, alpha - beta, beta}; }

std::string point_label(double alpha, double beta) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "alpha=%g_beta=%g", alpha, beta);
  return buf;
}

Landscape evaluate_landscape(const std::string& base, const std::string& mid, const std::string& rl,
                             const eval::SuiteConfig& suite, const LandscapeOptions& opts) {
  PRISM_CHECK(!opts.alphas.empty() && !opts.betas.empty(), "landscape: the grid has no points");
  config::validate_config(suite);
  const auto t0 = std::chrono::steady_clock::now();
  Landscape out;
  out.base = resolve_hf_dir(base);
  out.mid = resolve_hf_dir(mid);
  out.rl = resolve_hf_dir(rl);
  out.alphas = opts.alphas;
  out.betas = opts.betas;
  // Shapes and names of all three are checked before the first (long) evaluation.
  { CheckpointSet check({out.base, out.mid, out.rl}); }
  auto tokenizer = load_tokenizer(out.base, opts.tokenizer);
  models::LoadOptions lo;
  lo.dtype = runtime::parse_dtype(opts.dtype, "--dtype");
  lo.device = runtime::resolve_device(opts.device, 0, "--device").str();
  const size_t total = opts.alphas.size() * opts.betas.size();
  for (double a : opts.alphas) {
    for (double b : opts.betas) {
      if (opts.progress) opts.progress(out.points.size(), total, a, b);
      const auto tp = std::chrono::steady_clock::now();
      LandscapePoint p;
      p.alpha = a;
      p.beta = b;
      p.coefficients = landscape_coefficients(a, b);
      eval::SuiteResult res;
      {
        auto model = load_combination({out.base, out.mid, out.rl}, p.coefficients, lo);
        res = eval::run_suite(suite, *model, *tokenizer);
      }
      p.score = res.score;
      p.generated_tokens = res.generated_tokens;
      p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - tp).count();
      if (!opts.points_dir.empty()) {
        p.report_dir = fs::join(opts.points_dir, point_label(a, b));
        eval::write_report(res, p.report_dir, str("W(alpha=", a, ", beta=", b, ") = ", p.coefficients[0], " base + ",
                                                  p.coefficients[1], " mid + ", p.coefficients[2], " rl"));
      }
      out.points.push_back(std::move(p));
    }
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace prism::analysis
