// See linear_head_chunks.h.
#include "linear_head_chunks.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "prism/core/error.h"

namespace prism::ops::detail {

void check_linear_head_args(const char* op, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& labels, int64_t ignore_index, double logits_scaling,
                            int64_t chunk_tokens) {
  PRISM_CHECK(hidden.dim() == 2, op, ": hidden must be [N, D], got ", hidden.sizes());
  PRISM_CHECK(weight.dim() == 2 && weight.size(1) == hidden.size(1), op,
              ": weight must be [V, D] with D = ", hidden.size(1), ", got ", weight.sizes());
  PRISM_CHECK(weight.size(0) > 0, op, ": weight must have at least one row (vocab), got ", weight.sizes());
  PRISM_CHECK(at::isFloatingType(hidden.scalar_type()) && hidden.scalar_type() == weight.scalar_type(), op,
              ": hidden (", hidden.scalar_type(), ") and weight (", weight.scalar_type(),
              ") must have the same floating dtype");
  PRISM_CHECK(hidden.device() == weight.device(), op, ": hidden on ", hidden.device(), " but weight on ",
              weight.device());
  PRISM_CHECK(labels.dim() == 1 && labels.size(0) == hidden.size(0), op,
              ": labels must be [N] with N = ", hidden.size(0), ", got ", labels.sizes());
  PRISM_CHECK(at::isIntegralType(labels.scalar_type(), /*includeBool=*/false), op,
              ": labels must be an integer tensor, got ", labels.scalar_type());
  PRISM_CHECK(labels.device() == hidden.device(), op, ": labels on ", labels.device(), " but hidden on ",
              hidden.device());
  PRISM_CHECK(logits_scaling > 0.0, op, ": logits_scaling must be > 0, got ", logits_scaling);
  PRISM_CHECK(chunk_tokens >= 0, op, ": chunk_tokens must be >= 0 (0 = automatic), got ", chunk_tokens);
  // One host sync per call: an out-of-range label would read a wrong logit (or fault on the GPU).
  if (labels.numel() > 0) {
    const int64_t V = weight.size(0);
    auto bad = labels.ne(ignore_index).logical_and(labels.lt(0).logical_or(labels.ge(V)));
    PRISM_CHECK(!bad.any().item<bool>(), op, ": labels must be in [0, ", V, ") or ignore_index (", ignore_index,
                "); found ", labels.masked_select(bad).slice(0, 0, 5).cpu(), " ...");
  }
}

int64_t linear_head_chunk_rows(int64_t chunk_tokens, int64_t N, int64_t V, int64_t elem_bytes) {
  int64_t c = chunk_tokens;
  if (c == 0) {
    constexpr int64_t kBudget = int64_t{256} << 20;  // bytes of logits per chunk
    c = std::max<int64_t>(1, kBudget / std::max<int64_t>(1, V * elem_bytes));
    if (c >= 256) c = c / 128 * 128;  // GEMM-friendly
  }
  return std::max<int64_t>(1, std::min(c, N));
}

void accumulate_weight_grad(const at::Tensor& acc, const at::Tensor& dlogits, const at::Tensor& hc, bool first) {
  const double beta = first ? 0.0 : 1.0;
  auto out = acc;
  if (acc.scalar_type() == dlogits.scalar_type()) {
    out.addmm_(dlogits.t(), hc, beta);
  } else if (dlogits.is_cuda()) {
    // bf16/fp16 operands, fp32 accumulator and output (cuBLAS with an fp32 C; baddbmm's
    // out_dtype overload accumulates into `out` when self is out).
    auto acc3 = out.unsqueeze(0);
    try {
      at::baddbmm_out(acc3, acc3, dlogits.t().unsqueeze(0), hc.unsqueeze(0), at::kFloat, beta, 1);
    } catch (const c10::Error&) {
      // A LibTorch without the out_dtype GEMM: same result through an fp32 GEMM (slower).
      out.addmm_(dlogits.t().to(at::kFloat), hc.to(at::kFloat), beta);
    }
  } else {
    out.addmm_(dlogits.t().to(at::kFloat), hc.to(at::kFloat), beta);
  }
}

bool linear_head_uses_kernel(const at::Tensor& hidden, const at::Tensor& weight, Impl impl) {
#ifdef PRISM_HAS_CUDA_KERNELS
  const auto dt = hidden.scalar_type();
  return impl == Impl::kAuto && hidden.is_cuda() && weight.is_cuda() && weight.scalar_type() == dt &&
         (dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16);
#else
  (void)hidden;
  (void)weight;
  (void)impl;
  return false;
#endif
}

}  // namespace prism::ops::detail
