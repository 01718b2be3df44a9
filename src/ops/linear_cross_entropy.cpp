// Chunked linear + cross-entropy (see the header): argument checks, the token-chunk loop, the
// autograd Function that runs it in forward and only scales its stashed gradients in backward,
// and the ATen version of the per-chunk step (the CPU / fp64 path, and the contract the CUDA
// kernel in kernels/linear_cross_entropy is held to).
//
// Per chunk c of n tokens (all in the inputs' dtype unless noted):
//   logits  = hidden[c] @ W^T                               at::mm_out into one reused [chunk, V] buffer
//   step    : row loss / lse (fp32), logits := d(loss + z-loss)/d(logits)   (kernel or ATen, in place)
//   dH[c]   = dlogits @ W                                   complete per chunk (contracts over V)
//   dW_acc += dlogits^T @ hidden[c]                         fp32 accumulator for half/bf16, so the sum
//                                                           over chunks is rounded once (at the end)
// The gradients are those of (loss_sum + z_loss_sum) for an incoming gradient of 1; backward
// multiplies them by the actual one. Why this and not a recompute in backward: one GEMM less
// (3 instead of 4 per chunk), at the price of keeping dH and dW from forward to backward, which
// the parameter gradient and the backward through the model need anyway.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "linear_head_chunks.h"
#include "prism/core/error.h"
#include "prism/ops/linear_cross_entropy.h"

namespace prism::ops {

#ifdef PRISM_HAS_CUDA_KERNELS
// linear_cross_entropy_cuda.cpp: the fused chunk step on the GPU (same contract as chunk_step_aten).
void linear_ce_chunk_cuda(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& loss,
                          const at::Tensor& lse, int64_t ignore_index, double logit_scale, double z_loss_weight,
                          bool write_grad);
#endif

void check_linear_cross_entropy_args(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                     const LinearCrossEntropyOptions& opts) {
  detail::check_linear_head_args("linear_cross_entropy", hidden, weight, labels, opts.ignore_index, opts.logits_scaling,
                                 opts.chunk_tokens);
}

bool linear_cross_entropy_uses_kernel(const at::Tensor& hidden, const at::Tensor& weight, Impl impl) {
  return detail::linear_head_uses_kernel(hidden, weight, impl);
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The chunk step with ATen ops, in fp32 (fp64 for fp64 logits). logits [n, V] is overwritten with
// the gradient when write_grad; loss / lse [n] get lse - z[label] and lse (0 on ignored rows).
void chunk_step_aten(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& loss, const at::Tensor& lse,
                     int64_t ignore_index, double logit_scale, double z_loss_weight, bool write_grad) {
  const auto cdt = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto z = logits.to(cdt, /*non_blocking=*/false, /*copy=*/true);  // [n, V]: the chunk's only upcast
  if (logit_scale != 1.0) z.mul_(logit_scale);
  auto keep = labels.ne(ignore_index);
  auto safe = labels.masked_fill(keep.logical_not(), 0).unsqueeze(1);  // [n, 1]
  auto l = at::logsumexp(z, 1);
  auto picked = z.gather(1, safe).squeeze(1);
  // where, not a multiply by the mask: an ignored row may hold anything, 0 * inf is NaN.
  loss.copy_(at::where(keep, l - picked, 0.0));
  lse.copy_(at::where(keep, l, 0.0));
  if (!write_grad) return;
  z.sub_(l.unsqueeze(1)).exp_();  // softmax
  z.mul_(at::where(keep, (1.0 + 2.0 * z_loss_weight * l) * logit_scale, 0.0).unsqueeze(1));
  z.scatter_add_(1, safe, keep.to(cdt).mul_(-logit_scale).unsqueeze(1));
  logits.copy_(z);
}

struct Pass {
  at::Tensor loss_sum, z_loss_sum;  // scalars (fp32, fp64 for fp64 inputs)
  at::Tensor dh;                    // [N, D] hidden's dtype (when wanted)
  at::Tensor dw;                    // [V, D] weight's dtype (when wanted)
};

// The whole chunked computation; gradients are those of loss_sum + z_loss_sum.
Pass chunked_pass(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                  const LinearCrossEntropyOptions& o, bool use_kernel, bool need_dh, bool need_dw) {
  const auto h = hidden.contiguous();  // [N, D]
  const auto w = weight.contiguous();  // [V, D]
  const auto l = labels.contiguous();  // [N] int64
  const int64_t N = h.size(0), D = h.size(1), V = w.size(0);
  const auto dt = h.scalar_type();
  const auto cdt = dt == at::kDouble ? at::kDouble : at::kFloat;
  const bool half = dt == at::kHalf || dt == at::kBFloat16;
  const double scale = 1.0 / o.logits_scaling;
  const bool write_grad = need_dh || need_dw;

  auto row_loss = at::empty({N}, h.options().dtype(cdt));
  auto row_lse = at::empty({N}, h.options().dtype(cdt));
  at::Tensor dh, dw_acc;
  if (need_dh) dh = at::empty({N, D}, h.options());
  // Not zero-filled: the first chunk's GEMM runs with beta = 0 (PyTorch ignores `self` then, NaN
  // included), which saves a [V, D] fill per call (128 MB at V 32k, D 1k in fp32).
  if (need_dw) dw_acc = N > 0 ? at::empty({V, D}, h.options().dtype(half ? at::kFloat : dt))
                               : at::zeros({V, D}, h.options().dtype(half ? at::kFloat : dt));
  const int64_t chunk = detail::linear_head_chunk_rows(o.chunk_tokens, N, V, static_cast<int64_t>(h.element_size()));
  auto buf = at::empty({std::min(chunk, N), V}, h.options());  // the only [*, V] tensor
  const auto wt = w.t();                                       // [D, V] view
  for (int64_t s = 0; s < N; s += chunk) {
    const int64_t n = std::min(chunk, N - s);
    const auto hc = h.narrow(0, s, n);  // [n, D]
    auto lg = buf.narrow(0, 0, n);      // [n, V] contiguous
    at::mm_out(lg, hc, wt);
    const auto lc = l.narrow(0, s, n);
    const auto loss_c = row_loss.narrow(0, s, n);
    const auto lse_c = row_lse.narrow(0, s, n);
#ifdef PRISM_HAS_CUDA_KERNELS
    if (use_kernel)
      linear_ce_chunk_cuda(lg, lc, loss_c, lse_c, o.ignore_index, scale, o.z_loss_weight, write_grad);
    else
#endif
      chunk_step_aten(lg, lc, loss_c, lse_c, o.ignore_index, scale, o.z_loss_weight, write_grad);
    if (need_dh) {
      auto out = dh.narrow(0, s, n);
      at::mm_out(out, lg, w);  // [n, V] @ [V, D]
    }
    if (need_dw) detail::accumulate_weight_grad(dw_acc, lg, hc, /*first=*/s == 0);
  }
  buf.reset();
  Pass p;
  p.loss_sum = row_loss.sum();
  p.z_loss_sum = row_lse.square().sum() * o.z_loss_weight;  // lse is 0 on ignored rows
  if (need_dh) p.dh = dh;
  if (need_dw) {
    p.dw = dw_acc.scalar_type() == dt ? dw_acc : dw_acc.to(dt);
  }
  return p;
}

struct LinearCrossEntropyFn : torch::autograd::Function<LinearCrossEntropyFn> {
  // Returns {loss_sum + z_loss_sum, loss_sum, z_loss_sum}; only the first is differentiable.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                               const at::Tensor& labels, int64_t ignore_index, double z_loss_weight,
                               double logits_scaling, int64_t chunk_tokens, bool use_kernel, bool need_dh,
                               bool need_dw) {
    LinearCrossEntropyOptions o;
    o.ignore_index = ignore_index;
    o.z_loss_weight = z_loss_weight;
    o.logits_scaling = logits_scaling;
    o.chunk_tokens = chunk_tokens;
    auto p = chunked_pass(hidden, weight, labels, o, use_kernel, need_dh, need_dw);
    if (p.dh.defined()) ctx->saved_data["dh"] = p.dh;
    if (p.dw.defined()) ctx->saved_data["dw"] = p.dw;
    ctx->saved_data["pending"] = true;
    auto total = p.loss_sum + p.z_loss_sum;
    ctx->mark_non_differentiable({p.loss_sum, p.z_loss_sum});
    return {total, p.loss_sum, p.z_loss_sum};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    PRISM_CHECK(ctx->saved_data["pending"].toBool(),
                "linear_cross_entropy: backward ran twice (retain_graph); its gradients are computed once in "
                "forward and handed over in the first backward");
    ctx->saved_data["pending"] = false;
    const auto& g = grad_out[0];  // scalar d(objective)/d(loss_sum + z_loss_sum)
    at::Tensor dh, dw;
    // In place on the stash and dropped from ctx, so autograd can take the buffers over as .grad.
    if (ctx->saved_data.count("dh")) {
      dh = ctx->saved_data["dh"].toTensor();
      ctx->saved_data.erase("dh");
      g.defined() ? dh.mul_(g) : dh.zero_();
    }
    if (ctx->saved_data.count("dw")) {
      dw = ctx->saved_data["dw"].toTensor();
      ctx->saved_data.erase("dw");
      g.defined() ? dw.mul_(g) : dw.zero_();
    }
    variable_list grads(10);  // one per forward argument; only hidden and weight are differentiable
    grads[0] = dh;
    grads[1] = dw;
    return grads;
  }
};

}  // namespace

LinearCrossEntropyResult linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight,
                                              const at::Tensor& labels, const LinearCrossEntropyOptions& opts,
                                              Impl impl) {
  if (impl == Impl::kReference) return linear_cross_entropy_ref(hidden, weight, labels, opts);
  check_linear_cross_entropy_args(hidden, weight, labels, opts);
  const bool use_kernel = linear_cross_entropy_uses_kernel(hidden, weight, impl);
  const auto l = labels.to(at::kLong);
  const bool grad = at::GradMode::is_enabled();
  const bool need_dh = grad && hidden.requires_grad();
  const bool need_dw = grad && weight.requires_grad();
  LinearCrossEntropyResult r;
  if (need_dh || need_dw) {
    auto out = LinearCrossEntropyFn::apply(hidden, weight, l, opts.ignore_index, opts.z_loss_weight,
                                           opts.logits_scaling, opts.chunk_tokens, use_kernel, need_dh, need_dw);
    r.loss = out[0];
    r.loss_sum = out[1];
    r.z_loss_sum = out[2];
  } else {
    at::NoGradGuard no_grad;
    auto p = chunked_pass(hidden, weight, l, opts, use_kernel, false, false);
    r.loss = p.loss_sum + p.z_loss_sum;
    r.loss_sum = p.loss_sum;
    r.z_loss_sum = p.z_loss_sum;
  }
  r.num_tokens = l.ne(opts.ignore_index).sum();
  return r;
}

}  // namespace prism::ops
