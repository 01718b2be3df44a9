// The linear_logprobs chunk kernels (kernels/linear_cross_entropy/linear_logprobs_kernel.cuh),
// compiled by the host compiler and run on the CPU through kernels/common/block_emu.h, against
// float64 per row. Forward: logprob = z[label] - lse, entropy, lse within fp32 noise. Backward
// (fed the forward kernel's own lse / entropy, as the op does): the in-place gradient
// logit_scale * (g_lp (onehot - p) - g_H p (log p + H)) with random per-row upstream gradients,
// within twice the error of the correctly rounded float64 gradient (+ fp32 noise); with only
// g_lp, only g_H, or both. Ignored rows (ignore_index or a label outside [0, V)) give zeros; the
// forward leaves the logits alone. Vector (16-byte) and scalar paths, vocabularies that are not a
// multiple of the vector width or of the block, logit scales != 1; online max re-basing with a
// late max and large magnitudes; an entropy free of cancellation at |z| ~ 3000.
// tests/ops/test_linear_logprobs_cuda.cpp checks the whole op on a GPU.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "util/test_util.h"

#define PRISM_KERNEL_EMULATE 1
#include "../../kernels/linear_cross_entropy/linear_logprobs_kernel.cuh"

namespace {

namespace emu = prism::kernels::emu;
namespace lk = prism::kernels::llp;
using prism::test::max_abs;
using prism::test::max_abs_diff;

template <typename T>
T* ptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<T*>(t.data_ptr()) : nullptr;
}

struct Oracle {
  at::Tensor logprob, entropy, lse, grad;  // float64
};

// g_lp / g_h may be undefined (zero).
Oracle oracle(const at::Tensor& logits, const at::Tensor& labels, int64_t ignore, double scale, const at::Tensor& g_lp,
              const at::Tensor& g_h) {
  auto z = logits.to(at::kDouble) * scale;
  const int64_t n = z.size(0), V = z.size(1);
  auto keep = labels.ne(ignore).logical_and(labels.ge(0)).logical_and(labels.lt(V));
  auto safe = labels.masked_fill(keep.logical_not(), 0).unsqueeze(1);
  auto lse = at::logsumexp(z, 1);
  auto logp = z - lse.unsqueeze(1);
  auto p = logp.exp();
  auto h = -(p * logp).sum(1);
  Oracle o;
  o.logprob = at::where(keep, logp.gather(1, safe).squeeze(1), 0.0);
  o.entropy = at::where(keep, h, 0.0);
  o.lse = at::where(keep, lse, 0.0);
  auto gl = g_lp.defined() ? g_lp.to(at::kDouble) : at::zeros({n}, at::kDouble);
  auto gh = g_h.defined() ? g_h.to(at::kDouble) : at::zeros({n}, at::kDouble);
  auto g = -p * (gl.unsqueeze(1) + gh.unsqueeze(1) * (logp + h.unsqueeze(1)));
  g.scatter_add_(1, safe, gl.unsqueeze(1));
  o.grad = at::where(keep.unsqueeze(1), g * scale, 0.0);
  return o;
}

enum class Grad { kLogprob, kEntropy, kBoth };

template <typename T>
void run_case(at::ScalarType dt, int64_t rows, int64_t V, double scale, Grad which, bool vec) {
  SCOPED_TRACE(::testing::Message() << dt << " rows " << rows << " V " << V << " scale " << scale << " grad "
                                    << static_cast<int>(which) << " vec " << vec);
  const int64_t ignore = -100;
  auto logits = (at::randn({rows, V}, at::kDouble) * 3).to(dt);
  auto labels = at::randint(0, V, {rows}, at::kLong);
  if (rows > 1) labels[1] = ignore;
  if (rows > 3) labels[3] = V;  // out of range: treated as ignored by the kernel (the op rejects it earlier)
  at::Tensor g_lp, g_h;
  if (which != Grad::kEntropy) g_lp = at::randn({rows}, at::kFloat) * 2;
  if (which != Grad::kLogprob) g_h = at::randn({rows}, at::kFloat) * 2;
  const auto before = logits.clone();
  const auto nan = std::numeric_limits<float>::quiet_NaN();
  auto lp = at::full({rows}, nan, at::kFloat), ent = at::full({rows}, nan, at::kFloat);
  auto lse = at::full({rows}, nan, at::kFloat);
  const emu::Dim3 grid{static_cast<unsigned>(rows)}, block{static_cast<unsigned>(lk::threads_for(V))};
  const auto s = static_cast<float>(scale);
  if (vec)
    emu::launch(grid, block, 0, lk::linear_logprobs_fwd_kernel<T, lk::vec_width<T>()>, ptr<const T>(logits),
                ptr<const int64_t>(labels), ptr<float>(lp), ptr<float>(ent), ptr<float>(lse), V, ignore, s);
  else
    emu::launch(grid, block, 0, lk::linear_logprobs_fwd_kernel<T, 1>, ptr<const T>(logits), ptr<const int64_t>(labels),
                ptr<float>(lp), ptr<float>(ent), ptr<float>(lse), V, ignore, s);
  EXPECT_TRUE(at::equal(logits, before)) << "the forward must not touch the logits";
  const auto o = oracle(before, labels, ignore, scale, g_lp, g_h);
  const double tol = 2e-6 * (1 + max_abs(o.lse));
  EXPECT_FALSE(lp.isnan().any().item<bool>() || ent.isnan().any().item<bool>() || lse.isnan().any().item<bool>());
  EXPECT_LE(max_abs_diff(lp, o.logprob), tol) << "logprob";
  EXPECT_LE(max_abs_diff(ent, o.entropy), tol) << "entropy";
  EXPECT_LE(max_abs_diff(lse, o.lse), tol) << "lse";

  if (vec)
    emu::launch(grid, block, 0, lk::linear_logprobs_bwd_kernel<T, lk::vec_width<T>()>, ptr<T>(logits),
                ptr<const int64_t>(labels), ptr<const float>(lse), ptr<const float>(ent), ptr<const float>(g_lp),
                ptr<const float>(g_h), V, ignore, s);
  else
    emu::launch(grid, block, 0, lk::linear_logprobs_bwd_kernel<T, 1>, ptr<T>(logits), ptr<const int64_t>(labels),
                ptr<const float>(lse), ptr<const float>(ent), ptr<const float>(g_lp), ptr<const float>(g_h), V, ignore,
                s);
  EXPECT_FALSE(logits.isnan().any().item<bool>());
  // Rounded once: within twice the error of the correctly rounded gradient (+ fp32 noise, which
  // includes the fp32 lse / entropy the forward handed over).
  const double rounding = max_abs_diff(o.grad.to(dt), o.grad);
  const double gmax = (g_lp.defined() ? max_abs(g_lp) : 0.0) + (g_h.defined() ? max_abs(g_h) : 0.0);
  EXPECT_LE(max_abs_diff(logits, o.grad), 2 * rounding + tol * scale * gmax) << "gradient";
  if (rows > 1) EXPECT_EQ(max_abs(logits[1]), 0.0) << "ignored row";
  if (rows > 3) EXPECT_EQ(max_abs(logits[3]), 0.0) << "out-of-range label row";
}

TEST(LinearLogprobsEmu, ChunkKernelsMatchFloat64) {
  at::manual_seed(21);
  struct Case {
    int64_t rows, V;
  };
  // V: below one warp, not a multiple of 8 (scalar path only), a multiple of 8 with a partial
  // last vector sweep, large enough for the 512-thread cap and several vectors per thread.
  const std::vector<Case> cases = {{1, 5}, {4, 37}, {5, 256}, {3, 1000}, {2, 12296}};
  for (const auto& c : cases) {
    for (double scale : {1.0, 0.125, 1.6}) {
      for (Grad which : {Grad::kLogprob, Grad::kEntropy, Grad::kBoth}) {
        if (which != Grad::kBoth && c.V > 1000) continue;  // the emulator is slow; one mode is enough there
        for (bool vec : {true, false}) {
          if (vec && c.V % 8 != 0) continue;
          run_case<c10::BFloat16>(at::kBFloat16, c.rows, c.V, scale, which, vec);
          run_case<c10::Half>(at::kHalf, c.rows, c.V, scale, which, vec);
        }
        for (bool vec : {true, false}) {
          if (vec && c.V % 4 != 0) continue;
          run_case<float>(at::kFloat, c.rows, c.V, scale, which, vec);
        }
      }
    }
  }
}

// Forward kernel (fp32, vectorised) over every row of `logits`.
void forward_rows(const at::Tensor& logits, const at::Tensor& labels, at::Tensor& lp, at::Tensor& ent,
                  at::Tensor& lse) {
  const int64_t rows = logits.size(0), V = logits.size(1);
  lp = at::empty({rows}, at::kFloat);
  ent = at::empty({rows}, at::kFloat);
  lse = at::empty({rows}, at::kFloat);
  emu::launch(emu::Dim3{static_cast<unsigned>(rows)}, emu::Dim3{static_cast<unsigned>(lk::threads_for(V))}, 0,
              lk::linear_logprobs_fwd_kernel<float, 4>, ptr<const float>(logits), ptr<const int64_t>(labels),
              ptr<float>(lp), ptr<float>(ent), ptr<float>(lse), V, int64_t{-100}, 1.f);
}

TEST(LinearLogprobsEmu, LargeLogitsStayFiniteAndEntropyHasNoCancellation) {
  at::Tensor lp, ent, lse;
  {  // online max re-basing: the max arrives late, magnitudes where a naive exp overflows
    const int64_t V = 640;
    auto logits = at::linspace(-50, 90, V, at::kDouble).unsqueeze(0).to(at::kFloat);
    const auto labels = at::tensor({int64_t{7}}, at::kLong);
    forward_rows(logits, labels, lp, ent, lse);
    const auto o = oracle(logits, labels, -100, 1.0, {}, {});
    EXPECT_NEAR(lse.item<double>(), o.lse.item<double>(), 1e-4);
    EXPECT_NEAR(lp.item<double>(), o.logprob.item<double>(), 1e-4);
    EXPECT_NEAR(ent.item<double>(), o.entropy.item<double>(), 1e-5);
  }
  {  // |z| ~ 3000 (fp32 ulp 2.4e-4): lse - sum p z in fp32 is off by up to ~2e-4 on such rows
     // (numpy, 3 rows: 2e-6, 9e-5, 2e-4); log s - t / s by ~5e-7
    at::manual_seed(3);
    const int64_t rows = 8, V = 4096;
    auto logits = (3000 + at::randn({rows, V}, at::kDouble) * 2).to(at::kFloat);
    const auto labels = at::randint(0, V, {rows}, at::kLong);
    forward_rows(logits, labels, lp, ent, lse);
    const auto o = oracle(logits, labels, -100, 1.0, {}, {});
    EXPECT_LE(max_abs_diff(ent, o.entropy), 3e-6);
  }
  {  // one-hot-like row: entropy ~ 0, not negative, not NaN
    auto logits = at::full({1, 64}, -30.0, at::kFloat);
    logits[0][5] = 30;
    forward_rows(logits, at::tensor({int64_t{5}}, at::kLong), lp, ent, lse);
    EXPECT_GE(ent.item<double>(), 0.0);
    EXPECT_LT(ent.item<double>(), 1e-20);
    EXPECT_NEAR(lp.item<double>(), 0.0, 1e-6);
  }
}

}  // namespace
