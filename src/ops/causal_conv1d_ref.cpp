// Plain-ATen reference of the Mamba2 depthwise causal conv1d (architectures.md §2.3 step 2, §2.6).
//
// What it owns: out[c, t] = bias[c] + sum_j w[c, j] * xp[c, t + j] over the left-extended input
// xp = [initial_state or zeros (K-1) | x], with taps that reach before the token's document start
// (cu_seqlens) zeroed, so a packed forward equals separate forwards; optional SiLU; and the cache
// for the next call (the last K-1 inputs). Runs on any device, with autograd, fp64-capable.
//
// Why a loop over the K taps instead of `unfold` into [B, C, L, K] windows: the same vectorised
// math (each tap is one [B, C, L] multiply-add) without materialising K copies of the activation;
// K is 4 for every target model.
//
// dtype: accumulation is fp32 (fp64 for fp64 x), the sum + bias is rounded once to x's dtype, then
// SiLU runs on that rounded tensor in x's dtype. This is HF torch_forward's
// `act(conv1d(xBC.transpose(1, 2))[..., :L])` with a bf16 model: ATen's bf16 conv1d accumulates in
// fp32 and rounds its output (bias fused) once — bit-identical on CPU, see the test — and nn.SiLU on
// a bf16 tensor computes in fp32 and rounds again. (On CUDA, ATen backends that add the bias after
// the convolution round twice; not verified here.) The causal-conv1d CUDA kernel (HF's kernel path)
// instead applies SiLU in fp32 before its single rounding: up to one bf16 ulp apart.
#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "prism/core/error.h"
#include "prism/ops/causal_conv1d.h"

namespace prism::ops {

CausalConv1dResult causal_conv1d_ref(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                     const CausalConv1dParams& p) {
  const auto cd = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;  // accumulation dtype
  const int64_t Bsz = x.size(0), C = x.size(1), L = x.size(2);
  auto w = (weight.dim() == 3 ? weight.squeeze(1) : weight).to(cd);  // [C, K]
  const int64_t K = w.size(1);

  auto left = p.initial_state.defined() ? p.initial_state.to(x.device(), cd)
                                        : at::zeros({Bsz, C, K - 1}, x.options().dtype(cd));  // [B, C, K-1]
  auto xp = at::cat({left, x.to(cd)}, -1);  // [B, C, K-1+L]; xp[t + K-1] = x[t]

  // Document start of every position, from cu_seqlens (B == 1): tap j of token t reads position
  // t-(K-1)+j and is dropped when that lies before the token's document start (> 0). The first
  // document keeps its left context (initial_state / zeros), as a separate call would.
  std::vector<int64_t> doc_start;  // [L], empty = one document
  if (p.cu_seqlens.defined()) {
    auto cu = p.cu_seqlens.to(at::kCPU, at::kLong).contiguous();
    const int64_t* c = cu.data_ptr<int64_t>();
    doc_start.assign(L, 0);
    for (int64_t i = 0; i + 1 < cu.numel(); ++i)
      for (int64_t t = std::max<int64_t>(c[i], 0); t < std::min(c[i + 1], L); ++t) doc_start[t] = c[i];
  }
  at::Tensor start_t;  // [L] int64 on x's device
  if (!doc_start.empty()) start_t = at::tensor(doc_start, at::kLong).to(x.device());
  auto pos = at::arange(L, x.options().dtype(at::kLong));  // [L]

  at::Tensor acc;  // [B, C, L] in cd
  for (int64_t j = 0; j < K; ++j) {
    auto tap = xp.narrow(-1, j, L) * w.select(1, j).reshape({1, C, 1});  // [B, C, L]
    if (start_t.defined()) {
      auto dropped = (pos - (K - 1 - j) < start_t) & (start_t > 0);  // [L]
      tap = tap.masked_fill(dropped.reshape({1, 1, L}), 0);
    }
    acc = acc.defined() ? acc + tap : tap;
  }
  if (!acc.defined()) acc = at::zeros({Bsz, C, L}, x.options().dtype(cd));  // K == 0 cannot pass the checks
  if (bias.defined()) acc = acc + bias.to(cd).reshape({1, C, 1});
  auto out = acc.to(x.scalar_type());  // the conv's single rounding
  if (p.silu) out = at::silu(out);

  // Cache for the next step: the last K-1 inputs of xp. Inputs before the last document's start
  // belong to another document and are zeroed, so the state equals the last document's own.
  auto final_state = xp.narrow(-1, L, K - 1);  // [B, C, K-1]
  if (!doc_start.empty() && L > 0 && doc_start[L - 1] > 0) {
    auto src = at::arange(L, L + K - 1, x.options().dtype(at::kLong)) - (K - 1);  // x index of each slot
    final_state = final_state.masked_fill((src < doc_start[L - 1]).reshape({1, 1, K - 1}), 0);
  }
  return {out, final_state.to(x.scalar_type())};
}

}  // namespace prism::ops
