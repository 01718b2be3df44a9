// Chunked linear log-probs (see the header): argument checks, the token-chunk loops of forward and
// backward, the autograd Function that joins them, and the ATen versions of the per-chunk steps
// (the CPU / fp64 path, and the contract the CUDA kernels in
// kernels/linear_cross_entropy/linear_logprobs_kernel.cuh are held to).
//
// With c = 1 / (logits_scaling * temperature), z = c * (hidden @ W^T), p = softmax(z) per row:
// forward, per chunk of n tokens
//   logits = hidden[c] @ W^T                       at::mm_out into one reused [chunk, V] buffer
//   stats  : logprob = z[label] - lse, H = -sum p log p, lse      (fp32, kernel or ATen)
// backward, per chunk, given g_lp, g_H [N] (either may be absent)
//   logits = hidden[c] @ W^T                       recomputed into the same kind of buffer
//   grad   : logits := c (g_lp (onehot - p) - g_H p (log p + H))   in place, p from the saved lse
//   dH[c]  = dlogits @ W,  dW_acc += dlogits^T @ hidden[c]         as in linear_cross_entropy
// Why recompute rather than keep the gradient from forward as linear_cross_entropy does: the
// upstream gradient is per row and known only in backward (a policy-gradient loss multiplies each
// token's log-prob by an advantage and a ratio that depends on it), and [N, V] softmax
// probabilities are exactly what this op exists not to keep. Where memory is not the constraint
// (CPU), keep_logits_bytes lets forward keep the logits and backward skip the recompute GEMM.
#include "prism/ops/linear_logprobs.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>

#include "linear_head_chunks.h"
#include "prism/core/error.h"

namespace prism::ops {

#ifdef PRISM_HAS_CUDA_KERNELS
// linear_logprobs_cuda.cpp: the chunk steps on the GPU (same contracts as fwd_step_aten / bwd_step_aten).
void linear_logprobs_fwd_chunk_cuda(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& logprob,
                                    const at::Tensor& entropy, const at::Tensor& lse, int64_t ignore_index,
                                    double logit_scale);
void linear_logprobs_bwd_chunk_cuda(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& lse,
                                    const at::Tensor& entropy, const at::Tensor& grad_logprob,
                                    const at::Tensor& grad_entropy, int64_t ignore_index, double logit_scale);
#endif

void check_linear_logprobs_args(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                const LinearLogprobsOptions& opts) {
  detail::check_linear_head_args("linear_logprobs", hidden, weight, labels, opts.ignore_index, opts.logits_scaling,
                                 opts.chunk_tokens);
  PRISM_CHECK(opts.temperature > 0.0 && std::isfinite(opts.temperature),
              "linear_logprobs: temperature must be finite and > 0, got ", opts.temperature);
  PRISM_CHECK(opts.keep_logits_bytes >= 0, "linear_logprobs: keep_logits_bytes must be >= 0 (0 = never), got ",
              opts.keep_logits_bytes);
}

bool linear_logprobs_uses_kernel(const at::Tensor& hidden, const at::Tensor& weight, Impl impl) {
  return detail::linear_head_uses_kernel(hidden, weight, impl);
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::ScalarType compute_dtype(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// Rows per block of the ATen chunk steps. On a CPU each step walks its chunk in blocks of about
// 1 MiB of logits so that the block's temporaries (log p, p) stay in cache: the [n, V] chunk is
// read from memory once per step instead of once per elementwise op (~16 passes over 0.8 GB per
// 4k-token update before). On a GPU the whole chunk is one block (kernel launches are the cost).
int64_t step_block_rows(const at::Tensor& logits) {
  const int64_t n = logits.size(0), V = std::max<int64_t>(1, logits.size(1));
  if (!logits.device().is_cpu()) return std::max<int64_t>(1, n);
  constexpr int64_t kBlockBytes = int64_t{1} << 20;
  return std::max<int64_t>(1, kBlockBytes / (V * static_cast<int64_t>(sizeof(float))));
}

// Forward chunk step with ATen ops, in fp32 (fp64 for fp64 logits): logprob / entropy / lse [n]
// of z = logits * scale (0 on ignored rows); logits are left as they are. Per block of rows:
// log p = log_softmax(z); logprob = log p[label]; lse = max z - log p[argmax z] (the log-prob of
// the largest logit is in [-log V, 0], so lse keeps fp32's precision); H = -sum p log p.
void fwd_step_aten(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& logprob,
                   const at::Tensor& entropy, const at::Tensor& lse, int64_t ignore_index, double scale) {
  const int64_t n = logits.size(0);
  const auto cdt = compute_dtype(logits);
  auto keep = labels.ne(ignore_index);
  auto safe = labels.masked_fill(keep.logical_not(), 0).unsqueeze(1);  // [n, 1]
  const auto vec = logits.options().dtype(cdt);
  auto picked = at::empty({n}, vec), l = at::empty({n}, vec), h = at::empty({n}, vec);
  const int64_t blk = step_block_rows(logits);
  const bool convert = logits.scalar_type() != cdt || scale != 1.0;
  at::Tensor zb_buf, lp_buf, p_buf, mx, arg;
  for (int64_t r = 0; r < n; r += blk) {
    const int64_t b = std::min(blk, n - r);
    auto z = logits.narrow(0, r, b);
    if (convert) {
      if (!zb_buf.defined()) zb_buf = at::empty({std::min(blk, n), logits.size(1)}, vec);
      auto zb = zb_buf.narrow(0, 0, b);
      zb.copy_(z);
      if (scale != 1.0) zb.mul_(scale);
      z = zb;
    }
    if (!lp_buf.defined()) {
      lp_buf = at::empty({std::min(blk, n), logits.size(1)}, vec);
      p_buf = at::empty_like(lp_buf);
      mx = at::empty({std::min(blk, n)}, vec);
      arg = at::empty({std::min(blk, n)}, logits.options().dtype(at::kLong));
    }
    auto lp = lp_buf.narrow(0, 0, b), p = p_buf.narrow(0, 0, b), m = mx.narrow(0, 0, b), i = arg.narrow(0, 0, b);
    at::_log_softmax_out(lp, z, 1, false);
    at::max_out(m, i, z, 1);
    auto picked_b = picked.narrow(0, r, b).unsqueeze(1), l_b = l.narrow(0, r, b), h_b = h.narrow(0, r, b);
    at::gather_out(picked_b, lp, 1, safe.narrow(0, r, b));
    at::sub_out(l_b, m, lp.gather(1, i.unsqueeze(1)).squeeze(1));
    at::exp_out(p, lp);
    p.mul_(lp);
    at::sum_out(h_b, p, 1);
  }
  h.neg_();
  // where, not a multiply by the mask: an ignored row may hold anything, 0 * inf is NaN.
  logprob.copy_(at::where(keep, picked, 0.0));
  entropy.copy_(at::where(keep, h, 0.0));
  lse.copy_(at::where(keep, l, 0.0));
}

// Backward chunk step with ATen ops: out [n, V] := d(sum g_lp logprob + g_H entropy)/d(logits)
// of the logits in `in` (the same tensor, or the logits kept by forward, which are left intact),
// with p recomputed from the forward's lse. g_lp / g_H [n] in the compute dtype; either may be
// undefined (zero). Per block of rows (step_block_rows): d = -p (g_lp + g_H (log p + H)),
// d[label] += g_lp, times the scale.
void bwd_step_aten(const at::Tensor& in, const at::Tensor& out, const at::Tensor& labels, const at::Tensor& lse,
                   const at::Tensor& entropy, const at::Tensor& g_lp, const at::Tensor& g_h, int64_t ignore_index,
                   double scale) {
  const int64_t n = out.size(0), V = out.size(1);
  const auto cdt = compute_dtype(out);
  const auto vec = out.options().dtype(cdt);
  auto keep = labels.ne(ignore_index);
  auto safe = labels.masked_fill(keep.logical_not(), 0).unsqueeze(1);
  const bool any_ignored = !keep.all().item<bool>();
  const bool direct = out.scalar_type() == cdt;  // else: computed in cdt, then cast into out
  const int64_t blk = step_block_rows(out);
  at::Tensor d_buf, t_buf;
  for (int64_t r = 0; r < n; r += blk) {
    const int64_t b = std::min(blk, n - r);
    auto src = in.narrow(0, r, b);
    at::Tensor d;
    if (direct) {
      d = out.narrow(0, r, b);
    } else {
      if (!d_buf.defined()) d_buf = at::empty({std::min(blk, n), V}, vec);
      d = d_buf.narrow(0, 0, b);
    }
    const auto l = lse.narrow(0, r, b).unsqueeze(1);
    if (scale != 1.0) {
      d.copy_(src);  // in place when src is d
      d.mul_(scale).sub_(l);
    } else {
      at::sub_out(d, src, l);  // log p
    }
    const auto gl = g_lp.defined() ? g_lp.narrow(0, r, b).unsqueeze(1) : at::Tensor();
    if (g_h.defined()) {
      if (!t_buf.defined()) t_buf = at::empty({std::min(blk, n), V}, vec);
      auto t = t_buf.narrow(0, 0, b);
      at::add_out(t, d, entropy.narrow(0, r, b).unsqueeze(1));
      t.mul_(g_h.narrow(0, r, b).unsqueeze(1));
      if (gl.defined()) t.add_(gl);
      d.exp_().mul_(t);
    } else {
      d.exp_().mul_(gl);
    }
    d.neg_();
    if (gl.defined()) d.scatter_add_(1, safe.narrow(0, r, b), gl);
    if (scale != 1.0) d.mul_(scale);
    if (any_ignored) d.masked_fill_(keep.narrow(0, r, b).logical_not().unsqueeze(1), 0.0);
    if (!direct) out.narrow(0, r, b).copy_(d);
  }
}

struct Stats {
  at::Tensor logprob, entropy, lse;  // [N], fp32 (fp64 for fp64 inputs)
  at::Tensor logits;                 // [N, V] in the inputs' dtype when kept for backward, else undefined
};

Stats chunked_forward(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                      const LinearLogprobsOptions& o, bool use_kernel, bool keep_logits = false) {
  const auto h = hidden.contiguous();  // [N, D]
  const auto w = weight.contiguous();  // [V, D]
  const int64_t N = h.size(0), V = w.size(0);
  const double scale = 1.0 / (o.logits_scaling * o.temperature);
  const auto stat_opts = h.options().dtype(compute_dtype(h));
  Stats st{at::empty({N}, stat_opts), at::empty({N}, stat_opts), at::empty({N}, stat_opts)};
  const int64_t chunk = detail::linear_head_chunk_rows(o.chunk_tokens, N, V, static_cast<int64_t>(h.element_size()));
  // The only [*, V] tensor: one chunk, or all N rows when they are kept for backward (the chunk
  // steps leave the logits as they are).
  if (keep_logits) st.logits = at::empty({N, V}, h.options());
  auto buf = keep_logits ? st.logits : at::empty({std::min(chunk, N), V}, h.options());
  const auto wt = w.t();
  for (int64_t s = 0; s < N; s += chunk) {
    const int64_t n = std::min(chunk, N - s);
    auto lg = keep_logits ? buf.narrow(0, s, n) : buf.narrow(0, 0, n);
    at::mm_out(lg, h.narrow(0, s, n), wt);
    const auto lc = labels.narrow(0, s, n);
    const auto lp = st.logprob.narrow(0, s, n), ent = st.entropy.narrow(0, s, n), lse = st.lse.narrow(0, s, n);
#ifdef PRISM_HAS_CUDA_KERNELS
    if (use_kernel)
      linear_logprobs_fwd_chunk_cuda(lg, lc, lp, ent, lse, o.ignore_index, scale);
    else
#endif
      fwd_step_aten(lg, lc, lp, ent, lse, o.ignore_index, scale);
  }
  return st;
}

struct Grads {
  at::Tensor dh, dw;
};

Grads chunked_backward(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                       const at::Tensor& lse, const at::Tensor& entropy, const at::Tensor& g_lp, const at::Tensor& g_h,
                       const LinearLogprobsOptions& o, bool use_kernel, bool need_dh, bool need_dw,
                       const at::Tensor& kept_logits) {
  const auto h = hidden.contiguous();
  const auto w = weight.contiguous();
  const int64_t N = h.size(0), D = h.size(1), V = w.size(0);
  const auto dt = h.scalar_type();
  const bool half = dt == at::kHalf || dt == at::kBFloat16;
  const double scale = 1.0 / (o.logits_scaling * o.temperature);
  Grads g;
  if (need_dh) g.dh = at::empty({N, D}, h.options());
  at::Tensor dw_acc;
  // Not zero-filled when a first chunk overwrites it (beta = 0).
  if (need_dw)
    dw_acc = N > 0 ? at::empty({V, D}, h.options().dtype(half ? at::kFloat : dt))
                   : at::zeros({V, D}, h.options().dtype(half ? at::kFloat : dt));
  const int64_t chunk = detail::linear_head_chunk_rows(o.chunk_tokens, N, V, static_cast<int64_t>(h.element_size()));
  auto buf = at::empty({std::min(chunk, N), V}, h.options());
  const auto wt = w.t();
  for (int64_t s = 0; s < N; s += chunk) {
    const int64_t n = std::min(chunk, N - s);
    const auto hc = h.narrow(0, s, n);
    auto lg = buf.narrow(0, 0, n);
    // The chunk step writes d(logits) into lg: from the kept logits (left intact, so a second
    // backward with retain_graph reads them again) or in place over the recomputed ones.
    const auto src = kept_logits.defined() ? kept_logits.narrow(0, s, n) : lg;
    if (!kept_logits.defined()) at::mm_out(lg, hc, wt);
    const auto lc = labels.narrow(0, s, n);
    const auto lse_c = lse.narrow(0, s, n), ent_c = entropy.narrow(0, s, n);
    const auto gl = g_lp.defined() ? g_lp.narrow(0, s, n) : at::Tensor();
    const auto gh = g_h.defined() ? g_h.narrow(0, s, n) : at::Tensor();
#ifdef PRISM_HAS_CUDA_KERNELS
    if (use_kernel) {
      if (kept_logits.defined()) lg.copy_(src);
      linear_logprobs_bwd_chunk_cuda(lg, lc, lse_c, ent_c, gl, gh, o.ignore_index, scale);
    } else
#endif
      bwd_step_aten(src, lg, lc, lse_c, ent_c, gl, gh, o.ignore_index, scale);
    if (need_dh) {
      auto out = g.dh.narrow(0, s, n);
      at::mm_out(out, lg, w);  // [n, V] @ [V, D]
    }
    if (need_dw) detail::accumulate_weight_grad(dw_acc, lg, hc, /*first=*/s == 0);
  }
  if (need_dw) g.dw = dw_acc.scalar_type() == dt ? dw_acc : dw_acc.to(dt);
  return g;
}

LinearLogprobsOptions options(int64_t ignore_index, double logits_scaling, double temperature, int64_t chunk_tokens) {
  LinearLogprobsOptions o;
  o.ignore_index = ignore_index;
  o.logits_scaling = logits_scaling;
  o.temperature = temperature;
  o.chunk_tokens = chunk_tokens;
  return o;
}

struct LinearLogprobsFn : torch::autograd::Function<LinearLogprobsFn> {
  // Returns {logprobs, entropy}, both differentiable w.r.t. hidden and weight.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                               const at::Tensor& labels, int64_t ignore_index, double logits_scaling,
                               double temperature, int64_t chunk_tokens, bool use_kernel, bool keep_logits) {
    // An output nobody differentiates arrives as an undefined gradient, not a zero tensor: the
    // entropy term (and its [chunk, V] work) is skipped unless a loss uses the entropy.
    ctx->set_materialize_grads(false);
    const auto o = options(ignore_index, logits_scaling, temperature, chunk_tokens);
    auto st = chunked_forward(hidden, weight, labels, o, use_kernel, keep_logits);
    // The saved entropy is a copy (N floats), so the caller may modify the returned one in place.
    ctx->save_for_backward({hidden, weight, labels, st.lse, st.entropy.clone(), st.logits});
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["logits_scaling"] = logits_scaling;
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["chunk_tokens"] = chunk_tokens;
    ctx->saved_data["use_kernel"] = use_kernel;
    return {st.logprob, st.entropy};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    // The gradient below is built from recomputed logits outside autograd: a graph of it would be
    // silently wrong, so a second derivative is refused rather than returned.
    PRISM_CHECK(!at::GradMode::is_enabled(),
                "linear_logprobs: double backward (create_graph=true) is not supported; its backward is first order");
    variable_list grads(9);  // one per forward argument; only hidden and weight are differentiable
    const auto saved = ctx->get_saved_variables();
    const auto& hidden = saved[0];
    const auto cdt = compute_dtype(hidden);
    auto prep = [&](const at::Tensor& g) { return g.defined() ? g.to(cdt).contiguous() : at::Tensor(); };
    const auto g_lp = prep(grad_out[0]), g_h = prep(grad_out[1]);
    const bool need_dh = ctx->needs_input_grad(0), need_dw = ctx->needs_input_grad(1);
    if ((!g_lp.defined() && !g_h.defined()) || (!need_dh && !need_dw)) return grads;
    const auto o = options(ctx->saved_data["ignore_index"].toInt(), ctx->saved_data["logits_scaling"].toDouble(),
                           ctx->saved_data["temperature"].toDouble(), ctx->saved_data["chunk_tokens"].toInt());
    auto g = chunked_backward(hidden, saved[1], saved[2], saved[3], saved[4], g_lp, g_h, o,
                              ctx->saved_data["use_kernel"].toBool(), need_dh, need_dw, saved[5]);
    grads[0] = g.dh;
    grads[1] = g.dw;
    return grads;
  }
};

}  // namespace

LinearLogprobsResult linear_logprobs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                     const LinearLogprobsOptions& opts, Impl impl) {
  if (impl == Impl::kReference) return linear_logprobs_ref(hidden, weight, labels, opts);
  check_linear_logprobs_args(hidden, weight, labels, opts);
  const bool use_kernel = linear_logprobs_uses_kernel(hidden, weight, impl);
  const auto l = labels.to(at::kLong).contiguous();
  const bool grad = at::GradMode::is_enabled() && (hidden.requires_grad() || weight.requires_grad());
  LinearLogprobsResult r;
  if (grad) {
    const int64_t logits_bytes = hidden.size(0) * weight.size(0) * static_cast<int64_t>(hidden.element_size());
    const bool keep = opts.keep_logits_bytes > 0 && logits_bytes <= opts.keep_logits_bytes;
    auto out = LinearLogprobsFn::apply(hidden, weight, l, opts.ignore_index, opts.logits_scaling, opts.temperature,
                                       opts.chunk_tokens, use_kernel, keep);
    r.logprobs = out[0];
    r.entropy = out[1];
  } else {
    auto st = chunked_forward(hidden, weight, l, opts, use_kernel);
    r.logprobs = st.logprob;
    r.entropy = st.entropy;
  }
  return r;
}

}  // namespace prism::ops
