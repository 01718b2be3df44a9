// ssd_scan: argument checks and dispatch (style.md §3 rule 4, the kernel triplet).
//
// Every shape, dtype and cu_seqlens invariant is checked here once, with the argument's name, the
// expected shape spelled with the actual sizes and what was found, so that neither the reference
// nor the kernel has to. Dispatch: CUDA tensors run the chunked kernels (kernels/ssd, mamba_ssm
// `mamba_chunk_scan_combined` without dt preprocessing) when they support the shape: the forward
// kernel alone without autograd, an autograd Function over the forward and backward kernels when
// any input needs a gradient (ssd_scan_cuda.cpp; gradients for x, dt, A, B, C, D and
// initial_state, the same contract as the reference's autograd). Everything else (fp64; other
// P/N/Q; p.impl == kReference) runs ssd_scan_ref. ssd_step: kernels/ssd/ssd_step.cu without autograd.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <string>

#include "prism/core/error.h"
#include "prism/ops/ssd_scan.h"

namespace prism::ops {

#ifdef PRISM_HAS_CUDA_KERNELS
// ssd_scan_cuda.cpp
bool ssd_scan_cuda_supports(const at::Tensor& x, const at::Tensor& B, int64_t chunk_size);
SsdScanResult ssd_scan_cuda(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                            const at::Tensor& C, const at::Tensor& D, const SsdScanParams& p);
bool ssd_step_cuda_supports(const at::Tensor& state, const at::Tensor& x, const at::Tensor& B, const at::Tensor& C);
at::Tensor ssd_step_cuda(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                         const at::Tensor& B, const at::Tensor& C, const at::Tensor& D);
#endif

namespace {

bool any_requires_grad(std::initializer_list<const at::Tensor*> ts) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : ts)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

std::string dims(std::initializer_list<int64_t> v) {
  std::string s = "[";
  for (auto it = v.begin(); it != v.end(); ++it) s += (it == v.begin() ? "" : ", ") + std::to_string(*it);
  return s + "]";
}

void check_float(const at::Tensor& t, const char* name) {
  PRISM_CHECK(t.is_floating_point(), "ssd_scan: ", name, " must be a floating-point tensor, got ", t.scalar_type());
}

}  // namespace

SsdScanResult ssd_scan(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                       const at::Tensor& C, const at::Tensor& D, const SsdScanParams& p) {
  PRISM_CHECK(x.defined() && x.dim() == 4, "ssd_scan: x must be [B, L, H, P], got ",
              x.defined() ? x.sizes() : at::IntArrayRef{});
  const int64_t Bsz = x.size(0), L = x.size(1), H = x.size(2), P = x.size(3);
  PRISM_CHECK(B.defined() && B.dim() == 4 && B.size(0) == Bsz && B.size(1) == L,
              "ssd_scan: B must be [B, L, G, N] = [", Bsz, ", ", L, ", G, N], got ",
              B.defined() ? B.sizes() : at::IntArrayRef{});
  const int64_t G = B.size(2), N = B.size(3);
  PRISM_CHECK(G > 0 && H % G == 0, "ssd_scan: the number of groups G = ", G, " (B.size(2)) must divide H = ", H);
  PRISM_CHECK(C.defined() && C.sizes() == B.sizes(), "ssd_scan: C must be [B, L, G, N] = ", dims({Bsz, L, G, N}),
              ", got ", C.defined() ? C.sizes() : at::IntArrayRef{});
  PRISM_CHECK(dt.defined() && dt.dim() == 3 && dt.size(0) == Bsz && dt.size(1) == L && dt.size(2) == H,
              "ssd_scan: dt must be [B, L, H] = ", dims({Bsz, L, H}), ", got ",
              dt.defined() ? dt.sizes() : at::IntArrayRef{});
  PRISM_CHECK(A.defined() && A.dim() == 1 && A.size(0) == H, "ssd_scan: A must be [H] = ", dims({H}), ", got ",
              A.defined() ? A.sizes() : at::IntArrayRef{});
  PRISM_CHECK(!D.defined() || (D.dim() == 1 && D.size(0) == H), "ssd_scan: D must be [H] = ", dims({H}), ", got ",
              D.defined() ? D.sizes() : at::IntArrayRef{});
  check_float(x, "x");
  check_float(dt, "dt");
  check_float(A, "A");
  check_float(B, "B");
  check_float(C, "C");
  if (D.defined()) check_float(D, "D");
  for (const at::Tensor* t : {&dt, &A, &B, &C, &D})
    PRISM_CHECK(!t->defined() || t->device() == x.device(), "ssd_scan: all tensors must be on x's device ",
                x.device(), ", found one on ", t->device());
  PRISM_CHECK(p.chunk_size > 0, "ssd_scan: chunk_size must be > 0, got ", p.chunk_size);
  if (p.initial_state.defined()) {
    PRISM_CHECK(p.initial_state.sizes() == at::IntArrayRef({Bsz, H, P, N}),
                "ssd_scan: initial_state must be [B, H, P, N] = ", dims({Bsz, H, P, N}), ", got ",
                p.initial_state.sizes());
    check_float(p.initial_state, "initial_state");
  }
  if (p.cu_seqlens.defined()) {
    PRISM_CHECK(Bsz == 1, "ssd_scan: cu_seqlens (packed documents) needs batch size 1, got B = ", Bsz);
    PRISM_CHECK(p.cu_seqlens.dim() == 1 && p.cu_seqlens.numel() >= 2 &&
                    (p.cu_seqlens.scalar_type() == at::kLong || p.cu_seqlens.scalar_type() == at::kInt),
                "ssd_scan: cu_seqlens must be an int64 [num_docs + 1] tensor, got ", p.cu_seqlens.scalar_type(), " ",
                p.cu_seqlens.sizes());
    auto cu = p.cu_seqlens.to(at::kCPU, at::kLong).contiguous();
    const int64_t* c = cu.data_ptr<int64_t>();
    const int64_t n = cu.numel();
    PRISM_CHECK(c[0] == 0 && c[n - 1] == L, "ssd_scan: cu_seqlens must start at 0 and end at L = ", L, ", got ",
                c[0], " .. ", c[n - 1]);
    for (int64_t i = 1; i < n; ++i)
      PRISM_CHECK(c[i] >= c[i - 1], "ssd_scan: cu_seqlens must be non-decreasing, got ", c[i - 1], " then ", c[i],
                  " at index ", i);
  }
#ifdef PRISM_HAS_CUDA_KERNELS
  if (p.impl == Impl::kAuto && ssd_scan_cuda_supports(x, B, p.chunk_size)) return ssd_scan_cuda(x, dt, A, B, C, D, p);
#endif
  return ssd_scan_ref(x, dt, A, B, C, D, p);
}

at::Tensor ssd_step(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                    const at::Tensor& B, const at::Tensor& C, const at::Tensor& D, Impl impl) {
  PRISM_CHECK(state.defined() && x.defined() && dt.defined() && A.defined() && B.defined() && C.defined(),
              "ssd_step: state, x, dt, A, B and C must be defined");

  PRISM_CHECK(state.dim() == 4, "ssd_step: state must be [B, H, P, N], got ", state.sizes());
  const int64_t Bsz = state.size(0), H = state.size(1), P = state.size(2), N = state.size(3);
  PRISM_CHECK(state.is_floating_point() && state.scalar_type() != at::kBFloat16 && state.scalar_type() != at::kHalf,
              "ssd_step: state must be fp32 (or fp64), got ", state.scalar_type());
  PRISM_CHECK(x.dim() == 3 && x.size(0) == Bsz && x.size(1) == H && x.size(2) == P,
              "ssd_step: x must be [B, H, P] = [", Bsz, ", ", H, ", ", P, "], got ", x.sizes());
  PRISM_CHECK(dt.dim() == 2 && dt.size(0) == Bsz && dt.size(1) == H, "ssd_step: dt must be [B, H] = [", Bsz, ", ",
              H, "], got ", dt.sizes());
  PRISM_CHECK(A.dim() == 1 && A.size(0) == H, "ssd_step: A must be [H] = [", H, "], got ", A.sizes());
  PRISM_CHECK(B.dim() == 3 && B.size(0) == Bsz && B.size(2) == N && B.size(1) > 0 && H % B.size(1) == 0,
              "ssd_step: B must be [B, G, N] with H % G == 0 (B = ", Bsz, ", H = ", H, ", N = ", N, "), got ",
              B.sizes());
  PRISM_CHECK(C.sizes() == B.sizes(), "ssd_step: C must be [B, G, N] = ", B.sizes(), ", got ", C.sizes());
  PRISM_CHECK(!D.defined() || (D.dim() == 1 && D.size(0) == H), "ssd_step: D must be [H] = [", H, "], got ",
              D.sizes());
  for (const at::Tensor* t : {&x, &dt, &A, &B, &C, &D})
    PRISM_CHECK(!t->defined() || t->device() == state.device(), "ssd_step: all tensors must be on the state's device ",
                state.device(), ", found one on ", t->device());
#ifdef PRISM_HAS_CUDA_KERNELS
  if (impl == Impl::kAuto && !any_requires_grad({&state, &x, &dt, &A, &B, &C, &D}) &&
      ssd_step_cuda_supports(state, x, B, C))
    return ssd_step_cuda(state, x, dt, A, B, C, D);
#endif
  return ssd_step_ref(state, x, dt, A, B, C, D);
}

}  // namespace prism::ops
