// silu(gate) * up (include/prism/ops/swiglu.h). On a CPU in training the composite writes silu(gate)
// as a full [tokens, I] tensor, keeps it for backward, and its backward makes three more full
// passes (d up = g * s, d s = g * up, silu_backward): a GRPO update's 4k x 1536 rows per layer go
// through memory ~11 times. The Function below walks blocks of rows that fit in cache: forward
// reads gate and up and writes the product; backward recomputes silu(gate) per block and writes
// d gate and d up. Same ATen kernels per element (silu, mul, silu_backward), so the same math.
#include "prism/ops/swiglu.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <numeric>

namespace prism::ops {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows per block: about 256 KiB of one [rows, I] operand, so a block's operands and temporaries
// stay in the core's L2; a multiple of 64 elements, so ATen's vectorised loops never fall back to
// their scalar tail inside the tensor (the product then has the composite's bits at one thread).
int64_t block_rows(int64_t I, int64_t elem) {
  const int64_t q = 64 / std::gcd<int64_t>(I, 64);
  const int64_t b = (int64_t{256} << 10) / std::max<int64_t>(1, I * elem);
  return std::max<int64_t>(q, b / q * q);
}

struct SwigluCpuFn : torch::autograd::Function<SwigluCpuFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    const int64_t I = gate.size(-1), N = gate.numel() / I;
    const auto g = gate.view({N, I}), u = up.view({N, I});
    auto out = at::empty_like(gate);
    auto o = out.view({N, I});
    const int64_t blk = block_rows(I, gate.element_size());
    auto s = at::empty({std::min(blk, N), I}, gate.options());
    for (int64_t r = 0; r < N; r += blk) {
      const int64_t b = std::min(blk, N - r);
      auto sb = s.narrow(0, 0, b), ob = o.narrow(0, r, b);
      at::silu_out(sb, g.narrow(0, r, b));
      at::mul_out(ob, sb, u.narrow(0, r, b));
    }
    ctx->save_for_backward({gate, up});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &gate = saved[0], &up = saved[1];
    variable_list grads(2);
    const bool need_g = ctx->needs_input_grad(0), need_u = ctx->needs_input_grad(1);
    if (!grad_out[0].defined() || (!need_g && !need_u)) return grads;
    const int64_t I = gate.size(-1), N = gate.numel() / I;
    const auto dh = grad_out[0].contiguous().view({N, I});
    const auto g = gate.view({N, I}), u = up.view({N, I});
    at::Tensor dg = need_g ? at::empty_like(gate) : at::Tensor(), du = need_u ? at::empty_like(up) : at::Tensor();
    const int64_t blk = block_rows(I, gate.element_size());
    auto s = at::empty({std::min(blk, N), I}, gate.options());
    for (int64_t r = 0; r < N; r += blk) {
      const int64_t b = std::min(blk, N - r);
      const auto gb = g.narrow(0, r, b), dhb = dh.narrow(0, r, b);
      auto sb = s.narrow(0, 0, b);
      if (need_u) {
        auto dub = du.view({N, I}).narrow(0, r, b);
        at::silu_out(sb, gb);
        at::mul_out(dub, dhb, sb);
      }
      if (need_g) {
        auto dgb = dg.view({N, I}).narrow(0, r, b);
        at::mul_out(sb, dhb, u.narrow(0, r, b));  // d silu(gate)
        at::silu_backward_out(dgb, sb, gb);
      }
    }
    grads[0] = dg;
    grads[1] = du;
    return grads;
  }
};

}  // namespace

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) {
  const auto dt = gate.scalar_type();
  const bool cpu_training = gate.device().is_cpu() && up.device().is_cpu() && (dt == at::kFloat || dt == at::kDouble) &&
                            up.scalar_type() == dt && gate.sizes() == up.sizes() && gate.dim() >= 1 &&
                            gate.numel() > 0 && gate.is_contiguous() && up.is_contiguous() &&
                            at::GradMode::is_enabled() && (gate.requires_grad() || up.requires_grad());
  if (cpu_training) return SwigluCpuFn::apply(gate, up);
  return at::silu(gate) * up;
}

}  // namespace prism::ops
