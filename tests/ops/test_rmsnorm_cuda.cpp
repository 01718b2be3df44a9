// The fused RMSNorm CUDA kernel against the reference (GPU only; skipped without one). The kernel
// must match the reference's HF cast order: exactly in fp32 up to summation order, and within one
// ulp of the reference in bf16/fp16 (the normalised value is rounded before the weight multiply).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include "prism/ops/rmsnorm.h"
#include "util/test_util.h"

TEST(RmsNormCuda, MatchesReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::NoGradGuard ng;  // the fused kernel is used for inference (no autograd) only
  at::manual_seed(0);
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (int64_t cols : {64, 1000, 4096, 5120}) {
      auto x = at::randn({37, cols}, at::TensorOptions().dtype(dt).device(at::kCUDA));
      auto w = (1 + 0.1 * at::randn({cols})).to(dt).cuda();
      auto got = prism::ops::rms_norm(x, w, 1e-5);
      auto ref = prism::ops::rms_norm_ref(x, w, 1e-5);
      auto ref64 = prism::ops::rms_norm_ref(x.to(at::kDouble), w.to(at::kDouble), 1e-5);
      const double floor = prism::test::max_abs_diff(ref, ref64);  // precision floor of the dtype
      EXPECT_LE(prism::test::max_abs_diff(got, ref64), 2 * floor + 1e-6) << dt << " cols " << cols;
    }
  }
}
