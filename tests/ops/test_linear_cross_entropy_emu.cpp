// The fused cross-entropy chunk kernel of linear_cross_entropy
// (kernels/linear_cross_entropy/linear_cross_entropy_kernel.cuh), compiled by the host compiler and
// run on the CPU through kernels/common/block_emu.h. Checks the kernel's contract per row against
// float64: loss = lse - z[label], lse, and the in-place gradient
// logit_scale * (softmax * (1 + 2 w lse) - onehot) rounded once to the logits' dtype; ignored rows
// (ignore_index or a label outside [0, V)) give zeros; statistics-only mode leaves the logits alone.
// Vector (16-byte) and scalar paths, vocabularies that are not a multiple of the vector width or of
// the block. tests/ops/test_linear_cross_entropy_cuda.cpp checks the whole op on a GPU.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "util/test_util.h"

#define PRISM_KERNEL_EMULATE 1
#include "../../kernels/linear_cross_entropy/linear_cross_entropy_kernel.cuh"

namespace {

namespace emu = prism::kernels::emu;
namespace lk = prism::kernels::lce;
using prism::test::max_abs;
using prism::test::max_abs_diff;

template <typename T>
T* ptr(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

struct Oracle {
  at::Tensor loss, lse, grad;  // float64
};

Oracle oracle(const at::Tensor& logits, const at::Tensor& labels, int64_t ignore, double scale, double w) {
  auto z = logits.to(at::kDouble) * scale;
  const int64_t V = z.size(1);
  auto keep = labels.ne(ignore).logical_and(labels.ge(0)).logical_and(labels.lt(V));
  auto safe = labels.masked_fill(keep.logical_not(), 0).unsqueeze(1);
  auto lse = at::logsumexp(z, 1);
  Oracle o;
  o.loss = at::where(keep, lse - z.gather(1, safe).squeeze(1), 0.0);
  o.lse = at::where(keep, lse, 0.0);
  auto p = (z - lse.unsqueeze(1)).exp();
  auto g = p * (1 + 2 * w * lse).unsqueeze(1);
  g.scatter_add_(1, safe, -at::ones({z.size(0), 1}, at::kDouble));
  o.grad = at::where(keep.unsqueeze(1), g * scale, 0.0);
  return o;
}

template <typename T>
void run_case(at::ScalarType dt, int64_t rows, int64_t V, double scale, double w, bool write_grad, bool vec) {
  SCOPED_TRACE(::testing::Message() << dt << " rows " << rows << " V " << V << " scale " << scale << " w " << w
                                    << " write_grad " << write_grad << " vec " << vec);
  const int64_t ignore = -100;
  auto logits = (at::randn({rows, V}, at::kDouble) * 3).to(dt);
  auto labels = at::randint(0, V, {rows}, at::kLong);
  if (rows > 1) labels[1] = ignore;
  if (rows > 3) labels[3] = V;  // out of range: treated as ignored by the kernel (the op rejects it earlier)
  auto before = logits.clone();
  const auto nan = std::numeric_limits<float>::quiet_NaN();
  auto loss = at::full({rows}, nan, at::kFloat), lse = at::full({rows}, nan, at::kFloat);
  const emu::Dim3 grid{static_cast<unsigned>(rows)}, block{static_cast<unsigned>(lk::threads_for(V))};
  if (vec)
    emu::launch(grid, block, 0, lk::linear_ce_chunk_kernel<T, lk::vec_width<T>()>, ptr<T>(logits),
                ptr<const int64_t>(labels), ptr<float>(loss), ptr<float>(lse), V, ignore, static_cast<float>(scale),
                static_cast<float>(w), 1.f, write_grad);
  else
    emu::launch(grid, block, 0, lk::linear_ce_chunk_kernel<T, 1>, ptr<T>(logits), ptr<const int64_t>(labels),
                ptr<float>(loss), ptr<float>(lse), V, ignore, static_cast<float>(scale), static_cast<float>(w), 1.f,
                write_grad);
  const auto o = oracle(before, labels, ignore, scale, w);
  EXPECT_FALSE(loss.isnan().any().item<bool>());
  EXPECT_LE(max_abs_diff(loss, o.loss), 2e-6 * (1 + max_abs(o.lse))) << "loss";
  EXPECT_LE(max_abs_diff(lse, o.lse), 2e-6 * (1 + max_abs(o.lse))) << "lse";
  if (!write_grad) {
    EXPECT_TRUE(at::equal(logits, before)) << "statistics-only mode must not touch the logits";
    return;
  }
  EXPECT_FALSE(logits.isnan().any().item<bool>());
  // Rounded once: within twice the error of the correctly rounded gradient (+ fp32 noise).
  const double rounding = max_abs_diff(o.grad.to(dt), o.grad);
  EXPECT_LE(max_abs_diff(logits, o.grad), 2 * rounding + 1e-6 * scale) << "gradient";
  if (rows > 1) EXPECT_EQ(max_abs(logits[1]), 0.0) << "ignored row";
  if (rows > 3) EXPECT_EQ(max_abs(logits[3]), 0.0) << "out-of-range label row";
}

TEST(LinearCrossEntropyEmu, ChunkKernelMatchesFloat64) {
  at::manual_seed(21);
  struct Case {
    int64_t rows, V;
  };
  // V: below one warp, not a multiple of 8 (scalar path only), a multiple of 8 with a partial
  // last vector sweep, large enough for the 512-thread cap and several vectors per thread.
  const std::vector<Case> cases = {{1, 5}, {4, 37}, {5, 256}, {3, 1000}, {2, 12296}};
  for (const auto& c : cases) {
    for (double scale : {1.0, 0.125}) {
      for (double w : {0.0, 1e-3}) {
        for (bool vec : {true, false}) {
          if (vec && c.V % 8 != 0) continue;
          run_case<c10::BFloat16>(at::kBFloat16, c.rows, c.V, scale, w, true, vec);
          run_case<c10::Half>(at::kHalf, c.rows, c.V, scale, w, true, vec);
        }
        for (bool vec : {true, false}) {
          if (vec && c.V % 4 != 0) continue;
          run_case<float>(at::kFloat, c.rows, c.V, scale, w, true, vec);
        }
      }
    }
    run_case<c10::BFloat16>(at::kBFloat16, c.rows, c.V, 1.0, 1e-3, false, c.V % 8 == 0);
  }
}

TEST(LinearCrossEntropyEmu, LargeLogitsStayFinite) {
  // Online max rescaling: a row whose max arrives late, and magnitudes where a naive exp overflows.
  const int64_t V = 640;
  auto logits = at::linspace(-50, 90, V, at::kDouble).unsqueeze(0).to(at::kFloat);
  auto labels = at::tensor({int64_t{7}}, at::kLong);
  auto before = logits.clone();
  auto loss = at::empty({1}, at::kFloat), lse = at::empty({1}, at::kFloat);
  emu::launch(emu::Dim3{1}, emu::Dim3{static_cast<unsigned>(lk::threads_for(V))}, 0,
              lk::linear_ce_chunk_kernel<float, 4>, ptr<float>(logits), ptr<const int64_t>(labels), ptr<float>(loss),
              ptr<float>(lse), V, int64_t{-100}, 1.f, 0.f, 1.f, true);
  const auto o = oracle(before, labels, -100, 1.0, 0.0);
  EXPECT_NEAR(lse.item<double>(), o.lse.item<double>(), 1e-4);
  EXPECT_NEAR(loss.item<double>(), o.loss.item<double>(), 1e-4);
  EXPECT_LE(max_abs_diff(logits, o.grad), 4e-6);  // lse ~ 90: fp32 ulp 7.6e-6
}

}  // namespace
