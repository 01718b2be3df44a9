// at::Tensor binding of kernels/attention (compiled only when PRISM_HAS_CUDA_KERNELS): which calls
// the kernels cover, argument checks with messages that name the failed condition, layout
// normalisation (unit stride on d, 16-byte aligned rows; anything else is copied once),
// workspaces, the split policies, and the autograd Function that pairs the forward kernel with the
// backward kernel (saving q, k, v, out and the logsumexp).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <limits>
#include <string>

#include "attention/attention_params.h"
#include "prism/core/error.h"
#include "prism/ops/attention.h"

namespace prism::ops {
namespace {

namespace ka = prism::kernels::attn;

constexpr int64_t kIntMax = std::numeric_limits<int>::max();

// Checks shared by every kernel; returns why the kernels do not apply ("" = they do).
std::string check_common(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p) {
  if (!q.defined() || !k.defined() || !v.defined()) return "q, k and v must be defined";
  if (!q.is_cuda() || !k.is_cuda() || !v.is_cuda()) return "q, k and v must be CUDA tensors";
  if (k.device() != q.device() || v.device() != q.device()) return "q, k and v must be on one device";
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    return prism::str("q, k, v must be [B, H, L, d], got q ", q.sizes(), " k ", k.sizes(), " v ", v.sizes());
  if (k.sizes() != v.sizes()) return prism::str("k ", k.sizes(), " and v ", v.sizes(), " shapes differ");
  if (q.size(0) != k.size(0) || q.size(3) != k.size(3))
    return prism::str("q ", q.sizes(), " incompatible with k ", k.sizes(), " (batch and head dim must match)");
  if (k.size(1) == 0 || q.size(1) % k.size(1) != 0)
    return prism::str("query heads (", q.size(1), ") must be a multiple of kv heads (", k.size(1), ")");
  const auto dt = q.scalar_type();
  if (dt != at::kBFloat16 && dt != at::kHalf) return prism::str("dtype ", dt, " (the kernels take bf16 and fp16)");
  if (k.scalar_type() != dt || v.scalar_type() != dt)
    return prism::str("q, k, v dtypes differ: ", dt, ", ", k.scalar_type(), ", ", v.scalar_type());
  const int64_t B = q.size(0), Hq = q.size(1), Lq = q.size(2), Lk = k.size(2);
  if (B < 1 || Lq < 1 || Lk < 1) return "empty batch or sequence";
  if (B > 65535 || Hq > 65535 || Lq > kIntMax || Lk > kIntMax) return "sizes beyond the kernels' grid limits";
  if (p.q_offset < 0 || p.q_offset > kIntMax) return prism::str("q_offset ", p.q_offset, " out of range");
  if (p.window < 0 || p.window > kIntMax) return prism::str("window ", p.window, " out of range");
  // Every query row must see a key: the kernels output 0 for an empty row where the reference
  // averages all keys (transformers' finfo.min fill), so such calls stay on the reference.
  if (p.window > 0 && p.q_offset + Lq - Lk >= p.window) return "some query rows see no key (window past the keys)";
  if (p.cu_seqlens.defined()) {
    if (B != 1 || Lq != Lk || p.q_offset != 0) return "cu_seqlens (packed documents) needs B == 1, Lq == Lk and q_offset == 0";
    if (p.cu_seqlens.dim() != 1 || p.cu_seqlens.size(0) < 2 || p.cu_seqlens.size(0) - 1 > kIntMax)
      return prism::str("cu_seqlens must be [num_docs + 1], got ", p.cu_seqlens.sizes());
    if (!at::isIntegralType(p.cu_seqlens.scalar_type(), /*includeBool=*/false)) return "cu_seqlens must be an integer tensor";
  }
  return "";
}

std::string check_flash(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p,
                        bool needs_grad) {
  auto why = check_common(q, k, v, p);
  if (!why.empty()) return why;
  const int d = static_cast<int>(q.size(3));
  if (!ka::flash_fwd_supports_head_dim(d)) return prism::str("head dim ", d, " (forward kernels: 64, 128, 256)");
  if (needs_grad && !ka::flash_bwd_supports_head_dim(d)) return prism::str("head dim ", d, " with a gradient (backward kernels: 64, 128)");
  if (p.key_mask.defined()) return "key_mask (padding) is handled only by the decode kernel (no gradient, few query rows)";
  return "";
}

std::string check_decode(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p) {
  auto why = check_common(q, k, v, p);
  if (!why.empty()) return why;
  const int d = static_cast<int>(q.size(3));
  if (!ka::flash_decode_supports_head_dim(d)) return prism::str("head dim ", d, " (decode kernel: 64, 128)");
  if (p.cu_seqlens.defined()) return "cu_seqlens with the decode kernel";
  if ((q.size(1) / k.size(1)) * q.size(2) > ka::kFlashDecodeMaxRows)
    return prism::str("(Hq/Hkv) * Lq = ", (q.size(1) / k.size(1)) * q.size(2), " > ", ka::kFlashDecodeMaxRows,
                      " rows (decode kernel)");
  if (p.key_mask.defined() &&
      (p.key_mask.dim() != 2 || p.key_mask.size(0) != q.size(0) || p.key_mask.size(1) != k.size(2)))
    return prism::str("key_mask must be [B, Lk] = [", q.size(0), ", ", k.size(2), "], got ", p.key_mask.sizes());
  return "";
}

bool needs_grad(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
}

// The layout the kernels read: unit stride on d, other strides multiples of 8 elements (16-byte
// rows), 16-byte aligned base. The model's [B, L, H, d] -> [B, H, L, d] views and KV-cache
// slices already qualify; anything else is copied once.
at::Tensor kernel_layout(const at::Tensor& t) {
  bool ok = t.stride(3) == 1 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
  for (int i = 0; i < 3 && ok; ++i) ok = t.size(i) == 1 || t.stride(i) % 8 == 0;
  return ok ? t : t.clone(at::MemoryFormat::Contiguous);
}

prism::kernels::DType kernel_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 ? prism::kernels::DType::kBFloat16 : prism::kernels::DType::kFloat16;
}

template <class P>
void set_sizes(P& kp, const at::Tensor& q, const at::Tensor& k, const AttentionParams& p, const at::Tensor& cu32) {
  kp.batch = static_cast<int>(q.size(0));
  kp.heads_q = static_cast<int>(q.size(1));
  kp.heads_kv = static_cast<int>(k.size(1));
  kp.len_q = static_cast<int>(q.size(2));
  kp.len_k = static_cast<int>(k.size(2));
  kp.head_dim = static_cast<int>(q.size(3));
  kp.scale = static_cast<float>(p.scale);
  kp.dtype = kernel_dtype(q);
  kp.mask.causal = p.causal ? 1 : 0;
  kp.mask.window = static_cast<int>(p.window);
  kp.mask.q_offset = p.q_offset;
  if (cu32.defined()) {
    kp.mask.cu_seqlens = cu32.data_ptr<int>();
    kp.mask.num_docs = static_cast<int>(cu32.size(0) - 1);
  }
}

#define PRISM_SET_STRIDES(kp, prefix, t) \
  do {                                   \
    (kp).prefix##_stride_b = (t).stride(0); \
    (kp).prefix##_stride_h = (t).stride(1); \
    (kp).prefix##_stride_l = (t).stride(2); \
  } while (0)

void check_launch(int rc, const char* fn) {
  PRISM_CHECK(rc == 0, fn, ": kernel launch failed: ", cudaGetErrorString(static_cast<cudaError_t>(rc)), " (cudaError ",
              rc, ")");
}

at::Tensor cu_seqlens_int32(const AttentionParams& p, const at::Device& device) {
  if (!p.cu_seqlens.defined()) return {};
  // int32 on the device without a host sync; contents are trusted (the model validates them on the
  // host). A malformed cu_seqlens gives wrong masks but never out-of-bounds accesses.
  return p.cu_seqlens.to(device, at::kInt).contiguous();
}

int sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

AttentionParams params_from(double scale, bool causal, int64_t window, int64_t q_offset, const at::Tensor& cu) {
  AttentionParams p;
  p.scale = scale;
  p.causal = causal;
  p.window = window;
  p.q_offset = q_offset;
  p.cu_seqlens = cu;
  return p;
}

// Forward kernel + saved state; backward kernel. Only tensors pass through apply() as inputs.
struct FlashAttentionFunction : public torch::autograd::Function<FlashAttentionFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, double scale, bool causal, int64_t window, int64_t q_offset,
                            const at::Tensor& cu_seqlens) {
    auto r = attention_fused_forward(q, k, v, params_from(scale, causal, window, q_offset, cu_seqlens));
    ctx->save_for_backward({q, k, v, r.out, r.lse});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["window"] = window;
    ctx->saved_data["q_offset"] = q_offset;
    ctx->saved_data["cu_seqlens"] = cu_seqlens;
    return r.out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                  torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto p = params_from(ctx->saved_data["scale"].toDouble(), ctx->saved_data["causal"].toBool(),
                               ctx->saved_data["window"].toInt(), ctx->saved_data["q_offset"].toInt(),
                               ctx->saved_data["cu_seqlens"].toTensor());
    auto g = attention_fused_backward(grads[0], s[0], s[1], s[2], s[3], s[4], p);
    return {g.dq, g.dk, g.dv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool attention_fused_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p) {
  if (!q.defined() || !q.is_cuda()) return false;
  const bool grad = needs_grad(q, k, v);
  if (!grad && check_decode(q, k, v, p).empty()) return true;
  return check_flash(q, k, v, p, grad).empty();
}

at::Tensor attention_fused(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p) {
  const bool grad = needs_grad(q, k, v);
  if (!grad && check_decode(q, k, v, p).empty()) return attention_fused_decode(q, k, v, p);
  const auto why = check_flash(q, k, v, p, grad);
  PRISM_CHECK(why.empty(), "attention_fused: the fused kernels do not cover this call: ", why);
  if (!grad) return attention_fused_forward(q, k, v, p).out;
  return FlashAttentionFunction::apply(q, k, v, p.scale, p.causal, p.window, p.q_offset, p.cu_seqlens);
}

AttentionFusedOutput attention_fused_forward(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                             const AttentionParams& p) {
  const auto why = check_flash(q_in, k_in, v_in, p, /*needs_grad=*/false);
  PRISM_CHECK(why.empty(), "attention_fused_forward: ", why);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const auto q = kernel_layout(q_in), k = kernel_layout(k_in), v = kernel_layout(v_in);
  const int64_t B = q.size(0), Hq = q.size(1), Lq = q.size(2), D = q.size(3);
  // [B, Lq, Hq, d] memory seen as [B, Hq, Lq, d]: the model's transpose(1, 2).reshape is then free.
  auto out = at::empty({B, Lq, Hq, D}, q.options()).transpose(1, 2);
  auto lse = at::empty({B, Hq, Lq}, q.options().dtype(at::kFloat));
  const auto cu32 = cu_seqlens_int32(p, q.device());

  ka::FlashFwdParams kp;
  kp.q = q.data_ptr();
  kp.k = k.data_ptr();
  kp.v = v.data_ptr();
  kp.out = out.data_ptr();
  kp.lse = lse.data_ptr<float>();
  PRISM_SET_STRIDES(kp, q, q);
  PRISM_SET_STRIDES(kp, k, k);
  PRISM_SET_STRIDES(kp, v, v);
  PRISM_SET_STRIDES(kp, o, out);
  set_sizes(kp, q, k, p, cu32);
  check_launch(ka::flash_fwd(kp, c10::cuda::getCurrentCUDAStream(q.device().index()).stream()),
               "attention_fused_forward");
  return {out, lse};
}

AttentionFusedGrads attention_fused_backward(const at::Tensor& dout_in, const at::Tensor& q_in, const at::Tensor& k_in,
                                             const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& lse_in,
                                             const AttentionParams& p) {
  const auto why = check_flash(q_in, k_in, v_in, p, /*needs_grad=*/true);
  PRISM_CHECK(why.empty(), "attention_fused_backward: ", why);
  PRISM_CHECK(dout_in.defined() && out_in.defined() && lse_in.defined(),
              "attention_fused_backward: dout, out and lse must be defined");
  PRISM_CHECK(dout_in.sizes() == q_in.sizes() && out_in.sizes() == q_in.sizes(), "attention_fused_backward: dout ",
              dout_in.sizes(), " and out ", out_in.sizes(), " must have q's shape ", q_in.sizes());
  PRISM_CHECK(dout_in.device() == q_in.device() && out_in.device() == q_in.device() && lse_in.device() == q_in.device(),
              "attention_fused_backward: dout, out and lse must be on q's device");
  PRISM_CHECK(lse_in.scalar_type() == at::kFloat && lse_in.dim() == 3 && lse_in.size(0) == q_in.size(0) &&
                  lse_in.size(1) == q_in.size(1) && lse_in.size(2) == q_in.size(2),
              "attention_fused_backward: lse must be fp32 [B, Hq, Lq] (from attention_fused_forward), got ",
              lse_in.scalar_type(), " ", lse_in.sizes());
  const c10::cuda::CUDAGuard guard(q_in.device());
  const auto dt = q_in.scalar_type();
  const auto q = kernel_layout(q_in), k = kernel_layout(k_in), v = kernel_layout(v_in);
  const auto out = kernel_layout(out_in.to(dt)), dout = kernel_layout(dout_in.to(dt));
  const auto lse = lse_in.contiguous();
  const int64_t B = q.size(0), Hq = q.size(1), Lq = q.size(2), D = q.size(3), Hkv = k.size(1), Lk = k.size(2);
  const auto f32 = q.options().dtype(at::kFloat);
  auto softmax_d = at::empty({B, Hq, Lq}, f32);
  auto dq_accum = at::zeros({B, Hq, Lq, D}, f32);
  const auto cu32 = cu_seqlens_int32(p, q.device());

  // Split a GQA group's query heads over blocks only when the grid would not fill the GPU.
  const int64_t group = Hq / Hkv;
  const int64_t base_blocks = (Lk + ka::kFlashBwdBlockKeys - 1) / ka::kFlashBwdBlockKeys * Hkv * B;
  int64_t splits = 1;
  const int64_t target = 2 * static_cast<int64_t>(sm_count());
  while (base_blocks * splits < target && splits < group) {
    int64_t next = splits + 1;
    while (group % next != 0) ++next;
    if (B * next > 65535) break;
    splits = next;
  }

  ka::FlashBwdParams kp;
  at::Tensor dk, dv, partial;
  if (splits == 1) {
    dk = at::empty({B, Hkv, Lk, D}, k.options());
    dv = at::empty({B, Hkv, Lk, D}, k.options());
    kp.dk = dk.data_ptr();
    kp.dv = dv.data_ptr();
    PRISM_SET_STRIDES(kp, dk, dk);
    PRISM_SET_STRIDES(kp, dv, dv);
  } else {
    partial = at::empty({splits, 2, B, Hkv, Lk, D}, f32);
    kp.dkv_partial = partial.data_ptr<float>();
  }
  kp.num_splits = static_cast<int>(splits);
  kp.q = q.data_ptr();
  kp.k = k.data_ptr();
  kp.v = v.data_ptr();
  kp.out = out.data_ptr();
  kp.dout = dout.data_ptr();
  kp.lse = lse.data_ptr<float>();
  kp.softmax_d = softmax_d.data_ptr<float>();
  kp.dq_accum = dq_accum.data_ptr<float>();
  PRISM_SET_STRIDES(kp, q, q);
  PRISM_SET_STRIDES(kp, k, k);
  PRISM_SET_STRIDES(kp, v, v);
  PRISM_SET_STRIDES(kp, o, out);
  PRISM_SET_STRIDES(kp, do, dout);
  set_sizes(kp, q, k, p, cu32);
  check_launch(ka::flash_bwd(kp, c10::cuda::getCurrentCUDAStream(q.device().index()).stream()),
               "attention_fused_backward");
  if (splits > 1) {
    auto sums = partial.sum(0);  // [2, B, Hkv, Lk, D]
    dk = sums[0].to(dt);
    dv = sums[1].to(dt);
  }
  return {dq_accum.to(dt), dk, dv};
}

at::Tensor attention_fused_decode(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                  const AttentionParams& p) {
  const auto why = check_decode(q_in, k_in, v_in, p);
  PRISM_CHECK(why.empty(), "attention_fused_decode: ", why);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const auto q = kernel_layout(q_in), k = kernel_layout(k_in), v = kernel_layout(v_in);
  const int64_t B = q.size(0), Hq = q.size(1), Lq = q.size(2), D = q.size(3), Hkv = k.size(1), Lk = k.size(2);
  auto out = at::empty({B, Lq, Hq, D}, q.options()).transpose(1, 2);
  at::Tensor key_mask;
  if (p.key_mask.defined()) key_mask = p.key_mask.to(q.device()).ne(0).to(at::kByte).contiguous();

  // Split the cache so that the grid fills the GPU, each split at least 4 tiles (256 keys).
  constexpr int64_t kTile = ka::kFlashDecodeTileKeys;
  const int64_t tiles = (Lk + kTile - 1) / kTile;
  const int64_t want = (2 * static_cast<int64_t>(sm_count()) + B * Hkv - 1) / (B * Hkv);
  int64_t splits = std::max<int64_t>(1, std::min<int64_t>({want, tiles / 4, 128}));
  const int64_t keys_per_split = (tiles + splits - 1) / splits * kTile;
  splits = (Lk + keys_per_split - 1) / keys_per_split;
  PRISM_CHECK(splits <= 65535 && keys_per_split <= kIntMax, "attention_fused_decode: cache too long");

  ka::FlashDecodeParams kp;
  at::Tensor o_partial, lse_partial;
  if (splits > 1) {
    o_partial = at::empty({splits, B, Hq, Lq, D}, q.options().dtype(at::kFloat));
    lse_partial = at::empty({splits, B, Hq, Lq}, q.options().dtype(at::kFloat));
    kp.o_partial = o_partial.data_ptr<float>();
    kp.lse_partial = lse_partial.data_ptr<float>();
  }
  kp.num_splits = static_cast<int>(splits);
  kp.keys_per_split = static_cast<int>(keys_per_split);
  kp.q = q.data_ptr();
  kp.k = k.data_ptr();
  kp.v = v.data_ptr();
  kp.out = out.data_ptr();
  if (key_mask.defined()) {
    kp.key_mask = key_mask.data_ptr<uint8_t>();
    kp.key_mask_stride = key_mask.stride(0);
  }
  PRISM_SET_STRIDES(kp, q, q);
  PRISM_SET_STRIDES(kp, k, k);
  PRISM_SET_STRIDES(kp, v, v);
  PRISM_SET_STRIDES(kp, o, out);
  set_sizes(kp, q, k, p, at::Tensor());
  check_launch(ka::flash_decode(kp, c10::cuda::getCurrentCUDAStream(q.device().index()).stream()),
               "attention_fused_decode");
  return out;
}

}  // namespace prism::ops
