// The fused RMSNorm kernels (kernels/rmsnorm/rmsnorm_kernel.cuh), compiled by the host compiler
// and run on the CPU through kernels/common/block_emu.h (one OS thread per CUDA thread, real
// barriers for __syncthreads and warp shuffles). Checks what a machine without a GPU can check:
// indexing, the 16-byte vector and scalar paths, the grid-stride rows and the two-stage
// deterministic weight-gradient reduction, against float64 with the precision rule of the GPU
// tests (error <= 2x the ATen reference's error in the same dtype). tests/ops/test_rmsnorm_cuda.cpp
// checks the same on a GPU.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "prism/ops/rmsnorm.h"
#include "util/test_util.h"

#define PRISM_KERNEL_EMULATE 1
#include "../../kernels/rmsnorm/rmsnorm_kernel.cuh"

namespace {

namespace emu = prism::kernels::emu;
namespace rk = prism::kernels::rmsnorm;
using prism::test::max_abs;
using prism::test::max_abs_diff;

template <typename T>
T* ptr(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

// What rms_norm_forward does, with the vector path chosen by the caller.
template <typename T>
void forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& out, const at::Tensor& rstd, float eps,
             bool vec) {
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  const emu::Dim3 grid{static_cast<unsigned>(rows)}, block{static_cast<unsigned>(rk::threads_for(cols))};
  if (vec)
    emu::launch(grid, block, 0, rk::rms_norm_fwd_kernel<T, rk::vec_width<T>()>, ptr<const T>(x), ptr<const T>(w),
                ptr<T>(out), ptr<float>(rstd), cols, eps);
  else
    emu::launch(grid, block, 0, rk::rms_norm_fwd_kernel<T, 1>, ptr<const T>(x), ptr<const T>(w), ptr<T>(out),
                ptr<float>(rstd), cols, eps);
}

// What rms_norm_backward does, with the grid (number of partial rows) chosen by the caller.
template <typename T>
void backward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& dy, const at::Tensor& rstd,
              const at::Tensor& dx, const at::Tensor& dw, int64_t grid, bool vec) {
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  const emu::Dim3 g{static_cast<unsigned>(grid)}, block{static_cast<unsigned>(rk::threads_for(cols))};
  auto partial = at::full({grid, cols}, std::numeric_limits<float>::quiet_NaN(), at::kFloat);
  const size_t smem = static_cast<size_t>(cols) * sizeof(float);
  if (vec)
    emu::launch(g, block, smem, rk::rms_norm_bwd_kernel<T, rk::vec_width<T>(), true>, ptr<const T>(x), ptr<const T>(w),
                ptr<const T>(dy), ptr<const float>(rstd), ptr<T>(dx), ptr<float>(partial), rows, cols);
  else
    emu::launch(g, block, smem, rk::rms_norm_bwd_kernel<T, 1, true>, ptr<const T>(x), ptr<const T>(w), ptr<const T>(dy),
                ptr<const float>(rstd), ptr<T>(dx), ptr<float>(partial), rows, cols);
  emu::launch(emu::Dim3{static_cast<unsigned>((cols + 31) / 32)}, emu::Dim3{32, 8}, 0, rk::rms_norm_dw_reduce_kernel<T>,
              ptr<const float>(partial), ptr<T>(dw), grid, cols);
}

template <typename T>
void check_shape(at::ScalarType dt, int64_t rows, int64_t cols, bool vec, int64_t grid) {
  SCOPED_TRACE(::testing::Message() << dt << " rows " << rows << " cols " << cols << " vec " << vec << " grid "
                                    << grid);
  const double eps = 1e-5;
  auto x = (at::randn({rows, cols}, at::kDouble) * 2 + 0.3).to(dt);
  auto w = (1 + 0.2 * at::randn({cols}, at::kDouble)).to(dt);
  auto dy = at::randn({rows, cols}, at::kDouble).to(dt);
  const auto nan = std::numeric_limits<double>::quiet_NaN();
  auto out = at::full({rows, cols}, nan, dt);  // poisoned: every element must be written
  auto rstd = at::full({rows}, nan, at::kFloat);
  forward<T>(x, w, out, rstd, static_cast<float>(eps), vec);

  // Float64 truth and the ATen reference in the same dtype, both through autograd.
  auto x64 = x.to(at::kDouble).requires_grad_(true), w64 = w.to(at::kDouble).requires_grad_(true);
  auto y64 = prism::ops::rms_norm_ref(x64, w64, eps);
  y64.backward(dy.to(at::kDouble));
  auto xr = x.clone().requires_grad_(true), wr = w.clone().requires_grad_(true);
  auto yr = prism::ops::rms_norm_ref(xr, wr, eps);
  yr.backward(dy);
  const double floor = 1e-6 * max_abs(y64);  // fp32 arithmetic noise
  EXPECT_FALSE(out.isnan().any().item<bool>());
  EXPECT_LE(max_abs_diff(out, y64), 2 * max_abs_diff(yr, y64) + floor) << "forward";
  auto r64 = at::rsqrt(x.to(at::kDouble).pow(2).mean(-1) + eps);
  EXPECT_LE(max_abs_diff(rstd, r64), 1e-6 * max_abs(r64)) << "rstd";

  auto dx = at::full({rows, cols}, nan, dt);
  auto dw = at::full({cols}, nan, dt);
  backward<T>(x, w, dy, rstd, dx, dw, grid, vec);
  EXPECT_FALSE(dx.isnan().any().item<bool>());
  EXPECT_FALSE(dw.isnan().any().item<bool>());
  EXPECT_LE(max_abs_diff(dx, x64.grad()), 2 * max_abs_diff(xr.grad(), x64.grad()) + 1e-6 * max_abs(x64.grad())) << "dx";
  EXPECT_LE(max_abs_diff(dw, w64.grad()), 2 * max_abs_diff(wr.grad(), w64.grad()) + 1e-6 * max_abs(w64.grad())) << "dw";
}

TEST(RmsNormEmu, ForwardAndBackwardMatchFloat64AllPaths) {
  at::manual_seed(11);
  struct Case {
    int64_t rows, cols, grid;
  };
  // cols: tiny, odd (scalar path only), a multiple of 8 below one warp of vectors, above the
  // 512-thread cap (several vectors per thread); grid: 1 block for all rows, fewer blocks than
  // rows (grid stride), one block per row.
  const std::vector<Case> cases = {{1, 8, 1}, {3, 37, 2}, {5, 64, 5}, {4, 1000, 3}, {2, 4104, 1}, {6, 256, 4}};
  for (const auto& c : cases) {
    const bool big = c.cols > 4096;  // thousands of emulated threads per launch: bf16 only
    for (bool vec : {true, false}) {
      if (vec && c.cols % 8 != 0) continue;
      check_shape<c10::BFloat16>(at::kBFloat16, c.rows, c.cols, vec, c.grid);
      if (!big) check_shape<c10::Half>(at::kHalf, c.rows, c.cols, vec, c.grid);
    }
    for (bool vec : {true, false}) {
      if (big || (vec && c.cols % 4 != 0)) continue;
      check_shape<float>(at::kFloat, c.rows, c.cols, vec, c.grid);
    }
  }
}

TEST(RmsNormEmu, WeightGradientDoesNotDependOnThreadTiming) {
  // Fixed partial rows and a fixed-order reduction: two runs give the same bits.
  at::manual_seed(12);
  const int64_t rows = 9, cols = 96;
  auto x = at::randn({rows, cols}).to(at::kBFloat16);
  auto w = at::randn({cols}).to(at::kBFloat16);
  auto dy = at::randn({rows, cols}).to(at::kBFloat16);
  auto out = at::empty_like(x);
  auto rstd = at::empty({rows}, at::kFloat);
  forward<c10::BFloat16>(x, w, out, rstd, 1e-6f, true);
  at::Tensor first;
  for (int run = 0; run < 3; ++run) {
    auto dx = at::empty_like(x);
    auto dw = at::empty_like(w);
    backward<c10::BFloat16>(x, w, dy, rstd, dx, dw, 4, true);
    if (run == 0)
      first = dw;
    else
      EXPECT_TRUE(at::equal(dw, first)) << "run " << run;
  }
}

}  // namespace
