// The fused RMSNorm CUDA kernels (forward, and backward through the autograd Function) against
// float64 (GPU only; skipped without one). Fresh random inputs per shape, the caching allocator
// poisoned with NaN bytes before every run, odd row lengths (scalar path), unaligned and
// non-contiguous inputs, a single row, fp32 / fp16 / bf16. Rule: the kernel's error is at most
// twice the error of the ATen reference (rms_norm_ref, HF cast order) in the same dtype, for the
// output, dx and dweight; no NaN; the weight gradient is bit-for-bit repeatable (no atomics).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include "prism/ops/rmsnorm.h"
#include "util/test_util.h"

namespace {

using prism::ops::Impl;
using prism::test::max_abs;
using prism::test::max_abs_diff;

void poison_allocator() {
  std::vector<at::Tensor> keep;
  for (int64_t bytes :
       {int64_t{512}, int64_t{1} << 16, int64_t{1} << 20, int64_t{8} << 20, int64_t{64} << 20, int64_t{256} << 20})
    for (int k = 0; k < 2; ++k)
      keep.push_back(at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA)).fill_(255));
}

struct Out {
  at::Tensor y, dx, dw;
};

Out run(const at::Tensor& x0, const at::Tensor& w0, const at::Tensor& dy, double eps, Impl impl) {
  auto x = x0.detach().clone().requires_grad_(true);
  auto w = w0.detach().clone().requires_grad_(true);
  poison_allocator();
  auto y = prism::ops::rms_norm(x, w, eps, impl);
  y.backward(dy);
  return {y.detach(), x.grad(), w.grad()};
}

void expect_within_rule(const at::Tensor& got, const at::Tensor& ref, const at::Tensor& truth, const char* what) {
  EXPECT_FALSE(got.isnan().any().item<bool>()) << what << " has NaN";
  const double eg = max_abs_diff(got, truth), er = max_abs_diff(ref, truth);
  EXPECT_LE(eg, 2 * er + 1e-6 * max_abs(truth)) << what << ": kernel error " << eg << ", reference error " << er;
}

TEST(RmsNormCuda, ForwardMatchesReferenceWithoutGrad) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::NoGradGuard ng;  // inference path: no rstd, no autograd Function
  at::manual_seed(0);
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (int64_t cols : {1, 7, 64, 1000, 4096, 5120, 8191}) {
      SCOPED_TRACE(::testing::Message() << dt << " cols " << cols);
      auto x = at::randn({37, cols}, at::TensorOptions().dtype(dt).device(at::kCUDA));
      auto w = (1 + 0.1 * at::randn({cols})).to(dt).cuda();
      ASSERT_TRUE(prism::ops::rms_norm_uses_kernel(x, w));
      poison_allocator();
      auto got = prism::ops::rms_norm(x, w, 1e-5);
      auto ref = prism::ops::rms_norm_ref(x, w, 1e-5);
      auto ref64 = prism::ops::rms_norm_ref(x.to(at::kDouble), w.to(at::kDouble), 1e-5);
      expect_within_rule(got, ref, ref64, "forward");
    }
  }
}

TEST(RmsNormCuda, ForwardAndBackwardMatchFloat64) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(1);
  struct Shape {
    int64_t rows, cols;
  };
  const std::vector<Shape> shapes = {{1, 4096},    {3, 7},     {37, 64},    {1000, 1000},
                                     {4097, 4096}, {64, 5120}, {300, 8192}, {16, 16384}};
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (const auto& s : shapes) {
      SCOPED_TRACE(::testing::Message() << dt << " rows " << s.rows << " cols " << s.cols);
      const auto opt = at::TensorOptions().device(at::kCUDA).dtype(at::kDouble);
      auto x = (at::randn({s.rows, s.cols}, opt) * 1.5 + 0.2).to(dt);
      auto w = (1 + 0.2 * at::randn({s.cols}, opt)).to(dt);
      auto dy = at::randn({s.rows, s.cols}, opt).to(dt);
      {
        auto xg = x.clone().requires_grad_(true);
        ASSERT_TRUE(prism::ops::rms_norm_uses_kernel(xg, w)) << "the training path must be the kernel";
      }
      auto got = run(x, w, dy, 1e-6, Impl::kAuto);
      auto ref = run(x, w, dy, 1e-6, Impl::kReference);
      auto truth = run(x.to(at::kDouble), w.to(at::kDouble), dy.to(at::kDouble), 1e-6, Impl::kReference);
      ASSERT_EQ(got.dw.scalar_type(), dt);
      expect_within_rule(got.y, ref.y, truth.y, "forward");
      expect_within_rule(got.dx, ref.dx, truth.dx, "dx");
      expect_within_rule(got.dw, ref.dw, truth.dw, "dweight");
    }
  }
}

// x is a view of a leaf `base` (so the kernel sees the view's pointer and strides, not a fresh
// clone); dx is read back as base's gradient.
Out run_view(const at::Tensor& base0, const std::function<at::Tensor(const at::Tensor&)>& view, const at::Tensor& w0,
             const at::Tensor& dy, double eps, Impl impl) {
  auto base = base0.detach().clone().requires_grad_(true);
  auto w = w0.detach().clone().requires_grad_(true);
  poison_allocator();
  auto y = prism::ops::rms_norm(view(base), w, eps, impl);
  y.backward(dy);
  return {y.detach(), base.grad(), w.grad()};
}

TEST(RmsNormCuda, UnalignedNonContiguousAndBatchedInputs) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(2);
  const auto opt = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  constexpr int64_t cols = 512;
  auto w = (1 + 0.1 * at::randn({cols}, opt.dtype(at::kFloat))).to(at::kBFloat16);
  struct View {
    const char* name;
    at::Tensor base;
    std::function<at::Tensor(const at::Tensor&)> view;
  };
  const std::vector<View> views = {
      // Offset by one element: 16-byte vector loads are impossible, the scalar path must take over.
      {"unaligned", at::randn({1 + 6 * cols}, opt),
       [](const at::Tensor& b) {
         return b.narrow(0, 1, 6 * cols).view({6, cols});
       }},
      // Every other row of a bigger tensor (the binding makes it contiguous).
      {"strided", at::randn({12, cols}, opt), [](const at::Tensor& b) { return b.slice(0, 0, 12, 2); }},
      // A [B, L, D] batch.
      {"batched", at::randn({2, 5, cols}, opt), [](const at::Tensor& b) { return b * 1.0; }},
  };
  for (const auto& v : views) {
    SCOPED_TRACE(v.name);
    const auto shape = v.view(v.base).sizes().vec();
    auto dy = at::randn(shape, opt);
    auto got = run_view(v.base, v.view, w, dy, 1e-5, Impl::kAuto);
    auto ref = run_view(v.base, v.view, w, dy, 1e-5, Impl::kReference);
    auto truth =
        run_view(v.base.to(at::kDouble), v.view, w.to(at::kDouble), dy.to(at::kDouble), 1e-5, Impl::kReference);
    ASSERT_EQ(got.y.sizes(), at::IntArrayRef(shape));
    expect_within_rule(got.y, ref.y, truth.y, "forward");
    expect_within_rule(got.dx, ref.dx, truth.dx, "dx");
    expect_within_rule(got.dw, ref.dw, truth.dw, "dweight");
  }
}

TEST(RmsNormCuda, WeightGradientIsRepeatableAndOnlyWhatIsNeededIsComputed) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(3);
  const auto opt = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  auto x = at::randn({8192, 4096}, opt);
  auto w = at::randn({4096}, opt);
  auto dy = at::randn({8192, 4096}, opt);
  auto a = run(x, w, dy, 1e-5, Impl::kAuto);
  auto b = run(x, w, dy, 1e-5, Impl::kAuto);
  EXPECT_TRUE(at::equal(a.dw, b.dw)) << "dweight must not depend on scheduling";
  EXPECT_TRUE(at::equal(a.dx, b.dx));
  // Only the weight needs a gradient (frozen input), and only the input (frozen weight).
  auto wg = w.clone().requires_grad_(true);
  prism::ops::rms_norm(x, wg, 1e-5).backward(dy);
  EXPECT_TRUE(at::equal(wg.grad(), a.dw));
  auto xg = x.clone().requires_grad_(true);
  prism::ops::rms_norm(xg, w, 1e-5).backward(dy);
  EXPECT_TRUE(at::equal(xg.grad(), a.dx));
}

}  // namespace
