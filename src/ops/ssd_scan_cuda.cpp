// at::Tensor binding of kernels/ssd (compiled only with PRISM_HAS_CUDA_KERNELS): the chunked SSD
// forward and the decode step. ssd_scan.cpp has checked every shape; this file reads inputs in
// place through their strides (x, B, C are strided splits of the conv output; only the innermost
// dim must be unit-stride), allocates the fp32/fp64 workspaces and launches on the current stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>

#include "prism/core/error.h"
#include "prism/ops/ssd_scan.h"
#include "ssd/ssd_params.h"

namespace prism::ops {
namespace {

namespace k = prism::kernels::ssm;

bool dtype_ok(const at::Tensor& t) {
  const auto s = t.scalar_type();
  return s == at::kFloat || s == at::kHalf || s == at::kBFloat16;
}

k::DType kernel_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return k::DType::kFloat32;
    case at::kHalf: return k::DType::kFloat16;
    case at::kBFloat16: return k::DType::kBFloat16;
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

SsdScanResult ssd_scan_cuda(const at::Tensor& x_, const at::Tensor& dt_, const at::Tensor& A_, const at::Tensor& B_,
                            const at::Tensor& C_, const at::Tensor& D_, const SsdScanParams& sp) {
  auto x = unit_inner(x_), dt = unit_inner(dt_), A = unit_inner(A_), Bm = unit_inner(B_), Cm = unit_inner(C_);
  auto D = unit_inner(D_);
  const int64_t Bsz = x.size(0), L = x.size(1), H = x.size(2), P = x.size(3), G = Bm.size(2), N = Bm.size(3);
  const int64_t Q = sp.chunk_size, nc = (L + Q - 1) / Q;
  auto f32 = x.options().dtype(at::kFloat);
  k::SsdScanFwdParams p;
  p.x = arg(x);
  p.dt = arg(dt);
  p.A = arg(A);
  p.Bm = arg(Bm);
  p.Cm = arg(Cm);
  p.D = arg(D);
  at::Tensor reset;
  if (sp.cu_seqlens.defined()) {
    // 1 at every document start; entries 0 and L (and empty documents) are harmless: slot 0 is
    // cleared (the initial state enters position 0) and slot L is past the end.
    reset = at::zeros({L + 1}, x.options().dtype(at::kByte));
    reset.index_fill_(0, sp.cu_seqlens.to(x.device(), at::kLong), 1);
    reset.narrow(0, 0, 1).zero_();
    p.reset = reset.data_ptr<uint8_t>();
  }
  at::Tensor init;
  if (sp.initial_state.defined()) {
    init = sp.initial_state.to(x.device(), at::kFloat).contiguous();
    p.initial_state = init.data_ptr<float>();
  }
  auto y = at::empty({Bsz, L, H, P}, f32);
  auto final_state = at::empty({Bsz, H, P, N}, f32);
  auto cs = at::empty({Bsz, H, nc * Q}, x.options().dtype(at::kDouble));
  auto cb = at::empty({Bsz, nc, G, Q, Q}, f32);
  auto states = at::empty({Bsz, nc, H, P, N}, f32);
  p.y = y.data_ptr<float>();
  p.final_state = final_state.data_ptr<float>();
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
  const int rc = k::ssd_scan_fwd(p, stream_of(x));
  PRISM_CHECK(rc == 0, "ssd_scan_cuda: kernel launch failed with cudaError ", rc, " (B=", Bsz, " L=", L, " H=", H,
              " P=", P, " G=", G, " N=", N, " Q=", Q, ")");
  return {y, final_state};
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
