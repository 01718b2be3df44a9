// at::Tensor binding of kernels/ssd (compiled only with PRISM_HAS_CUDA_KERNELS): the chunked SSD
// forward and backward (an autograd Function when a gradient is needed) and the decode step.
// ssd_scan.cpp has checked every shape; this file reads inputs in place through their strides
// (x, B, C are strided splits of the conv output; only the innermost dim must be unit-stride),
// allocates the fp32/fp64 workspaces and launches on the current stream.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/custom_function.h>

#include <string>
#include <vector>

#include "prism/core/error.h"
#include "prism/ops/ssd_scan.h"
#include "ssd/ssd_params.h"

namespace prism::ops {
namespace {

namespace k = prism::kernels::ssm;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool dtype_ok(const at::Tensor& t) {
  const auto s = t.scalar_type();
  return s == at::kFloat || s == at::kHalf || s == at::kBFloat16;
}

prism::kernels::DType kernel_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return prism::kernels::DType::kFloat32;
    case at::kHalf: return prism::kernels::DType::kFloat16;
    case at::kBFloat16: return prism::kernels::DType::kBFloat16;
    default: throw Error(prism::str("ssd_scan_cuda: unsupported dtype ", t.scalar_type(), " (fp32, fp16, bf16)"));
  }
}

/// The tensor itself, or a contiguous copy when its innermost stride is not 1 (or it is fp64).
at::Tensor unit_inner(const at::Tensor& t) {
  if (!t.defined()) return t;
  auto r = dtype_ok(t) ? t : t.to(at::kFloat);
  return r.dim() == 0 || r.stride(-1) == 1 || r.size(-1) == 1 ? r : r.contiguous();
}

k::StridedArg arg(const at::Tensor& t) {
  k::StridedArg a;
  if (!t.defined()) return a;
  a.ptr = t.data_ptr();
  a.dtype = kernel_dtype(t);
  int64_t* s[4] = {&a.s0, &a.s1, &a.s2, &a.s3};
  for (int64_t i = 0; i < t.dim() && i < 4; ++i) *s[i] = t.stride(i);
  return a;
}

cudaStream_t stream_of(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

}  // namespace

bool ssd_scan_cuda_supports(const at::Tensor& x, const at::Tensor& B, int64_t chunk_size) {
  return x.is_cuda() && dtype_ok(x) && k::ssd_scan_supported(x.size(3), B.size(3), chunk_size) && x.size(1) > 0 &&
         x.size(0) <= 65535 && x.size(2) <= 65535;
}

namespace {

/// The inputs as the kernels read them (unit inner stride, a kernel dtype) and the forward params
/// pointing into them; `keep` holds every tensor the params point into.
struct Staged {
  k::SsdScanFwdParams p;
  std::vector<at::Tensor> keep;
};

Staged stage(const at::Tensor& x_, const at::Tensor& dt_, const at::Tensor& A_, const at::Tensor& B_,
             const at::Tensor& C_, const at::Tensor& D_, const at::Tensor& initial_state, const at::Tensor& reset,
             int64_t Q) {
  auto x = unit_inner(x_), dt = unit_inner(dt_), A = unit_inner(A_), Bm = unit_inner(B_), Cm = unit_inner(C_);
  auto D = unit_inner(D_);
  const int64_t Bsz = x.size(0), L = x.size(1), H = x.size(2), P = x.size(3), G = Bm.size(2), N = Bm.size(3);
  const int64_t nc = (L + Q - 1) / Q;
  auto f32 = x.options().dtype(at::kFloat);
  Staged s;
  k::SsdScanFwdParams& p = s.p;
  p.x = arg(x);
  p.dt = arg(dt);
  p.A = arg(A);
  p.Bm = arg(Bm);
  p.Cm = arg(Cm);
  p.D = arg(D);
  if (reset.defined()) p.reset = reset.data_ptr<uint8_t>();
  at::Tensor init;
  if (initial_state.defined()) {
    init = initial_state.to(x.device(), at::kFloat).contiguous();
    p.initial_state = init.data_ptr<float>();
  }
  auto cs = at::empty({Bsz, H, nc * Q}, x.options().dtype(at::kDouble));
  auto cb = at::empty({Bsz, nc, G, Q, Q}, f32);
  auto states = at::empty({Bsz, nc, H, P, N}, f32);
  p.cs = cs.data_ptr<double>();
  p.cb = cb.data_ptr<float>();
  p.states = states.data_ptr<float>();
  p.B = Bsz;
  p.L = L;
  p.H = H;
  p.P = P;
  p.N = N;
  p.G = G;
  p.Q = Q;
  s.keep = {x, dt, A, Bm, Cm, D, reset, init, cs, cb, states};
  return s;
}

/// 1 at every document start; entries 0 and L (and empty documents) are harmless: slot 0 is
/// cleared (the initial state enters position 0) and slot L is past the end. Undefined: one document.
at::Tensor reset_mask(const at::Tensor& cu_seqlens, const at::Tensor& x) {
  if (!cu_seqlens.defined()) return {};
  auto reset = at::zeros({x.size(1) + 1}, x.options().dtype(at::kByte));
  reset.index_fill_(0, cu_seqlens.to(x.device(), at::kLong), 1);
  reset.narrow(0, 0, 1).zero_();
  return reset;
}

std::string shape_str(const k::SsdScanFwdParams& p) {
  return prism::str("B=", p.B, " L=", p.L, " H=", p.H, " P=", p.P, " G=", p.G, " N=", p.N, " Q=", p.Q);
}

SsdScanResult forward_launch(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                             const at::Tensor& C, const at::Tensor& D, const at::Tensor& init, const at::Tensor& reset,
                             int64_t Q) {
  auto s = stage(x, dt, A, B, C, D, init, reset, Q);
  auto f32 = x.options().dtype(at::kFloat);
  auto y = at::empty({s.p.B, s.p.L, s.p.H, s.p.P}, f32);
  auto final_state = at::empty({s.p.B, s.p.H, s.p.P, s.p.N}, f32);
  s.p.y = y.data_ptr<float>();
  s.p.final_state = final_state.data_ptr<float>();
  const int rc = k::ssd_scan_fwd(s.p, stream_of(x));
  PRISM_CHECK(rc == 0, "ssd_scan_cuda: forward kernel launch failed with cudaError ", rc, " (", shape_str(s.p), ")");
  return {y, final_state};
}

/// Training path: the chunked forward kernel, and the chunked backward kernel (kernels/ssd/
/// ssd_scan_kernel.cuh) for x, dt, A, B, C, D and initial_state. Saves only the inputs: the
/// backward recomputes the chunk cumsums, C·B and the chunk states (as mamba_ssm's backward does),
/// so the activation memory is the inputs' and not [B, L/Q, H, P, N] fp32 states.
struct SsdScanFn : torch::autograd::Function<SsdScanFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                               const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                               const at::Tensor& initial_state, const at::Tensor& reset, int64_t chunk_size) {
    auto r = forward_launch(x, dt, A, B, C, D, initial_state, reset, chunk_size);
    ctx->save_for_backward({x, dt, A, B, C, D, initial_state, reset});
    ctx->saved_data["chunk_size"] = chunk_size;
    return {r.y, r.final_state};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &dt = saved[1], &A = saved[2], &B = saved[3], &C = saved[4], &D = saved[5];
    const at::Tensor &init = saved[6], &reset = saved[7];
    const int64_t Q = ctx->saved_data["chunk_size"].toInt();
    const c10::cuda::CUDAGuard guard(x.device());
    auto s = stage(x, dt, A, B, C, D, init, reset, Q);
    k::SsdScanBwdParams q;
    q.f = s.p;
    const auto& p = q.f;
    auto f32 = x.options().dtype(at::kFloat);
    auto fs_scratch = at::empty({p.B, p.H, p.P, p.N}, f32);
    q.f.final_state = fs_scratch.data_ptr<float>();
    auto dy = grad_out[0].defined() ? grad_out[0].to(at::kFloat).contiguous() : at::zeros({p.B, p.L, p.H, p.P}, f32);
    at::Tensor dfinal;
    if (grad_out[1].defined()) {
      dfinal = grad_out[1].to(at::kFloat).contiguous();
      q.dfinal_state = dfinal.data_ptr<float>();
    }
    q.dy = dy.data_ptr<float>();
    auto dx = at::empty({p.B, p.L, p.H, p.P}, f32), ddt = at::empty({p.B, p.L, p.H}, f32);
    auto dA = at::empty({p.H}, f32), dB = at::empty({p.B, p.L, p.G, p.N}, f32), dC = at::empty_like(dB);
    at::Tensor dD, dinit;
    q.dx = dx.data_ptr<float>();
    q.ddt = ddt.data_ptr<float>();
    q.dA = dA.data_ptr<float>();
    q.dB = dB.data_ptr<float>();
    q.dC = dC.data_ptr<float>();
    if (D.defined()) {
      dD = at::empty({p.H}, f32);
      q.dD = dD.data_ptr<float>();
    }
    if (init.defined()) {
      dinit = at::empty({p.B, p.H, p.P, p.N}, f32);
      q.dinitial_state = dinit.data_ptr<float>();
    }
    const auto w = k::ssd_scan_bwd_workspace(p.B, p.L, p.H, p.P, p.N, p.G, p.Q);
    auto f64 = x.options().dtype(at::kDouble);
    auto dstates = at::empty({w.dstates}, f32), dcb = at::empty({w.dcb}, f32);
    auto rowpart = at::empty({w.rowpart}, f64), colpart = at::empty({w.colpart}, f64);
    auto dcs_off = at::empty({w.dcs_off}, f64), kst = at::empty({w.kst}, f64), dS = at::empty({w.dS}, f64);
    auto dA_part = at::empty({w.dA_part}, f64), dD_part = at::empty({w.dD_part}, f64);
    q.dstates = dstates.data_ptr<float>();
    q.dcb = dcb.data_ptr<float>();
    q.rowpart = rowpart.data_ptr<double>();
    q.colpart = colpart.data_ptr<double>();
    q.dcs_off = dcs_off.data_ptr<double>();
    q.kst = kst.data_ptr<double>();
    q.dS = dS.data_ptr<double>();
    q.dA_part = dA_part.data_ptr<double>();
    q.dD_part = dD_part.data_ptr<double>();
    const int rc = k::ssd_scan_bwd(q, stream_of(x));
    PRISM_CHECK(rc == 0, "ssd_scan_cuda: backward kernel launch failed with cudaError ", rc, " (", shape_str(p), ")");
    auto as = [](const at::Tensor& g, const at::Tensor& like) { return g.defined() ? g.to(like.scalar_type()) : g; };
    return {as(dx, x), as(ddt, dt), as(dA, A), as(dB, B), as(dC, C), as(dD, D), as(dinit, init), at::Tensor(),
            at::Tensor()};
  }
};

}  // namespace

SsdScanResult ssd_scan_cuda(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                            const at::Tensor& C, const at::Tensor& D, const SsdScanParams& sp) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto reset = reset_mask(sp.cu_seqlens, x);
  const auto& init = sp.initial_state;
  const bool grad = at::GradMode::is_enabled() &&
                    (x.requires_grad() || dt.requires_grad() || A.requires_grad() || B.requires_grad() ||
                     C.requires_grad() || (D.defined() && D.requires_grad()) || (init.defined() && init.requires_grad()));
  if (!grad) return forward_launch(x, dt, A, B, C, D, init, reset, sp.chunk_size);
  auto out = SsdScanFn::apply(x, dt, A, B, C, D, init, reset, sp.chunk_size);
  return {out[0], out[1]};
}

bool ssd_step_cuda_supports(const at::Tensor& state, const at::Tensor& x, const at::Tensor& B, const at::Tensor& C) {
  return state.is_cuda() && state.scalar_type() == at::kFloat && state.is_contiguous() && dtype_ok(x) &&
         state.size(0) <= 65535 && state.size(3) <= 4096;
}

at::Tensor ssd_step_cuda(at::Tensor& state, const at::Tensor& x_, const at::Tensor& dt_, const at::Tensor& A_,
                         const at::Tensor& B_, const at::Tensor& C_, const at::Tensor& D_) {
  auto x = unit_inner(x_), dt = unit_inner(dt_), A = unit_inner(A_), Bm = unit_inner(B_), Cm = unit_inner(C_);
  auto D = unit_inner(D_);
  k::SsdStepParams p;
  p.state = state.data_ptr<float>();
  p.x = arg(x);
  p.dt = arg(dt);
  p.A = arg(A);
  p.Bm = arg(Bm);
  p.Cm = arg(Cm);
  p.D = arg(D);
  p.B = state.size(0);
  p.H = state.size(1);
  p.P = state.size(2);
  p.N = state.size(3);
  p.G = Bm.size(1);
  auto y = at::empty({p.B, p.H, p.P}, state.options());
  p.y = y.data_ptr<float>();
  const int rc = k::ssd_step_fwd(p, stream_of(state));
  PRISM_CHECK(rc == 0, "ssd_step_cuda: kernel launch failed with cudaError ", rc);
  return y;
}

}  // namespace prism::ops
