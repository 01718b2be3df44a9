// Plain parameters of the fused attention kernels (FlashAttention-2 style forward and backward,
// and a split-KV decode kernel). No torch types: kernels/ is compiled by nvcc without torch
// headers; src/ops/attention_cuda.cpp fills these structs from at::Tensors and allocates every
// buffer named here.
//
// Layout conventions shared by all kernels:
//   - q [B, Hq, Lq, d], k/v [B, Hkv, Lk, d], out/dout [B, Hq, Lq, d]: any strides for the batch,
//     head and row axes (in elements, multiples of 8), unit stride on d, base pointers 16-byte
//     aligned. Query head h reads kv head h / (Hq / Hkv) (GQA/MQA; nothing is repeated in memory).
//   - lse [B, Hq, Lq] fp32 contiguous, natural log of the softmax denominator of the scaled
//     scores; +inf for a row that sees no key (its output is 0).
//   - Visibility: every masking rule prism has (causal with a query offset, sliding window, packed
//     documents) reduces to one key interval per query row, see MaskParams.
#pragma once

#include <cstdint>

#include "../common/kernel_dtype.h"

namespace prism::kernels::attn {

// Element type: prism::kernels::DType (kernels/common/kernel_dtype.h); these kernels take kFloat16 and kBFloat16.

/// Query row i (position qpos = i + q_offset) sees key j iff lo(i) <= j <= hi(i), where
///   lo = max(doc_start(i), window > 0 ? qpos - window + 1 : 0)
///   hi = min(doc_end(i) - 1, causal ? qpos : Lk - 1)
/// and doc_start/doc_end come from cu_seqlens (the whole axis when there is none). lo and hi are
/// non-decreasing in i, which is what lets the kernels skip whole tiles.
struct MaskParams {
  int causal = 0;
  int window = 0;                   ///< sliding window in keys (Mistral); 0 = off
  int64_t q_offset = 0;             ///< position of query row 0 (keys already in a KV cache)
  const int* cu_seqlens = nullptr;  ///< device int32 [num_docs + 1] over the L axis (B == 1, Lq == Lk)
  int num_docs = 0;
};

struct FlashFwdParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;    // [B, Hq, Lq, d], dtype
  float* lse = nullptr;   // [B, Hq, Lq] fp32 contiguous
  int64_t q_stride_b = 0, q_stride_h = 0, q_stride_l = 0;
  int64_t k_stride_b = 0, k_stride_h = 0, k_stride_l = 0;
  int64_t v_stride_b = 0, v_stride_h = 0, v_stride_l = 0;
  int64_t o_stride_b = 0, o_stride_h = 0, o_stride_l = 0;
  int batch = 0, heads_q = 0, heads_kv = 0, len_q = 0, len_k = 0, head_dim = 0;
  float scale = 1.f;  // softmax scale applied to q.k
  MaskParams mask;
  DType dtype = DType::kBFloat16;
};

struct FlashBwdParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* out = nullptr;   // forward output [B, Hq, Lq, d]
  const void* dout = nullptr;  // gradient of out [B, Hq, Lq, d]
  const float* lse = nullptr;  // forward lse [B, Hq, Lq]
  float* softmax_d = nullptr;  // workspace [B, Hq, Lq] fp32: D = rowsum(dout * out)
  float* dq_accum = nullptr;   // [B, Hq, Lq, d] fp32 contiguous, zero-filled: receives dq (atomicAdd)
  void* dk = nullptr;          // [B, Hkv, Lk, d] dtype (written when num_splits == 1)
  void* dv = nullptr;
  float* dkv_partial = nullptr;  // [num_splits, 2, B, Hkv, Lk, d] fp32 contiguous (num_splits > 1)
  int num_splits = 1;            // query heads of a GQA group split over this many blocks (divides Hq/Hkv)
  int64_t q_stride_b = 0, q_stride_h = 0, q_stride_l = 0;
  int64_t k_stride_b = 0, k_stride_h = 0, k_stride_l = 0;
  int64_t v_stride_b = 0, v_stride_h = 0, v_stride_l = 0;
  int64_t o_stride_b = 0, o_stride_h = 0, o_stride_l = 0;
  int64_t do_stride_b = 0, do_stride_h = 0, do_stride_l = 0;
  int64_t dk_stride_b = 0, dk_stride_h = 0, dk_stride_l = 0;
  int64_t dv_stride_b = 0, dv_stride_h = 0, dv_stride_l = 0;
  int batch = 0, heads_q = 0, heads_kv = 0, len_q = 0, len_k = 0, head_dim = 0;
  float scale = 1.f;
  MaskParams mask;
  DType dtype = DType::kBFloat16;
};

/// Decode: a few query tokens per sequence against a long KV cache. One block per (KV split,
/// kv head, batch) handles all Hq/Hkv query heads of the group (so each cache byte is read once),
/// and a combine kernel merges the splits.
struct FlashDecodeParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  const uint8_t* key_mask = nullptr;  // [B, Lk] (row stride key_mask_stride), nonzero = real key; may be null
  int64_t key_mask_stride = 0;
  float* o_partial = nullptr;    // [num_splits, B, Hq, Lq, d] fp32 (num_splits > 1)
  float* lse_partial = nullptr;  // [num_splits, B, Hq, Lq] fp32, log2 domain (num_splits > 1)
  int num_splits = 1;
  int keys_per_split = 0;        // multiple of the 64-key tile
  int64_t q_stride_b = 0, q_stride_h = 0, q_stride_l = 0;
  int64_t k_stride_b = 0, k_stride_h = 0, k_stride_l = 0;
  int64_t v_stride_b = 0, v_stride_h = 0, v_stride_l = 0;
  int64_t o_stride_b = 0, o_stride_h = 0, o_stride_l = 0;
  int batch = 0, heads_q = 0, heads_kv = 0, len_q = 0, len_k = 0, head_dim = 0;
  float scale = 1.f;
  MaskParams mask;  // cu_seqlens unsupported here
  DType dtype = DType::kBFloat16;
};

/// Head dims with compiled kernels.
bool flash_fwd_supports_head_dim(int head_dim);     // 64, 128, 256
bool flash_bwd_supports_head_dim(int head_dim);     // 64, 128
bool flash_decode_supports_head_dim(int head_dim);  // 64, 128
/// Largest (Hq/Hkv) * Lq the decode kernel takes (query rows packed into one block).
constexpr int kFlashDecodeMaxRows = 32;
/// Keys per decode tile; keys_per_split must be a multiple of it.
constexpr int kFlashDecodeTileKeys = 64;
/// Keys per backward block (the grid is ceil(Lk / this) x Hkv x B * num_splits).
constexpr int kFlashBwdBlockKeys = 64;

/// Each launches on `stream` (a cudaStream_t) and returns a cudaError_t value (0 = success).
/// flash_bwd runs the D = rowsum(dout * out) preprocess and the dk/dv/dq kernel; the caller
/// converts dq_accum (and sums dkv_partial when num_splits > 1).
int flash_fwd(const FlashFwdParams& p, void* stream);
int flash_bwd(const FlashBwdParams& p, void* stream);
int flash_decode(const FlashDecodeParams& p, void* stream);

}  // namespace prism::kernels::attn
