#include "util/test_util.h"

#include "prism/io/safetensors.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "prism/core/fs.h"

#include <cstdlib>
#include <sstream>

namespace prism::test {

std::string fixtures_dir() {
  const char* e = std::getenv("PRISM_FIXTURES");
  return e && *e ? e : PRISM_DEFAULT_FIXTURES;
}

std::string fixture(const std::string& rel) { return fixtures_dir() + "/" + rel; }

const std::vector<std::string>& model_fixtures() {
  static const std::vector<std::string> names = {"llama",          "llama_sharded",   "mistral", "granite",
                                                 "granite4_dense", "nemotron_h",      "nemotron_h_tied",
                                                 "granite4_hybrid", "bamba"};
  return names;
}

std::string bin_dir() {
  const char* e = std::getenv("PRISM_BIN");
  return e && *e ? e : PRISM_DEFAULT_BIN;
}

std::string source_dir() {
  const char* e = std::getenv("PRISM_SOURCE");
  return e && *e ? e : PRISM_DEFAULT_SOURCE;
}

std::string make_temp_dir(const std::string& tag) { return prism::fs::make_temp_dir("prism_test_" + tag + "_"); }

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

double max_abs(const at::Tensor& a) { return a.to(at::kDouble).abs().max().item<double>(); }

::testing::AssertionResult close_rel(const at::Tensor& actual, const at::Tensor& expected, double rel, double abs,
                                     const std::string& what) {
  if (actual.sizes() != expected.sizes()) {
    std::ostringstream os;
    os << what << ": shape " << actual.sizes() << " != expected " << expected.sizes();
    return ::testing::AssertionFailure() << os.str();
  }
  if (actual.numel() == 0) return ::testing::AssertionSuccess();
  auto a = actual.detach().to(at::kDouble).cpu();
  auto e = expected.detach().to(at::kDouble).cpu();
  auto d = (a - e).abs();
  double scale = e.abs().max().item<double>();
  double tol = rel * scale + abs;
  auto flat = d.reshape(-1);
  int64_t idx = flat.argmax().item<int64_t>();
  double err = flat[idx].item<double>();
  if (!(err <= tol)) {  // also catches NaN
    std::ostringstream os;
    os << what << ": max|diff| = " << err << " > tol " << tol << " (rel " << rel << " x max|expected| " << scale
       << ") at flat index " << idx << ": actual " << a.reshape(-1)[idx].item<double>() << ", expected "
       << e.reshape(-1)[idx].item<double>();
    return ::testing::AssertionFailure() << os.str();
  }
  return ::testing::AssertionSuccess() << what << ": max|diff| " << err;
}

double central_difference(const std::function<double(const std::vector<at::Tensor>&)>& loss,
                          const std::vector<at::Tensor>& inputs, size_t i, int64_t k, double eps) {
  auto eval = [&](double delta) {
    std::vector<at::Tensor> v;
    for (size_t j = 0; j < inputs.size(); ++j) {
      auto t = inputs[j].detach().clone();
      if (j == i) t.view(-1)[k] += delta;
      v.push_back(t);
    }
    at::NoGradGuard ng;
    return loss(v);
  };
  return (eval(eps) - eval(-eps)) / (2 * eps);
}

std::map<std::string, at::Tensor> checkpoint_weights(const std::string& dir) {
  std::map<std::string, at::Tensor> w;
  io::CheckpointReader r(dir);
  for (const auto& n : r.names()) w[n] = r.get(n).clone();
  return w;
}

void expect_same_weights(const std::string& a, const std::string& b, double rel) {
  auto wa = checkpoint_weights(a), wb = checkpoint_weights(b);
  ASSERT_EQ(wa.size(), wb.size());
  for (const auto& [n, t] : wa) {
    if (rel == 0)
      EXPECT_TRUE(at::equal(t, wb.at(n))) << n << " differs between " << a << " and " << b;
    else
      EXPECT_TRUE(close_rel(wb.at(n), t, rel, 0, n));
  }
}

}  // namespace prism::test
