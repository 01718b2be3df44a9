// linear_logprobs with the CUDA kernels (GPU only; skipped without one) against float64: fresh
// random inputs and per-row upstream gradients per case, the caching allocator poisoned with NaN
// bytes before every run (so an output element the op forgets to write shows up), vocabularies of
// 1K to 128K including odd ones (the kernels' scalar path), one token, chunk sizes that do not
// divide N, ignore_index rows, Granite's logits scaling and sampling temperatures, bf16 / fp16 /
// fp32. Rule: the error of log-probs, entropies and both gradients is at most twice the error of
// linear_logprobs_ref (matmul + log_softmax) in the same precision, and nothing is NaN.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <vector>

#include "prism/ops/linear_logprobs.h"
#include "util/test_util.h"

namespace {

using prism::ops::Impl;
using prism::ops::linear_logprobs;
using prism::ops::LinearLogprobsOptions;
using prism::test::max_abs;
using prism::test::max_abs_diff;

// Blocks freed to the caching allocator are handed out again: fill a spread of sizes with 0xFF
// (NaN in every float type) and free them.
void poison_allocator() {
  std::vector<at::Tensor> keep;
  for (int64_t bytes : {int64_t{512}, int64_t{1} << 16, int64_t{1} << 20, int64_t{8} << 20, int64_t{64} << 20,
                        int64_t{512} << 20, int64_t{2} << 30})
    for (int k = 0; k < 2; ++k)
      keep.push_back(at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA)).fill_(255));
}

struct Out {
  at::Tensor logprobs, entropy, dh, dw;
};

// Forward + backward of sum(g_lp * logprobs) + sum(g_h * entropy); g_h undefined: log-probs only.
Out run(const at::Tensor& h0, const at::Tensor& w0, const at::Tensor& labels, const LinearLogprobsOptions& o,
        const at::Tensor& g_lp, const at::Tensor& g_h, Impl impl) {
  auto h = h0.detach().clone().requires_grad_(true);
  auto w = w0.detach().clone().requires_grad_(true);
  poison_allocator();
  auto r = linear_logprobs(h, w, labels, o, impl);
  std::vector<at::Tensor> outs{r.logprobs}, grads{g_lp.to(r.logprobs.scalar_type())};
  if (g_h.defined()) {
    outs.push_back(r.entropy);
    grads.push_back(g_h.to(r.entropy.scalar_type()));
  }
  torch::autograd::backward(outs, grads);
  return {r.logprobs.detach().cpu(), r.entropy.detach().cpu(), h.grad(), w.grad()};
}

struct Case {
  int64_t N, D, V, chunk;
  double scaling, temperature;
  bool entropy_grad;
  at::ScalarType dt;
};

TEST(LinearLogprobsCuda, MatchesFloat64WithinTwiceTheReferenceError) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(0);
  const std::vector<Case> cases = {
      {1, 64, 1000, 0, 1.0, 1.0, true, at::kBFloat16},         // a single token
      {37, 128, 32000, 0, 1.0, 0.7, true, at::kBFloat16},      // Llama-2 vocab, sampling temperature
      {300, 256, 32768, 128, 8.0, 1.0, true, at::kBFloat16},   // chunk does not divide N, Granite-like scaling
      {1031, 256, 128256, 0, 1.0, 1.0, false, at::kBFloat16},  // Llama-3 vocab, automatic chunks
      {515, 128, 50257, 100, 16.0, 1.3, true, at::kBFloat16},  // odd vocab: scalar kernel path
      {129, 64, 32000, 0, 1.0, 0.6, true, at::kHalf},         {77, 64, 8192, 0, 2.0, 1.0, true, at::kFloat},
      {64, 96, 4099, 17, 1.0, 0.9, false, at::kFloat},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.dt << " N " << c.N << " D " << c.D << " V " << c.V << " chunk " << c.chunk
                                      << " scaling " << c.scaling << " T " << c.temperature << " entropy grad "
                                      << c.entropy_grad);
    const auto dev = at::TensorOptions().device(at::kCUDA);
    auto h = at::randn({c.N, c.D}, dev.dtype(at::kDouble)).to(c.dt);
    auto w = (at::randn({c.V, c.D}, dev.dtype(at::kDouble)) * (2.0 / std::sqrt(static_cast<double>(c.D)))).to(c.dt);
    auto labels = at::randint(0, c.V, {c.N}, dev.dtype(at::kLong));
    labels.masked_fill_(at::rand({c.N}, dev.dtype(at::kFloat)).lt(0.25), -100);
    if (c.N > 2) labels[1] = -100;
    auto g_lp = at::randn({c.N}, dev.dtype(at::kDouble));
    auto g_h = c.entropy_grad ? at::randn({c.N}, dev.dtype(at::kDouble)) : at::Tensor();
    LinearLogprobsOptions o;
    o.logits_scaling = c.scaling;
    o.temperature = c.temperature;
    o.chunk_tokens = c.chunk;
    ASSERT_TRUE(prism::ops::linear_logprobs_uses_kernel(h, w)) << "the kernels must be what is tested";
    auto truth = run(h.to(at::kDouble), w.to(at::kDouble), labels, o, g_lp, g_h, Impl::kReference);
    auto ref = run(h, w, labels, o, g_lp, g_h, Impl::kReference);
    auto got = run(h, w, labels, o, g_lp, g_h, Impl::kAuto);
    ASSERT_EQ(got.logprobs.scalar_type(), at::kFloat);
    ASSERT_EQ(got.entropy.scalar_type(), at::kFloat);
    ASSERT_EQ(got.dh.scalar_type(), c.dt);
    ASSERT_EQ(got.dw.scalar_type(), c.dt);
    auto rule = [](const at::Tensor& g, const at::Tensor& r, const at::Tensor& t, const char* what) {
      EXPECT_FALSE(g.isnan().any().item<bool>()) << what << " has NaN";
      const double eg = max_abs_diff(g, t), er = max_abs_diff(r, t);
      EXPECT_LE(eg, 2 * er + 1e-6 * max_abs(t)) << what << ": kernel error " << eg << ", reference error " << er;
    };
    rule(got.logprobs, ref.logprobs, truth.logprobs, "logprobs");
    rule(got.entropy, ref.entropy, truth.entropy, "entropy");
    rule(got.dh, ref.dh, truth.dh, "d hidden");
    rule(got.dw, ref.dw, truth.dw, "d weight");
  }
}

TEST(LinearLogprobsCuda, AllIgnoredNoGradAndRepeatability) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(1);
  const auto dev = at::TensorOptions().device(at::kCUDA);
  const int64_t N = 200, D = 128, V = 32000;
  auto h = at::randn({N, D}, dev.dtype(at::kBFloat16));
  auto w = (at::randn({V, D}, dev.dtype(at::kFloat)) * 0.1).to(at::kBFloat16);
  auto g_lp = at::randn({N}, dev.dtype(at::kFloat)), g_h = at::randn({N}, dev.dtype(at::kFloat));
  LinearLogprobsOptions o;
  o.chunk_tokens = 64;
  o.temperature = 0.8;
  {  // every token ignored: zeros, not NaN
    auto g = run(h, w, at::full({N}, -100, dev.dtype(at::kLong)), o, g_lp, g_h, Impl::kAuto);
    EXPECT_EQ(max_abs(g.logprobs), 0.0);
    EXPECT_EQ(max_abs(g.entropy), 0.0);
    EXPECT_EQ(max_abs(g.dh), 0.0);
    EXPECT_EQ(max_abs(g.dw), 0.0);
  }
  auto labels = at::randint(0, V, {N}, dev.dtype(at::kLong));
  auto a = run(h, w, labels, o, g_lp, g_h, Impl::kAuto);
  auto b = run(h, w, labels, o, g_lp, g_h, Impl::kAuto);
  EXPECT_TRUE(at::equal(a.logprobs, b.logprobs));
  EXPECT_TRUE(at::equal(a.entropy, b.entropy));
  EXPECT_TRUE(at::equal(a.dh, b.dh));
  EXPECT_TRUE(at::equal(a.dw, b.dw));
  at::NoGradGuard ng;
  poison_allocator();
  auto r = linear_logprobs(h, w, labels, o);
  EXPECT_TRUE(at::equal(r.logprobs.cpu(), a.logprobs)) << "the no-grad pass computes the same log-probs";
  EXPECT_TRUE(at::equal(r.entropy.cpu(), a.entropy));
}

}  // namespace
