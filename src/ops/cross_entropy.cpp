// Chunked token cross-entropy (see the header). A custom autograd Function rather than ATen ops
// because ATen's autograd would keep every chunk's fp32 upcast (and log-softmax) alive until
// backward, which is exactly the [N, V] fp32 copy this op exists to avoid. Forward saves only the
// input logits (no copy), the labels and one logsumexp per token; backward re-upcasts chunk by
// chunk, turns the chunk into the gradient in place and casts it into the output gradient.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "prism/core/error.h"
#include "prism/ops/cross_entropy.h"

namespace prism::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// fp32 math for half/bf16/fp32 logits, fp64 for fp64 (so tests can hold it to 1e-12).
c10::ScalarType compute_dtype(const at::Tensor& logits) {
  return logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

struct ChunkedCrossEntropy : torch::autograd::Function<ChunkedCrossEntropy> {
  // Returns {loss_sum, z_loss_sum}. Runs with grad mode off (Function::apply guarantees it).
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& labels,
                               double z_loss_weight, int64_t ignore_index, int64_t chunk) {
    const int64_t N = logits.size(0);
    const auto cdt = compute_dtype(logits);
    auto lse = at::empty({N}, logits.options().dtype(cdt));
    auto loss = at::zeros({}, logits.options().dtype(cdt));
    auto zsum = at::zeros({}, logits.options().dtype(cdt));
    for (int64_t s = 0; s < N; s += chunk) {
      const int64_t n = std::min(chunk, N - s);
      auto x = logits.narrow(0, s, n).to(cdt);  // [n, V]: the only fp32 copy alive
      auto l = labels.narrow(0, s, n);
      auto keep = l.ne(ignore_index);
      auto lse_c = at::logsumexp(x, 1);
      lse.narrow(0, s, n).copy_(lse_c);
      auto picked = x.gather(1, l.masked_fill(keep.logical_not(), 0).unsqueeze(1)).squeeze(1);
      // where, not a multiply by the mask: an ignored row may hold anything, 0 * inf is NaN.
      loss.add_(at::where(keep, lse_c - picked, 0.0).sum());
      if (z_loss_weight != 0.0) zsum.add_(at::where(keep, lse_c.square(), 0.0).sum());
    }
    zsum.mul_(z_loss_weight);
    ctx->save_for_backward({logits, labels, lse});
    ctx->saved_data["z_loss_weight"] = z_loss_weight;
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["chunk"] = chunk;
    return {loss, zsum};
  }

  // d loss_sum / d x = keep * (softmax(x) - onehot(label));  d z_loss_sum / d x = keep * w * 2 lse * softmax(x).
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const auto& logits = saved[0];
    const auto& labels = saved[1];
    const auto& lse = saved[2];
    const double w = ctx->saved_data["z_loss_weight"].toDouble();
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const auto cdt = lse.scalar_type();
    // Scalars stay on the device (no host sync); undefined when only one of the two outputs is used.
    auto g_loss = grad_out[0].defined() ? grad_out[0].to(cdt) : at::zeros({}, lse.options());
    auto g_z = grad_out[1].defined() ? grad_out[1].to(cdt) : at::zeros({}, lse.options());
    auto grad = at::empty(logits.sizes(), logits.options().memory_format(at::MemoryFormat::Contiguous));
    const int64_t N = logits.size(0);
    for (int64_t s = 0; s < N; s += chunk) {
      const int64_t n = std::min(chunk, N - s);
      // copy=true: for fp32 logits .to() would alias them and the in-place ops below would clobber the input.
      auto p = logits.narrow(0, s, n).to(cdt, /*non_blocking=*/false, /*copy=*/true);
      auto lse_c = lse.narrow(0, s, n);
      auto l = labels.narrow(0, s, n);
      auto keep = l.ne(ignore_index);
      p.sub_(lse_c.unsqueeze(1)).exp_();  // softmax
      auto coef = at::where(keep, g_loss + lse_c * (2.0 * w) * g_z, 0.0);
      p.mul_(coef.unsqueeze(1));
      auto onehot = at::where(keep, -g_loss, 0.0).unsqueeze(1);  // [n, 1]
      p.scatter_add_(1, l.masked_fill(keep.logical_not(), 0).unsqueeze(1), onehot);
      grad.narrow(0, s, n).copy_(p);
    }
    return {grad, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

void check_cross_entropy_args(const at::Tensor& logits, const at::Tensor& labels, const CrossEntropyOptions& opts) {
  PRISM_CHECK(logits.dim() == 2, "cross_entropy: logits must be [N, V], got ", logits.sizes());
  PRISM_CHECK(at::isFloatingType(logits.scalar_type()), "cross_entropy: logits must be floating point, got ",
              logits.scalar_type());
  PRISM_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(0),
              "cross_entropy: labels must be [N] with N = ", logits.size(0), ", got ", labels.sizes());
  PRISM_CHECK(at::isIntegralType(labels.scalar_type(), /*includeBool=*/false),
              "cross_entropy: labels must be an integer tensor, got ", labels.scalar_type());
  PRISM_CHECK(labels.device() == logits.device(), "cross_entropy: labels on ", labels.device(), " but logits on ",
              logits.device());
  PRISM_CHECK(opts.chunk_tokens > 0, "cross_entropy: chunk_tokens must be > 0, got ", opts.chunk_tokens);
  // One host sync per call: an out-of-range label would otherwise be a device-side assert on CUDA
  // (fatal to the process) or silently read a wrong row.
  if (labels.numel() > 0) {
    const int64_t V = logits.size(1);
    auto bad = labels.ne(opts.ignore_index).logical_and(labels.lt(0).logical_or(labels.ge(V)));
    PRISM_CHECK(!bad.any().item<bool>(), "cross_entropy: labels must be in [0, ", V, ") or ignore_index (",
                opts.ignore_index, "); found ", labels.masked_select(bad).slice(0, 0, 5).cpu(), " ...");
  }
}

CrossEntropyResult cross_entropy(const at::Tensor& logits, const at::Tensor& labels, const CrossEntropyOptions& opts) {
  check_cross_entropy_args(logits, labels, opts);
  auto l = labels.to(at::kLong);
  auto out = ChunkedCrossEntropy::apply(logits, l, opts.z_loss_weight, opts.ignore_index, opts.chunk_tokens);
  CrossEntropyResult r;
  r.loss_sum = out[0];
  r.z_loss_sum = out[1];
  r.num_tokens = l.ne(opts.ignore_index).sum();
  return r;
}

}  // namespace prism::ops
