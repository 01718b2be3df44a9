// The chunked SSD scan kernels (kernels/ssd/ssd_scan_kernel.cuh), forward and backward, compiled
// by the host compiler and run on the CPU through kernels/common/block_emu.h (one OS thread per
// CUDA thread, real barriers for __syncthreads and warp shuffles), with the very launch sequences
// of ssd_scan_fwd.cu / ssd_scan_bwd.cu. Oracle: the ATen reference (ssd_scan_ref) in float64 with
// autograd; bar: the kernel's error is at most twice the fp32 reference's own error (+ a floor of
// 1e-6 of the output scale), and no NaN. Outputs and workspaces start as NaN, so an element a
// kernel forgets to write fails. tests/ops/test_mamba_kernels_cuda.cpp checks the same on a GPU
// through ops::ssd_scan (autograd Function included).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "prism/ops/ssd_scan.h"
#include "util/test_util.h"

#define PRISM_KERNEL_EMULATE 1
#include "../../kernels/ssd/ssd_scan_kernel.cuh"

namespace {

namespace emu = prism::kernels::emu;
namespace ssm = prism::kernels::ssm;
namespace scan = prism::kernels::ssm::scan;
using prism::test::max_abs;
using prism::test::max_abs_diff;

struct EmuLaunch {
  template <typename Kernel, typename... Args>
  void operator()(scan::Grid g, Kernel kernel, const Args&... args) const {
    emu::launch(emu::Dim3{g.x, g.y, g.z}, emu::Dim3{static_cast<unsigned>(scan::kThreads)}, 0, kernel, args...);
  }
};

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

at::Tensor nan_f(at::IntArrayRef s) { return at::full(s, kNaN, at::kFloat); }
at::Tensor nan_d(at::IntArrayRef s) { return at::full(s, kNaN, at::kDouble); }

ssm::DType kdt(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 ? ssm::DType::kBFloat16
         : t.scalar_type() == at::kHalf   ? ssm::DType::kFloat16
                                          : ssm::DType::kFloat32;
}

ssm::StridedArg arg(const at::Tensor& t) {
  ssm::StridedArg a;
  if (!t.defined()) return a;
  a.ptr = t.data_ptr();
  a.dtype = kdt(t);
  int64_t* s[4] = {&a.s0, &a.s1, &a.s2, &a.s3};
  for (int64_t i = 0; i < t.dim() && i < 4; ++i) *s[i] = t.stride(i);
  return a;
}

struct Case {
  int64_t B, L, H, G, N, Q;
  bool docs, init, use_d, dfinal;
  at::ScalarType dtype;
};

std::string name(const Case& c) {
  return "B" + std::to_string(c.B) + " L" + std::to_string(c.L) + " H" + std::to_string(c.H) + " G" +
         std::to_string(c.G) + " N" + std::to_string(c.N) + " Q" + std::to_string(c.Q) + (c.docs ? " docs" : "") +
         (c.init ? " init" : "") + (c.use_d ? " D" : "") + (c.dfinal ? " dfinal" : "") + " " +
         c10::toString(c.dtype);
}

/// Documents of odd lengths (some of length 1, one starting exactly at a chunk start) covering [0, L).
std::vector<int64_t> docs_of(int64_t L, int64_t Q) {
  std::vector<int64_t> cu{0};
  const int64_t lens[] = {1, 7, Q - 8, 1, 30, 2, 65, 3};
  for (int i = 0; cu.back() < L; ++i) cu.push_back(std::min(L, cu.back() + lens[i % 8]));
  return cu;
}

/// The inputs in the kernel's dtype, and the same values in float64 (the oracle's inputs).
struct Inputs {
  at::Tensor x, dt, A, B, C, D, init, dy, dfinal;  // float64, already rounded through the kernel dtype
  at::Tensor kx, kdt_, kA, kB, kC, kD;               // kernel dtype (A fp32)
  std::vector<int64_t> cu;
};

Inputs make_inputs(const Case& c) {
  const int64_t P = 64;
  auto o = at::TensorOptions().dtype(at::kDouble);
  Inputs in;
  // x, B, C as strided splits of one activation, like the mixer's conv output
  auto xbc = at::randn({c.B, c.L, c.H * P + 2 * c.G * c.N}, o).to(c.dtype);
  auto parts = xbc.split_with_sizes({c.H * P, c.G * c.N, c.G * c.N}, -1);
  in.kx = parts[0].view({c.B, c.L, c.H, P});
  in.kB = parts[1].view({c.B, c.L, c.G, c.N});
  in.kC = parts[2].view({c.B, c.L, c.G, c.N});
  in.kdt_ = at::exp(at::rand({c.B, c.L, c.H}, o) * (std::log(0.5) - std::log(1e-3)) + std::log(1e-3)).to(c.dtype);
  in.kA = (-at::exp(at::rand({c.H}, o) * std::log(16.0))).to(at::kFloat);
  in.kD = c.use_d ? at::randn({c.H}, o).to(c.dtype) : at::Tensor();
  in.x = in.kx.to(at::kDouble);
  in.B = in.kB.to(at::kDouble);
  in.C = in.kC.to(at::kDouble);
  in.dt = in.kdt_.to(at::kDouble);
  in.A = in.kA.to(at::kDouble);
  in.D = c.use_d ? in.kD.to(at::kDouble) : at::Tensor();
  in.init = c.init ? at::randn({c.B, c.H, P, c.N}, o).to(at::kFloat).to(at::kDouble) : at::Tensor();
  in.dy = at::randn({c.B, c.L, c.H, P}, o).to(at::kFloat).to(at::kDouble);
  in.dfinal = c.dfinal ? at::randn({c.B, c.H, P, c.N}, o).to(at::kFloat).to(at::kDouble) : at::Tensor();
  if (c.docs) in.cu = docs_of(c.L, c.Q);
  return in;
}

struct Grads {
  at::Tensor y, final_state, dx, ddt, dA, dB, dC, dD, dinit;
};

/// The ATen reference in `t` (fp32 or fp64) with autograd.
Grads reference(const Inputs& in, const Case& c, at::ScalarType t) {
  auto leaf = [&](const at::Tensor& v) { return v.defined() ? v.to(t).detach().requires_grad_(true) : v; };
  auto x = leaf(in.x), dt = leaf(in.dt), A = leaf(in.A), B = leaf(in.B), C = leaf(in.C), D = leaf(in.D);
  auto init = leaf(in.init);
  prism::ops::SsdScanParams p;
  p.chunk_size = c.Q;
  p.initial_state = init;
  if (!in.cu.empty()) p.cu_seqlens = at::tensor(in.cu, at::kLong);
  p.impl = prism::ops::Impl::kReference;
  auto r = prism::ops::ssd_scan_ref(x, dt, A, B, C, D, p);
  auto loss = (r.y.to(at::kDouble) * in.dy).sum();
  if (in.dfinal.defined()) loss = loss + (r.final_state.to(at::kDouble) * in.dfinal).sum();
  loss.backward();
  Grads g;
  g.y = r.y.detach();
  g.final_state = r.final_state.detach();
  g.dx = x.grad();
  g.ddt = dt.grad();
  g.dA = A.grad();
  g.dB = B.grad();
  g.dC = C.grad();
  if (D.defined()) g.dD = D.grad();
  if (init.defined()) g.dinit = init.grad();
  return g;
}

struct Kernel {
  Grads g;
  std::vector<at::Tensor> keep;  // workspaces and staged inputs the params point into
};

/// The kernels through the emulator: forward, then backward (which recomputes the forward's
/// workspaces from scratch: they are poisoned again in between).
Kernel run_kernels(const Inputs& in, const Case& c) {
  const int64_t P = 64, Q = c.Q, nc = (c.L + Q - 1) / Q;
  Kernel k;
  ssm::SsdScanFwdParams f;
  f.x = arg(in.kx);
  f.dt = arg(in.kdt_);
  f.A = arg(in.kA);
  f.Bm = arg(in.kB);
  f.Cm = arg(in.kC);
  f.D = arg(in.kD);
  at::Tensor reset;
  if (!in.cu.empty()) {  // as ssd_scan_cuda.cpp builds it
    reset = at::zeros({c.L + 1}, at::kByte);
    reset.index_fill_(0, at::tensor(in.cu, at::kLong), 1);
    reset.narrow(0, 0, 1).zero_();
    f.reset = reset.data_ptr<uint8_t>();
  }
  at::Tensor init;
  if (in.init.defined()) {
    init = in.init.to(at::kFloat).contiguous();
    f.initial_state = init.data_ptr<float>();
  }
  auto fresh_workspaces = [&](ssm::SsdScanFwdParams& p) {
    auto cs = nan_d({c.B, c.H, nc * Q}), cb = nan_f({c.B, nc, c.G, Q, Q}), st = nan_f({c.B, nc, c.H, P, c.N});
    p.cs = cs.data_ptr<double>();
    p.cb = cb.data_ptr<float>();
    p.states = st.data_ptr<float>();
    k.keep.insert(k.keep.end(), {cs, cb, st});
  };
  f.B = c.B;
  f.L = c.L;
  f.H = c.H;
  f.P = P;
  f.N = c.N;
  f.G = c.G;
  f.Q = Q;
  fresh_workspaces(f);
  k.g.y = nan_f({c.B, c.L, c.H, P});
  k.g.final_state = nan_f({c.B, c.H, P, c.N});
  f.y = k.g.y.data_ptr<float>();
  f.final_state = k.g.final_state.data_ptr<float>();
  if (c.N == 64) {
    scan::forward_launches<64, 64>(f, EmuLaunch{});
    scan::forward_output_launch<64, 64>(f, EmuLaunch{});
  } else {
    scan::forward_launches<64, 128>(f, EmuLaunch{});
    scan::forward_output_launch<64, 128>(f, EmuLaunch{});
  }

  ssm::SsdScanBwdParams q;
  q.f = f;
  q.f.y = nullptr;
  fresh_workspaces(q.f);
  auto fs_scratch = nan_f({c.B, c.H, P, c.N});
  q.f.final_state = fs_scratch.data_ptr<float>();
  auto dy = in.dy.to(at::kFloat).contiguous();
  q.dy = dy.data_ptr<float>();
  at::Tensor dfinal;
  if (in.dfinal.defined()) {
    dfinal = in.dfinal.to(at::kFloat).contiguous();
    q.dfinal_state = dfinal.data_ptr<float>();
  }
  k.g.dx = nan_f({c.B, c.L, c.H, P});
  k.g.ddt = nan_f({c.B, c.L, c.H});
  k.g.dA = nan_f({c.H});
  k.g.dB = nan_f({c.B, c.L, c.G, c.N});
  k.g.dC = nan_f({c.B, c.L, c.G, c.N});
  q.dx = k.g.dx.data_ptr<float>();
  q.ddt = k.g.ddt.data_ptr<float>();
  q.dA = k.g.dA.data_ptr<float>();
  q.dB = k.g.dB.data_ptr<float>();
  q.dC = k.g.dC.data_ptr<float>();
  if (c.use_d) {
    k.g.dD = nan_f({c.H});
    q.dD = k.g.dD.data_ptr<float>();
  }
  if (c.init) {
    k.g.dinit = nan_f({c.B, c.H, P, c.N});
    q.dinitial_state = k.g.dinit.data_ptr<float>();
  }
  const auto w = ssm::ssd_scan_bwd_workspace(c.B, c.L, c.H, P, c.N, c.G, Q);
  auto dstates = nan_f({w.dstates}), dcb = nan_f({w.dcb});
  auto rowpart = nan_d({w.rowpart}), colpart = nan_d({w.colpart}), dcs_off = nan_d({w.dcs_off});
  auto kst = nan_d({w.kst}), dS = nan_d({w.dS}), dA_part = nan_d({w.dA_part}), dD_part = nan_d({w.dD_part});
  q.dstates = dstates.data_ptr<float>();
  q.dcb = dcb.data_ptr<float>();
  q.rowpart = rowpart.data_ptr<double>();
  q.colpart = colpart.data_ptr<double>();
  q.dcs_off = dcs_off.data_ptr<double>();
  q.kst = kst.data_ptr<double>();
  q.dS = dS.data_ptr<double>();
  q.dA_part = dA_part.data_ptr<double>();
  q.dD_part = dD_part.data_ptr<double>();
  if (c.N == 64)
    scan::backward_launches<64, 64>(q, EmuLaunch{});
  else
    scan::backward_launches<64, 128>(q, EmuLaunch{});
  k.keep.insert(k.keep.end(), {reset, init, fs_scratch, dy, dfinal, dstates, dcb, rowpart, colpart, dcs_off, kst,
                               dS, dA_part, dD_part});
  return k;
}

/// err(kernel) <= 2 err(fp32 reference) + 1e-6 max|oracle|, no NaN; prints both errors.
::testing::AssertionResult within_2x(const at::Tensor& got, const at::Tensor& ref, const at::Tensor& ref64,
                                     const std::string& what) {
  if (at::isnan(got).any().item<bool>()) return ::testing::AssertionFailure() << what << ": NaN in the kernel output";
  const double err = max_abs_diff(got.to(at::kDouble), ref64), rerr = max_abs_diff(ref.to(at::kDouble), ref64);
  const double floor = 1e-6 * max_abs(ref64);
  std::printf("  %-44s kernel err %.3e  fp32-ref err %.3e  ratio %.2f  (max|oracle| %.3e)\n", what.c_str(), err, rerr,
              rerr > 0 ? err / rerr : 0.0, max_abs(ref64));
  if (err <= 2 * rerr + floor) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": kernel error " << err << " > 2 x reference error " << rerr
                                       << " + " << floor << " (max|ref| " << max_abs(ref64) << ")";
}

void check_case(const Case& c) {
  SCOPED_TRACE(name(c));
  std::printf("%s\n", name(c).c_str());
  const auto in = make_inputs(c);
  const auto r64 = reference(in, c, at::kDouble);
  const auto r32 = reference(in, c, at::kFloat);
  const auto k = run_kernels(in, c);
  const std::string n = name(c) + " ";
  EXPECT_TRUE(within_2x(k.g.y, r32.y, r64.y, "y"));
  EXPECT_TRUE(within_2x(k.g.final_state, r32.final_state, r64.final_state, "final_state"));
  EXPECT_TRUE(within_2x(k.g.dx, r32.dx, r64.dx, "dx"));
  EXPECT_TRUE(within_2x(k.g.ddt, r32.ddt, r64.ddt, "ddt"));
  EXPECT_TRUE(within_2x(k.g.dA, r32.dA, r64.dA, "dA"));
  EXPECT_TRUE(within_2x(k.g.dB, r32.dB, r64.dB, "dB"));
  EXPECT_TRUE(within_2x(k.g.dC, r32.dC, r64.dC, "dC"));
  if (c.use_d) {
    EXPECT_TRUE(within_2x(k.g.dD, r32.dD, r64.dD, "dD"));
  }
  if (c.init) {
    EXPECT_TRUE(within_2x(k.g.dinit, r32.dinit, r64.dinit, "dinitial_state"));
  }
}

// Each case: a few seconds on 2 cores (every CUDA thread is an OS thread).
TEST(SsdScanEmu, ForwardBackwardRaggedLengthInitStateDfinal) {
  at::manual_seed(21);
  check_case({2, 100, 4, 2, 64, 64, false, true, true, true, at::kFloat});
}

TEST(SsdScanEmu, ForwardBackwardSingleToken) {
  at::manual_seed(22);
  check_case({1, 1, 2, 1, 128, 64, false, true, false, true, at::kFloat});
}

TEST(SsdScanEmu, ForwardBackwardManyDocuments) {
  at::manual_seed(23);
  check_case({1, 160, 4, 1, 64, 64, true, true, true, false, at::kFloat});
}

TEST(SsdScanEmu, ForwardBackwardTwoTilesPerChunkDocsNoInit) {
  at::manual_seed(24);  // Q = 128: 2x2 tiles per chunk (lower-triangular tile pairs)
  check_case({1, 150, 2, 2, 128, 128, true, false, true, true, at::kFloat});
}

TEST(SsdScanEmu, ForwardBackwardBf16Inputs) {
  at::manual_seed(25);
  check_case({1, 70, 2, 1, 64, 64, false, true, true, true, at::kBFloat16});
}

TEST(SsdScanEmu, BackwardIsDeterministic) {
  at::manual_seed(26);
  const Case c{1, 60, 2, 1, 64, 64, true, true, true, true, at::kFloat};
  const auto in = make_inputs(c);
  const auto a = run_kernels(in, c), b = run_kernels(in, c);
  for (auto [x, y] : {std::pair{a.g.dx, b.g.dx}, {a.g.ddt, b.g.ddt}, {a.g.dA, b.g.dA}, {a.g.dB, b.g.dB},
                      {a.g.dC, b.g.dC}, {a.g.dD, b.g.dD}, {a.g.dinit, b.g.dinit}})
    EXPECT_TRUE(at::equal(x, y));
}

}  // namespace
