// RoPE on the CPU for training (fp32 / fp64, full rotary): a custom autograd Function that applies
// the rotation in one pass over q or k and its transpose in one pass over the gradient. The ATen
// composite of apply_rope (neg, cat, two multiplies, an add; in backward two narrow gradients that
// each zero-fill a full-size tensor) makes ~12 passes per call, twice per layer in a GRPO update.
// Same expression as apply_rope: y = x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1];
// backward dx = g * cos + rotate_half^T(g * sin), rotate_half^T(u) = [u2, -u1].
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "prism/ops/rotary.h"

namespace prism::ops {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// x, out: [B, H, L, d] with any strides but a unit last stride; cos, sin: [B, L, d] contiguous.
// transpose: the backward (rotate_half^T) instead of the forward.
template <typename T>
void rope_apply(const at::Tensor& x, const at::Tensor& out, const at::Tensor& cos, const at::Tensor& sin,
                bool transpose) {
  const int64_t B = x.size(0), H = x.size(1), L = x.size(2), d = x.size(3), half = d / 2;
  const auto xs = x.strides(), os = out.strides();
  const T* xp = x.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const T* cp = cos.data_ptr<T>();
  const T* sp = sin.data_ptr<T>();
  at::parallel_for(0, B * L, 32, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / L, l = r % L;
      const T* c = cp + r * d;
      const T* s = sp + r * d;
      for (int64_t h = 0; h < H; ++h) {
        const T* xi = xp + b * xs[0] + h * xs[1] + l * xs[2];
        T* yi = op + b * os[0] + h * os[1] + l * os[2];
        if (!transpose) {
          for (int64_t j = 0; j < half; ++j) yi[j] = xi[j] * c[j] + -xi[j + half] * s[j];
          for (int64_t j = half; j < d; ++j) yi[j] = xi[j] * c[j] + xi[j - half] * s[j];
        } else {
          for (int64_t j = 0; j < half; ++j) yi[j] = xi[j] * c[j] + xi[j + half] * s[j + half];
          for (int64_t j = half; j < d; ++j) yi[j] = xi[j] * c[j] - xi[j - half] * s[j - half];
        }
      }
    }
  });
}

at::Tensor rope_run(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool transpose) {
  auto in = x.stride(3) == 1 ? x : x.contiguous();
  auto out = at::empty_like(in);
  if (out.stride(3) != 1) out = at::empty(in.sizes(), in.options());
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "apply_rope_cpu",
                             [&] { rope_apply<scalar_t>(in, out, cos, sin, transpose); });
  return out;
}

struct RopeCpuFn : torch::autograd::Function<RopeCpuFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return rope_run(x, cos, sin, false);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    variable_list grads(3);
    if (grad_out[0].defined()) grads[0] = rope_run(grad_out[0], saved[0], saved[1], true);
    return grads;
  }
};

}  // namespace

bool apply_rope_cpu_supports(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const auto dt = x.scalar_type();
  return x.device().is_cpu() && x.dim() == 4 && (dt == at::kFloat || dt == at::kDouble) && cos.dim() == 3 &&
         cos.scalar_type() == dt && sin.scalar_type() == dt && cos.sizes() == sin.sizes() && cos.size(0) == x.size(0) &&
         cos.size(1) == x.size(2) && cos.size(2) == x.size(3) && x.size(3) % 2 == 0 && !cos.requires_grad() &&
         !sin.requires_grad() && at::GradMode::is_enabled() && x.requires_grad() && x.numel() > 0;
}

at::Tensor apply_rope_cpu(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return RopeCpuFn::apply(x, cos.contiguous(), sin.contiguous());
}

}  // namespace prism::ops
