// Shared by the attention kernel tests: the CPU emulation (test_attention_emu.cpp) and the GPU
// test (test_attention_cuda.cpp) run the very same cases through the very same parameter filling,
// differing only in the Backend that launches the kernels. Outputs and workspaces are NaN-filled
// before every run, inputs are fresh random values in the model's [B, L, H, d] -> [B, H, L, d]
// layout, and the oracle is the float64 ATen reference; the error budget is 2x the error of the
// same ATen reference run in the kernels' precision.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "../../kernels/attention/attention_params.h"
#include "prism/ops/attention.h"
#include "util/test_util.h"

namespace prism::test::attn {

namespace ka = prism::kernels::attn;
using prism::ops::AttentionParams;

struct Case {
  std::string name;
  int64_t B, Hq, Hkv, Lq, Lk, D;
  bool causal;
  int64_t window, q_offset;
  std::vector<int64_t> cu;  // packed documents (B == 1, Lq == Lk)
  at::ScalarType dtype = at::kBFloat16;
  int num_splits = 1;  // backward: GQA head splits; decode: KV splits
  bool key_mask = false;  // decode only: left padding and holes
};

inline std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

inline AttentionParams params_of(const Case& c, const at::Device& device) {
  AttentionParams p;
  p.scale = 1.0 / std::sqrt(static_cast<double>(c.D)) * 1.1;  // not the default: the override is honoured
  p.causal = c.causal;
  p.window = c.window;
  p.q_offset = c.q_offset;
  if (!c.cu.empty()) p.cu_seqlens = at::tensor(c.cu, at::kLong).to(device);
  if (c.key_mask) {
    auto km = at::ones({c.B, c.Lk}, at::kLong);
    km[0].narrow(0, 0, std::min<int64_t>(7, c.Lk - 1)).zero_();  // left padding of sequence 0
    if (c.B > 1 && c.Lk > 50) km[1].narrow(0, 40, 3).zero_();   // holes in sequence 1
    p.key_mask = km.to(device);
  }
  return p;
}

/// [B, H, L, d] view of fresh [B, L, H, d] storage (the model's projection layout).
inline at::Tensor bhld(const Case& c, int64_t H, int64_t L, const at::Device& device) {
  return at::randn({c.B, L, H, c.D}, at::TensorOptions().dtype(at::kDouble).device(device)).to(c.dtype).transpose(1, 2);
}

/// How the kernels are launched: the CPU emulation or the GPU.
struct Backend {
  virtual ~Backend() = default;
  /// Called with every tensor a launch may touch (the emulation bounds-checks against them).
  virtual void prepare(const std::vector<at::Tensor>&) {}
  virtual int fwd(const ka::FlashFwdParams& p) = 0;
  virtual int bwd(const ka::FlashBwdParams& p) = 0;
  virtual int decode(const ka::FlashDecodeParams& p) = 0;
};

template <class P>
void fill_common(P& kp, const Case& c, const AttentionParams& p, const at::Tensor& cu32) {
  kp.batch = static_cast<int>(c.B);
  kp.heads_q = static_cast<int>(c.Hq);
  kp.heads_kv = static_cast<int>(c.Hkv);
  kp.len_q = static_cast<int>(c.Lq);
  kp.len_k = static_cast<int>(c.Lk);
  kp.head_dim = static_cast<int>(c.D);
  kp.scale = static_cast<float>(p.scale);
  kp.dtype = c.dtype == at::kBFloat16 ? prism::kernels::DType::kBFloat16 : prism::kernels::DType::kFloat16;
  kp.mask.causal = c.causal;
  kp.mask.window = static_cast<int>(c.window);
  kp.mask.q_offset = c.q_offset;
  if (cu32.defined()) {
    kp.mask.cu_seqlens = cu32.data_ptr<int>();
    kp.mask.num_docs = static_cast<int>(cu32.size(0) - 1);
  }
}

#define PRISM_TEST_STRIDES(kp, prefix, t) \
  do {                                    \
    (kp).prefix##_stride_b = (t).stride(0); \
    (kp).prefix##_stride_h = (t).stride(1); \
    (kp).prefix##_stride_l = (t).stride(2); \
  } while (0)

inline at::Tensor nan_filled(at::IntArrayRef sizes, const at::TensorOptions& o) {
  return at::full(sizes, std::numeric_limits<double>::quiet_NaN(), o);
}

struct FwdResult {
  at::Tensor out, lse;
};

inline FwdResult run_forward(Backend& be, const Case& c, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const AttentionParams& p) {
  auto out = nan_filled({c.B, c.Lq, c.Hq, c.D}, q.options()).transpose(1, 2);
  auto lse = nan_filled({c.B, c.Hq, c.Lq}, q.options().dtype(at::kFloat));
  auto cu32 = p.cu_seqlens.defined() ? p.cu_seqlens.to(at::kInt).contiguous() : at::Tensor();
  be.prepare({q, k, v, out, lse, cu32});
  ka::FlashFwdParams kp;
  kp.q = q.data_ptr();
  kp.k = k.data_ptr();
  kp.v = v.data_ptr();
  kp.out = out.data_ptr();
  kp.lse = lse.data_ptr<float>();
  PRISM_TEST_STRIDES(kp, q, q);
  PRISM_TEST_STRIDES(kp, k, k);
  PRISM_TEST_STRIDES(kp, v, v);
  PRISM_TEST_STRIDES(kp, o, out);
  fill_common(kp, c, p, cu32);
  EXPECT_EQ(be.fwd(kp), 0) << c.name << ": forward launch";
  return {out, lse};
}

struct Grads {
  at::Tensor dq, dk, dv;
};

inline Grads run_backward(Backend& be, const Case& c, const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                          const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse, const AttentionParams& p) {
  const auto f32 = q.options().dtype(at::kFloat);
  auto cu32 = p.cu_seqlens.defined() ? p.cu_seqlens.to(at::kInt).contiguous() : at::Tensor();
  auto softmax_d = nan_filled({c.B, c.Hq, c.Lq}, f32);
  auto dq_accum = at::zeros({c.B, c.Hq, c.Lq, c.D}, f32);
  at::Tensor dk, dv, partial;
  ka::FlashBwdParams kp;
  if (c.num_splits == 1) {
    dk = nan_filled({c.B, c.Hkv, c.Lk, c.D}, q.options());
    dv = nan_filled({c.B, c.Hkv, c.Lk, c.D}, q.options());
    kp.dk = dk.data_ptr();
    kp.dv = dv.data_ptr();
    PRISM_TEST_STRIDES(kp, dk, dk);
    PRISM_TEST_STRIDES(kp, dv, dv);
  } else {
    partial = nan_filled({c.num_splits, 2, c.B, c.Hkv, c.Lk, c.D}, f32);
    kp.dkv_partial = partial.data_ptr<float>();
  }
  be.prepare({q, k, v, out, dout, lse, softmax_d, dq_accum, dk, dv, partial, cu32});
  kp.num_splits = c.num_splits;
  kp.q = q.data_ptr();
  kp.k = k.data_ptr();
  kp.v = v.data_ptr();
  kp.out = out.data_ptr();
  kp.dout = dout.data_ptr();
  kp.lse = lse.data_ptr<float>();
  kp.softmax_d = softmax_d.data_ptr<float>();
  kp.dq_accum = dq_accum.data_ptr<float>();
  PRISM_TEST_STRIDES(kp, q, q);
  PRISM_TEST_STRIDES(kp, k, k);
  PRISM_TEST_STRIDES(kp, v, v);
  PRISM_TEST_STRIDES(kp, o, out);
  PRISM_TEST_STRIDES(kp, do, dout);
  fill_common(kp, c, p, cu32);
  EXPECT_EQ(be.bwd(kp), 0) << c.name << ": backward launch";
  if (c.num_splits > 1) {
    auto s = partial.sum(0);
    dk = s[0].to(c.dtype);
    dv = s[1].to(c.dtype);
  }
  return {dq_accum.to(c.dtype), dk, dv};
}

inline at::Tensor run_decode(Backend& be, const Case& c, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const AttentionParams& p) {
  auto out = nan_filled({c.B, c.Lq, c.Hq, c.D}, q.options()).transpose(1, 2);
  const int64_t tile = ka::kFlashDecodeTileKeys;
  const int64_t tiles = (c.Lk + tile - 1) / tile;
  const int64_t kps = (tiles + c.num_splits - 1) / c.num_splits * tile;
  const int64_t splits = (c.Lk + kps - 1) / kps;
  const auto f32 = q.options().dtype(at::kFloat);
  auto o_part = nan_filled({splits, c.B, c.Hq, c.Lq, c.D}, f32);
  auto l_part = nan_filled({splits, c.B, c.Hq, c.Lq}, f32);
  auto km = p.key_mask.defined() ? p.key_mask.ne(0).to(at::kByte).contiguous() : at::Tensor();
  be.prepare({q, k, v, out, o_part, l_part, km});
  ka::FlashDecodeParams kp;
  kp.q = q.data_ptr();
  kp.k = k.data_ptr();
  kp.v = v.data_ptr();
  kp.out = out.data_ptr();
  if (km.defined()) {
    kp.key_mask = km.data_ptr<uint8_t>();
    kp.key_mask_stride = km.stride(0);
  }
  kp.o_partial = o_part.data_ptr<float>();
  kp.lse_partial = l_part.data_ptr<float>();
  kp.num_splits = static_cast<int>(splits);
  kp.keys_per_split = static_cast<int>(kps);
  PRISM_TEST_STRIDES(kp, q, q);
  PRISM_TEST_STRIDES(kp, k, k);
  PRISM_TEST_STRIDES(kp, v, v);
  PRISM_TEST_STRIDES(kp, o, out);
  fill_common(kp, c, p, at::Tensor());
  EXPECT_EQ(be.decode(kp), 0) << c.name << ": decode launch";
  return out;
}

inline at::Tensor repeat_heads(const at::Tensor& x, int64_t n) {
  if (n == 1) return x;
  return x.unsqueeze(2).expand({x.size(0), x.size(1), n, x.size(2), x.size(3)}).reshape({x.size(0), -1, x.size(2), x.size(3)});
}

/// fp64 logsumexp of the visible scaled scores of every query row.
inline at::Tensor lse_reference(const at::Tensor& q, const at::Tensor& k, const AttentionParams& p) {
  auto q64 = q.to(at::kDouble), k64 = repeat_heads(k.to(at::kDouble), q.size(1) / k.size(1));
  auto s = at::matmul(q64, k64.transpose(2, 3)) * p.scale;
  auto mask = prism::ops::attention_mask(q.size(0), q.size(2), k.size(2), p, q.device());
  s = s.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
  return at::logsumexp(s, -1);
}

inline double err(const at::Tensor& a, const at::Tensor& ref64) {
  return prism::test::max_abs_diff(a.to(at::kDouble), ref64);
}

/// PRISM_TEST_VERBOSE=1 prints every error pair (kernel vs same-precision reference).
inline void report(const std::string& what, double e_kernel, double e_ref) {
  if (std::getenv("PRISM_TEST_VERBOSE")) std::printf("  %-52s kernel %.3e  reference %.3e\n", what.c_str(), e_kernel, e_ref);
}

/// The acceptance rule: no NaN, and error <= 2x the same-precision reference's (+ a tiny floor).
inline void expect_within_budget(const std::string& what, const at::Tensor& got, const at::Tensor& ref_lp,
                                 const at::Tensor& ref64) {
  ASSERT_FALSE(got.isnan().any().item<bool>()) << what << ": NaN in the kernel output";
  const double e_kernel = err(got, ref64), e_ref = err(ref_lp, ref64);
  report(what, e_kernel, e_ref);
  EXPECT_LE(e_kernel, 2 * e_ref + 1e-5) << what << ": kernel error " << e_kernel << " vs same-precision reference "
                                        << e_ref;
}

/// Forward (out, lse) and backward (dq, dk, dv) of one case against the references.
inline void check_forward_backward(Backend& be, const Case& c, const at::Device& device, bool with_backward) {
  at::manual_seed(7);
  auto q = bhld(c, c.Hq, c.Lq, device), k = bhld(c, c.Hkv, c.Lk, device), v = bhld(c, c.Hkv, c.Lk, device);
  const auto p = params_of(c, device);
  auto fwd = run_forward(be, c, q, k, v, p);
  auto ref64 = prism::ops::attention_ref(q.to(at::kDouble), k.to(at::kDouble), v.to(at::kDouble), p);
  expect_within_budget(c.name + " out", fwd.out, prism::ops::attention_ref(q, k, v, p), ref64);
  ASSERT_FALSE(fwd.lse.isnan().any().item<bool>()) << c.name << ": NaN in the logsumexp";
  const double e_lse = err(fwd.lse, lse_reference(q, k, p));
  report(c.name + " lse", e_lse, 0);
  EXPECT_LE(e_lse, 1e-3) << c.name << ": logsumexp error " << e_lse;
  if (!with_backward) return;

  auto dout = bhld(c, c.Hq, c.Lq, device);
  auto g = run_backward(be, c, dout, q, k, v, fwd.out, fwd.lse, p);
  auto grads_of = [&](at::ScalarType dt) {
    auto qd = q.to(dt).detach().requires_grad_(), kd = k.to(dt).detach().requires_grad_(),
         vd = v.to(dt).detach().requires_grad_();
    prism::ops::attention_ref(qd, kd, vd, p).backward(dout.to(dt));
    return Grads{qd.grad(), kd.grad(), vd.grad()};
  };
  auto g64 = grads_of(at::kDouble), glp = grads_of(c.dtype);
  expect_within_budget(c.name + " dq", g.dq, glp.dq, g64.dq);
  expect_within_budget(c.name + " dk", g.dk, glp.dk, g64.dk);
  expect_within_budget(c.name + " dv", g.dv, glp.dv, g64.dv);
}

/// Decode kernel (rows without any visible key are excluded by the cases: they output 0 where the
/// reference averages every key).
inline void check_decode(Backend& be, const Case& c, const at::Device& device) {
  at::manual_seed(3);
  auto q = bhld(c, c.Hq, c.Lq, device), k = bhld(c, c.Hkv, c.Lk, device), v = bhld(c, c.Hkv, c.Lk, device);
  const auto p = params_of(c, device);
  auto out = run_decode(be, c, q, k, v, p);
  auto ref64 = prism::ops::attention_ref(q.to(at::kDouble), k.to(at::kDouble), v.to(at::kDouble), p);
  expect_within_budget(c.name + " decode", out, prism::ops::attention_ref(q, k, v, p), ref64);
}

}  // namespace prism::test::attn
