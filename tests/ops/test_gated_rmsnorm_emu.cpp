// The fused gated RMSNorm kernels (kernels/gated_rmsnorm/gated_rmsnorm_kernel.cuh), compiled by
// the host compiler and run on the CPU through kernels/common/block_emu.h (one OS thread per CUDA
// thread, real barriers for __syncthreads and warp shuffles). Checks what a machine without a GPU
// can check: one block per (row, group) with groups of 1 and several, group sizes below, at and
// above the 256-thread block, strided rows (z a split of a wider tensor), mixed dtypes (fp32 y
// gated by a bf16 z, as after the SSD scan), the saved rstd, and the backward's per-chunk
// weight-gradient partial rows with chunks of one and of several rows (the last one short),
// against a float64 evaluation of rms_norm_gated_ref (src/ops/rmsnorm_ref.cpp; autograd for the
// backward), with the precision rule of the GPU tests: error <= 2x the error of the same reference
// run in the kernel's dtypes. Outputs start as NaN, so an element never written fails.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "prism/ops/rmsnorm.h"
#include "util/test_util.h"

#define PRISM_KERNEL_EMULATE 1
#include "../../kernels/gated_rmsnorm/gated_rmsnorm_kernel.cuh"

namespace {

namespace emu = prism::kernels::emu;
namespace gk = prism::kernels::gated_rmsnorm;
namespace ks = prism::kernels::ssm;
using prism::test::max_abs;
using prism::test::max_abs_diff;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int kThreads = ks::kGatedNormThreads;

bool has_nan(const at::Tensor& t) { return t.isnan().any().item<bool>(); }

/// The precision rule: kernel error <= 2x the same-dtype reference's error (+ fp32 noise).
/// PRISM_TEST_VERBOSE=1 prints every pair.
void expect_within_2x(const std::string& what, double e_kernel, double e_ref, double floor) {
  if (std::getenv("PRISM_TEST_VERBOSE")) std::printf("  %-60s kernel %.3e  reference %.3e\n", what.c_str(), e_kernel, e_ref);
  EXPECT_LE(e_kernel, 2 * e_ref + floor) << what << ": kernel " << e_kernel << ", reference in dtype " << e_ref;
}

prism::kernels::DType kdt(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return prism::kernels::DType::kFloat16;
    case at::kBFloat16: return prism::kernels::DType::kBFloat16;
    default: return prism::kernels::DType::kFloat32;
  }
}

struct Case {
  int64_t rows, I, group;
  at::ScalarType y_dt, z_dt, w_dt;
  bool strided;        // y and z are column slices of wider row-major buffers (row stride > I)
  int64_t chunks;      // backward blocks along rows (0: the binding's choice)
};

std::string describe(const Case& c) {
  return "rows " + std::to_string(c.rows) + " I " + std::to_string(c.I) + " group " + std::to_string(c.group) +
         " y " + ::testing::PrintToString(c.y_dt) + " z " + ::testing::PrintToString(c.z_dt) + " w " +
         ::testing::PrintToString(c.w_dt) + (c.strided ? " strided" : "") + " chunks " + std::to_string(c.chunks);
}

/// [rows, I] random non-zero values, contiguous or a column slice of a [rows, I + pad] buffer.
at::Tensor random_rows(int64_t rows, int64_t I, at::ScalarType dt, bool strided, double scale, double shift) {
  if (!strided) return (at::randn({rows, I}, at::kDouble) * scale + shift).to(dt);
  auto buf = (at::randn({rows, 2 * I + 7}, at::kDouble) * scale + shift).to(dt);
  return buf.narrow(1, I + 3, I);  // row stride 2I+7, odd offset
}

void check_case(const Case& c) {
  SCOPED_TRACE(describe(c));
  const int64_t rows = c.rows, I = c.I, group = c.group, G = I / group;
  const double eps = 1e-5;
  auto y = random_rows(rows, I, c.y_dt, c.strided, 2.0, 0.3);
  auto z = random_rows(rows, I, c.z_dt, c.strided, 1.5, 0.2);
  auto w = (1 + 0.2 * at::randn({I}, at::kDouble)).to(c.w_dt);
  const auto out_dt = at::result_type(w, y);
  auto dout = at::randn({rows, I}, at::kDouble).to(out_dt);
  auto wf = w.to(at::kFloat).contiguous();

  // --- forward (what gated_rms_norm_fwd launches) ---
  auto out = at::full({rows, I}, kNaN, out_dt);
  auto rstd = at::full({rows, G}, kNaN, at::kFloat);
  ks::GatedRmsNormParams p;
  p.y = y.data_ptr();
  p.y_dtype = kdt(c.y_dt);
  p.y_rs = y.stride(0);
  p.z = z.data_ptr();
  p.z_dtype = kdt(c.z_dt);
  p.z_rs = z.stride(0);
  p.w = wf.data_ptr<float>();
  p.out = out.data_ptr();
  p.out_dtype = kdt(out_dt);
  p.rstd = rstd.data_ptr<float>();
  p.rows = rows;
  p.I = I;
  p.group = group;
  p.eps = static_cast<float>(eps);
  emu::launch(emu::Dim3{static_cast<unsigned>(rows), static_cast<unsigned>(G)}, emu::Dim3{kThreads}, 0,
              gk::gated_norm_fwd_kernel<kThreads>, p);
  EXPECT_FALSE(has_nan(out)) << "out has unwritten elements";
  EXPECT_FALSE(has_nan(rstd)) << "rstd has unwritten elements";

  // Float64 truth and the reference in the kernel's dtypes, both through autograd.
  auto y64 = y.to(at::kDouble).requires_grad_(true), z64 = z.to(at::kDouble).requires_grad_(true);
  auto w64 = w.to(at::kDouble).requires_grad_(true);
  auto o64 = prism::ops::rms_norm_gated_ref(y64, z64, w64, group, eps);
  o64.backward(dout.to(at::kDouble));
  auto yr = y.clone().requires_grad_(true), zr = z.clone().requires_grad_(true), wr = w.clone().requires_grad_(true);
  auto orf = prism::ops::rms_norm_gated_ref(yr, zr, wr, group, eps);
  orf.backward(dout);

  const std::string tag = describe(c) + ": ";
  expect_within_2x(tag + "out", max_abs_diff(out, o64), max_abs_diff(orf, o64), 1e-6 * max_abs(o64));
  auto u64 = (y.to(at::kDouble) * at::silu(z.to(at::kDouble))).view({rows, G, group});
  auto rstd64 = at::rsqrt(u64.pow(2).mean(-1) + eps);
  EXPECT_LE(max_abs_diff(rstd, rstd64), 2e-6 * max_abs(rstd64)) << "rstd";

  // --- backward (what gated_rms_norm_bwd launches, with the binding's or the case's chunking) ---
  const int64_t chunks = c.chunks > 0 ? c.chunks : std::max<int64_t>(1, std::min<int64_t>(rows, (1024 + G - 1) / G));
  const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
  ASSERT_LE((chunks - 1) * rows_per_chunk, rows - 1) << "every chunk must own a row";
  auto dy = at::full({rows, I}, kNaN, c.y_dt);
  auto dz = at::full({rows, I}, kNaN, c.z_dt);
  auto dw_part = at::full({chunks, I}, kNaN, at::kFloat);
  ks::GatedRmsNormBwdParams q;
  q.f = p;
  q.f.out = nullptr;
  q.dout = dout.data_ptr();
  q.dy = dy.data_ptr();
  q.dz = dz.data_ptr();
  q.dw_partial = dw_part.data_ptr<float>();
  q.rows_per_chunk = rows_per_chunk;
  q.num_chunks = chunks;
  emu::launch(emu::Dim3{static_cast<unsigned>(chunks), static_cast<unsigned>(G)}, emu::Dim3{kThreads},
              static_cast<size_t>(group) * sizeof(float), gk::gated_norm_bwd_kernel<kThreads>, q);

  auto check_grad = [&](const char* what, const at::Tensor& got, const at::Tensor& ref, const at::Tensor& truth) {
    EXPECT_FALSE(has_nan(got)) << what << " has unwritten elements";
    expect_within_2x(tag + what, max_abs_diff(got, truth), max_abs_diff(ref, truth), 1e-6 * max_abs(truth));
  };
  check_grad("dy", dy, yr.grad(), y64.grad());
  check_grad("dz", dz, zr.grad(), z64.grad());
  // The partial rows summed in fp32, as the binding does before its cast to the weight's dtype.
  check_grad("dw", dw_part.sum(0), wr.grad(), w64.grad());
}

const auto kF = at::kFloat;
const auto kB = at::kBFloat16;
const auto kH = at::kHalf;

TEST(GatedRmsNormEmu, OneGroupMatchesFloat64) {
  at::manual_seed(31);
  // Group below, at and above the block (two strided passes per thread, the second partial).
  for (const auto dt : {kF, kB}) {
    check_case({5, 64, 64, dt, dt, dt, false, 0});
    check_case({3, 256, 256, dt, dt, dt, false, 0});
    check_case({4, 601, 601, dt, dt, dt, true, 0});
    check_case({1, 40, 40, dt, dt, dt, false, 0});  // a single token
  }
}

TEST(GatedRmsNormEmu, SeveralGroupsMatchFloat64) {
  at::manual_seed(32);
  for (const auto dt : {kF, kB}) {
    check_case({5, 144, 48, dt, dt, dt, false, 0});
    check_case({2, 600, 300, dt, dt, dt, true, 0});
    check_case({1, 40, 8, dt, dt, dt, false, 0});  // a single token, 5 groups of 8
  }
  check_case({2, 96, 32, kH, kH, kH, false, 0});
}

TEST(GatedRmsNormEmu, MixedDtypesAndStridesMatchFloat64) {
  at::manual_seed(33);
  // fp32 SSD output gated by a bf16 z (a split of in_proj's output), bf16 weight: fp32 output.
  check_case({4, 128, 32, kF, kB, kB, true, 0});
  // bf16 activations, fp32 weight: fp32 output.
  check_case({3, 96, 48, kB, kB, kF, true, 0});
}

TEST(GatedRmsNormEmu, WeightGradientChunksOfSeveralRows) {
  at::manual_seed(34);
  // 7 rows in 3 chunks of 3, 3, 1; 5 rows in one chunk.
  check_case({7, 192, 64, kB, kB, kB, false, 3});
  check_case({5, 80, 40, kF, kF, kF, true, 1});
}

}  // namespace
