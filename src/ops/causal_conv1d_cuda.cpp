// at::Tensor binding of kernels/causal_conv1d (compiled only with PRISM_HAS_CUDA_KERNELS): an
// autograd Function whose forward and backward are the CUDA kernels. causal_conv1d.cpp has
// checked every shape; this file only chooses layouts, converts the small parameter tensors
// (weight, bias, initial state: [C, K]-sized) to fp32, and launches on the current stream.
//
// Layout: the output (and dx) copies x's memory order. The mixer passes a transposed
// channel-last view ([B, L, C] in memory), so writing [B, L, C] keeps every access coalesced and
// the consumer's transpose back is free.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/custom_function.h>

#include "causal_conv1d/causal_conv1d_params.h"
#include "prism/core/error.h"
#include "prism/ops/causal_conv1d.h"

namespace prism::ops {
namespace {

namespace k = prism::kernels::ssm;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

prism::kernels::DType kernel_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return prism::kernels::DType::kFloat32;
    case at::kHalf: return prism::kernels::DType::kFloat16;
    case at::kBFloat16: return prism::kernels::DType::kBFloat16;
    default: throw Error(prism::str("causal_conv1d_cuda: unsupported dtype ", t.scalar_type(), " (fp32, fp16, bf16)"));
  }
}

/// An uninitialised [B, C, L] tensor in the memory order of x (channel-last if x is).
at::Tensor empty_like_layout(const at::Tensor& x) {
  const int64_t B = x.size(0), C = x.size(1), L = x.size(2);
  if (x.stride(1) == 1 && L > 1) return at::empty({B, L, C}, x.options()).transpose(1, 2);
  return at::empty({B, C, L}, x.options());
}

k::CausalConv1dFwdParams fwd_params(const at::Tensor& x, const at::Tensor& wf, const at::Tensor& bf,
                                    const at::Tensor& initf, const at::Tensor& cu, bool silu) {
  k::CausalConv1dFwdParams p;
  p.x = x.data_ptr();
  p.x_sb = x.stride(0);
  p.x_sc = x.stride(1);
  p.x_sl = x.stride(2);
  p.w = wf.data_ptr<float>();
  p.bias = bf.defined() ? bf.data_ptr<float>() : nullptr;
  p.init = initf.defined() ? initf.data_ptr<float>() : nullptr;
  p.cu_seqlens = cu.defined() ? cu.data_ptr<int64_t>() : nullptr;
  p.num_cu = cu.defined() ? static_cast<int>(cu.numel()) : 0;
  p.B = x.size(0);
  p.C = x.size(1);
  p.L = x.size(2);
  p.K = static_cast<int>(wf.size(1));
  p.silu = silu;
  p.dtype = kernel_dtype(x);
  return p;
}

void check_rc(int rc, const char* what) {
  PRISM_CHECK(rc == 0, "causal_conv1d_cuda: ", what, " kernel launch failed with cudaError ", rc);
}

struct CausalConv1dFn : torch::autograd::Function<CausalConv1dFn> {
  // inputs: x [B, C, L], weight [C, K] or [C, 1, K], bias [C] | undefined, initial_state
  // [B, C, K-1] | undefined, cu_seqlens (int64 on x's device) | undefined. outputs: out, final_state.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                               const at::Tensor& bias, const at::Tensor& init, const at::Tensor& cu, bool silu) {
    const int64_t C = x.size(1), K = weight.size(-1);
    auto wf = weight.reshape({C, K}).to(at::kFloat).contiguous();
    auto bf = bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor();
    auto initf = init.defined() ? init.to(x.device(), at::kFloat).contiguous() : at::Tensor();
    auto out = empty_like_layout(x);
    auto final_state = at::empty({x.size(0), C, K - 1}, x.options());
    auto p = fwd_params(x, wf, bf, initf, cu, silu);
    p.out = out.data_ptr();
    p.o_sb = out.stride(0);
    p.o_sc = out.stride(1);
    p.o_sl = out.stride(2);
    p.final_state = final_state.data_ptr();
    check_rc(k::causal_conv1d_fwd(p, c10::cuda::getCurrentCUDAStream(x.device().index()).stream()), "forward");
    ctx->save_for_backward({x, weight, bias, init, cu});
    ctx->saved_data["silu"] = silu;
    ctx->mark_non_differentiable({final_state});
    return {out, final_state};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &bias = saved[2], &init = saved[3], &cu = saved[4];
    const bool silu = ctx->saved_data["silu"].toBool();
    const int64_t B = x.size(0), C = x.size(1), L = x.size(2), K = weight.size(-1);
    at::Tensor dout = grad_out[0];
    if (!dout.defined()) dout = at::zeros_like(x);
    dout = dout.to(x.scalar_type());
    auto wf = weight.reshape({C, K}).to(at::kFloat).contiguous();
    auto bf = bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor();
    auto initf = init.defined() ? init.to(x.device(), at::kFloat).contiguous() : at::Tensor();
    const int64_t ntiles = k::conv_bwd_num_tiles(L);
    auto fopt = x.options().dtype(at::kFloat);
    auto dx = empty_like_layout(x);
    auto dw_part = at::empty({B * ntiles, C, K}, fopt);
    auto db_part = bias.defined() ? at::empty({B * ntiles, C}, fopt) : at::Tensor();
    auto dinit = init.defined() ? at::empty({B, C, K - 1}, fopt) : at::Tensor();
    k::CausalConv1dBwdParams q;
    q.f = fwd_params(x, wf, bf, initf, cu, silu);
    q.dout = dout.data_ptr();
    q.g_sb = dout.stride(0);
    q.g_sc = dout.stride(1);
    q.g_sl = dout.stride(2);
    q.dx = dx.data_ptr();
    q.dx_sb = dx.stride(0);
    q.dx_sc = dx.stride(1);
    q.dx_sl = dx.stride(2);
    q.dw_partial = dw_part.data_ptr<float>();
    q.db_partial = db_part.defined() ? db_part.data_ptr<float>() : nullptr;
    q.dinit = dinit.defined() ? dinit.data_ptr<float>() : nullptr;
    check_rc(k::causal_conv1d_bwd(q, c10::cuda::getCurrentCUDAStream(x.device().index()).stream()), "backward");
    auto dw = dw_part.sum(0).reshape(weight.sizes()).to(weight.scalar_type());
    auto db = bias.defined() ? db_part.sum(0).to(bias.scalar_type()) : at::Tensor();
    auto di = init.defined() ? dinit.to(init.scalar_type()) : at::Tensor();
    return {dx, dw, db, di, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool causal_conv1d_cuda_supports(const at::Tensor& x, const at::Tensor& weight) {
  const auto st = x.scalar_type();
  const int64_t K = weight.size(-1);
  return x.is_cuda() && (st == at::kFloat || st == at::kHalf || st == at::kBFloat16) && K >= 2 && K <= 4 &&
         x.size(2) > 0 && x.size(0) <= 65535 && x.size(2) / k::kConvFwdTile < 65535;
}

CausalConv1dResult causal_conv1d_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                      const CausalConv1dParams& p) {
  PRISM_CHECK(weight.is_cuda() && (!bias.defined() || bias.is_cuda()),
              "causal_conv1d_cuda: weight and bias must be on x's CUDA device ", x.device());
  at::Tensor cu;
  if (p.cu_seqlens.defined()) cu = p.cu_seqlens.to(x.device(), at::kLong).contiguous();
  auto r = CausalConv1dFn::apply(x, weight, bias, p.initial_state, cu, p.silu);
  return {r[0], r[1]};
}

}  // namespace prism::ops
