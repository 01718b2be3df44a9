// Plain-ATen reference of the Mamba2 SSD scan (prefill) and of its one-token decode step.
//
// What it owns: the chunked SSD evaluation of architectures.md §2.4 on any device, with autograd,
// all math and the state in fp32 (fp64 when x is fp64, for the tests). It mirrors the order of
// operations of transformers' `torch_forward` (models/mamba2/modeling_mamba2.py, copied into
// granitemoehybrid / bamba / nemotron_h): pad L to a multiple of Q, x̃ = x*dt, a = A*dt, masked-cumsum
// segment sums, intra-chunk Y_diag, chunk states, inter-chunk recurrence, Y_off, + D*x.
//
// Key decisions (why):
// * Every decay is exp(a masked-cumsum or a prefix sum), never exp(a difference of cumsums): HF's
//   `exp(A_cumsum[-1] - A_cumsum)` cancels catastrophically once a document reset (below) puts a
//   -1e4 into the cumsum. The chunk-state decays are therefore the last row of the segment-sum matrix.
// * Document resets (cu_seqlens, B == 1) are a zero decay entering the document start: a_t is
//   replaced by kResetLogDecay = -1e4 at every start t > 0. exp() of any segment containing it
//   underflows to exactly 0 in fp32 and fp64, so nothing crosses a boundary (also the inter-chunk
//   propagation and initial_state, which enters position 0 only), and no inf - inf can appear in
//   forward or backward. The gradient w.r.t. that a_t is then 0, which is also the true gradient
//   (the decay multiplies a state that the reset discards).
// * The inter-chunk recurrence is the sequential state passing of mamba_ssm
//   (ops/triton/ssd_state_passing.py: Hin_{c+1} = exp(sum a over chunk c) * Hin_c + st_c) instead of
//   HF's [nc+1, nc+1] einsum: identical math, O(nc) instead of O(nc^2) for long sequences.
// * B and C are never expanded to heads: C·Bᵀ is computed once per group (shared by its H/G heads),
//   and the chunk states / Y_off contract against the group's B / C with the group's heads folded
//   into the matrix rows. Same products as HF's repeat_interleave version, H/G times fewer flops.
#include <ATen/ATen.h>

#include <limits>
#include <vector>

#include "prism/core/error.h"
#include "prism/ops/ssd_scan.h"

namespace prism::ops {
namespace {

/// Log-decay written at a document start: exp(-1e4 + anything <= 0) == 0 exactly, and finite.
constexpr double kResetLogDecay = -1e4;

/// HF `segment_sum` (modeling_mamba2.py): a [..., Q] -> seg [..., Q(t), Q(s)] with
/// seg[t, s] = sum_{r=s+1..t} a_r for s <= t and -inf above the diagonal, by a masked cumsum.
at::Tensor segment_sum(const at::Tensor& a) {
  const int64_t Q = a.size(-1);
  auto sizes = a.sizes().vec();
  sizes.push_back(Q);
  auto opts = a.options().dtype(at::kBool);
  auto strict_lower = at::ones({Q, Q}, opts).tril(-1);  // [Q, Q] r > s
  auto lower = at::ones({Q, Q}, opts).tril(0);          // [Q, Q] t >= s
  auto rep = a.unsqueeze(-1).expand(sizes);             // [..., Q(r), Q(s)] = a_r
  rep = rep.masked_fill(strict_lower.logical_not(), 0);
  auto seg = at::cumsum(rep, -2);                       // [..., Q(t), Q(s)]
  return seg.masked_fill(lower.logical_not(), -std::numeric_limits<double>::infinity());
}

/// Document starts t in (0, L) from cu_seqlens (read on the host; duplicates are harmless).
std::vector<int64_t> document_starts(const at::Tensor& cu_seqlens, int64_t L) {
  std::vector<int64_t> starts;
  if (!cu_seqlens.defined()) return starts;
  auto cu = cu_seqlens.to(at::kCPU, at::kLong).contiguous();
  const int64_t* p = cu.data_ptr<int64_t>();
  for (int64_t i = 0; i < cu.numel(); ++i)
    if (p[i] > 0 && p[i] < L) starts.push_back(p[i]);
  return starts;
}

}  // namespace

SsdScanResult ssd_scan_ref(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                           const at::Tensor& C, const at::Tensor& D, const SsdScanParams& p) {
  const auto cd = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;  // compute dtype
  const int64_t Bsz = x.size(0), L = x.size(1), H = x.size(2), P = x.size(3);
  const int64_t G = B.size(2), N = B.size(3);
  const int64_t hpg = H / G;  // heads per group: head h uses group h / hpg
  const int64_t Q = p.chunk_size;
  const int64_t pad = (Q - L % Q) % Q;
  const int64_t Lp = L + pad, nc = Lp / Q;

  at::Tensor h = p.initial_state.defined() ? p.initial_state.to(x.device(), cd)
                                           : at::zeros({Bsz, H, P, N}, x.options().dtype(cd));  // [B, H, P, N]
  if (L == 0) return {at::zeros({Bsz, 0, H, P}, x.options().dtype(cd)), h};

  auto x32 = x.to(cd);                        // [B, L, H, P]
  auto dt32 = dt.to(cd);                      // [B, L, H]
  auto xdt = x32 * dt32.unsqueeze(-1);        // [B, L, H, P]  x̃ = x * dt
  auto a = dt32 * A.to(cd);                   // [B, L, H]     a = A * dt (log of the decay)
  const auto starts = document_starts(p.cu_seqlens, L);
  if (!starts.empty()) {
    auto reset = at::zeros({L}, x.options().dtype(at::kBool));
    reset.index_fill_(0, at::tensor(starts, at::kLong).to(x.device()), true);
    a = a.masked_fill(reset.reshape({1, L, 1}), kResetLogDecay);
  }

  // Zero padding to a multiple of Q (HF `pad_tensor_by_size`): x̃ = 0 and a = 0 leave the state
  // unchanged, so the state after the last padded position is the final state.
  xdt = at::constant_pad_nd(xdt, {0, 0, 0, 0, 0, pad});
  a = at::constant_pad_nd(a, {0, 0, 0, pad});
  auto Bp = at::constant_pad_nd(B.to(cd), {0, 0, 0, 0, 0, pad});
  auto Cp = at::constant_pad_nd(C.to(cd), {0, 0, 0, 0, 0, pad});

  auto Xc = xdt.reshape({Bsz, nc, Q, G, hpg, P}).permute({0, 1, 3, 4, 2, 5});  // [B, nc, G, hpg, Q, P]
  auto ac = a.reshape({Bsz, nc, Q, G, hpg}).permute({0, 1, 3, 4, 2});         // [B, nc, G, hpg, Q]
  auto Bc = Bp.reshape({Bsz, nc, Q, G, N}).permute({0, 1, 3, 2, 4});           // [B, nc, G, Q, N]
  auto Cc = Cp.reshape({Bsz, nc, Q, G, N}).permute({0, 1, 3, 2, 4});           // [B, nc, G, Q, N]

  auto a_cum = at::cumsum(ac, -1);  // [B, nc, G, hpg, Q]  sum_{r=0..t} a_r within the chunk
  auto seg = segment_sum(ac);       // [B, nc, G, hpg, Q(t), Q(s)]

  // 1. Intra-chunk (diagonal blocks): Y_diag[t] = sum_{s<=t} (C_t·B_s) exp(seg[t,s]) x̃_s.
  auto CB = at::matmul(Cc, Bc.transpose(-1, -2));  // [B, nc, G, Q(t), Q(s)], shared by the group's heads
  auto M = CB.unsqueeze(3) * at::exp(seg);         // [B, nc, G, hpg, Q, Q]
  auto Y_diag = at::matmul(M, Xc);                 // [B, nc, G, hpg, Q, P]

  // 2. Chunk-final states st_c = sum_s exp(sum_{r=s+1..Q-1} a_r) x̃_s ⊗ B_s; the decay is the last
  //    row of the segment sums (HF: exp(A_cumsum[-1] - A_cumsum), see the file comment).
  auto decay_states = at::exp(seg.select(-2, Q - 1));              // [B, nc, G, hpg, Q]
  auto Xd = (Xc * decay_states.unsqueeze(-1)).transpose(-1, -2);   // [B, nc, G, hpg, P, Q]
  auto states = at::matmul(Xd.reshape({Bsz, nc, G, hpg * P, Q}), Bc)  // [B, nc, G, hpg*P, N]
                    .reshape({Bsz, nc, H, P, N});                   // [B, nc, H, P, N]

  // 3. Inter-chunk recurrence (mamba_ssm state passing): Hin_0 = initial state,
  //    Hin_{c+1} = exp(sum of a over chunk c) * Hin_c + st_c; the last one is the final state.
  auto chunk_decay = at::exp(a_cum.select(-1, Q - 1)).reshape({Bsz, nc, H, 1, 1});  // [B, nc, H, 1, 1]
  std::vector<at::Tensor> h_in;
  h_in.reserve(nc);
  for (int64_t c = 0; c < nc; ++c) {
    h_in.push_back(h);
    h = h * chunk_decay.select(1, c) + states.select(1, c);
  }
  auto Hin = at::stack(h_in, 1);  // [B, nc, H, P, N] state entering each chunk

  // 4. State -> output (off-diagonal blocks): Y_off[t] = exp(sum_{r=0..t} a_r) C_t · Hin_c.
  auto CH = at::matmul(Cc, Hin.reshape({Bsz, nc, G, hpg * P, N}).transpose(-1, -2));  // [B, nc, G, Q, hpg*P]
  auto Y_off = CH.reshape({Bsz, nc, G, Q, hpg, P}).permute({0, 1, 2, 4, 3, 5}) *
               at::exp(a_cum).unsqueeze(-1);  // [B, nc, G, hpg, Q, P]

  // 5. y = Y_diag + Y_off, back to [B, L, H, P], drop the padding, + D * x (undiscretised x).
  auto y = (Y_diag + Y_off).permute({0, 1, 4, 2, 3, 5}).reshape({Bsz, Lp, H, P});  // [B, Lp, H, P]
  if (pad > 0) y = y.narrow(1, 0, L);
  if (D.defined()) y = y + D.to(cd).reshape({1, 1, H, 1}) * x32;
  return {y, h};
}

at::Tensor ssd_step_ref(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                        const at::Tensor& B, const at::Tensor& C, const at::Tensor& D) {
  // mamba_ssm selective_state_update / HF `mamba2_selective_state_update`, in the state's dtype
  // (fp32 like the kernel; HF's torch path rounds dB*x to the model dtype, §2.7). Checked by ssd_step.
  const int64_t Bsz = state.size(0), H = state.size(1), N = state.size(3);
  const auto cd = state.scalar_type();
  const int64_t G = B.size(1), hpg = H / G;

  auto x32 = x.to(cd);                                                      // [B, H, P]
  auto dt32 = dt.to(cd);                                                    // [B, H]
  auto dA = at::exp(dt32 * A.to(cd)).reshape({Bsz, H, 1, 1});                 // [B, H, 1, 1]
  auto Bh = B.to(cd).reshape({Bsz, G, 1, N}).expand({Bsz, G, hpg, N}).reshape({Bsz, H, 1, N});  // [B, H, 1, N]
  auto Ch = C.to(cd).reshape({Bsz, G, 1, N}).expand({Bsz, G, hpg, N}).reshape({Bsz, H, N, 1});  // [B, H, N, 1]
  auto dBx = (dt32.unsqueeze(-1) * x32).unsqueeze(-1) * Bh;                 // [B, H, P, N] (dt*x) ⊗ B_g
  state.mul_(dA).add_(dBx);
  auto y = at::matmul(state, Ch).squeeze(-1);                               // [B, H, P]
  if (D.defined()) y = y + D.to(cd).reshape({1, H, 1}) * x32;
  return y;
}

}  // namespace prism::ops
