// Plain parameters of the depthwise causal conv1d (+ SiLU) kernels of the Mamba2 mixer
// (src/ops/causal_conv1d_cuda.cpp fills them; no torch types here).
#pragma once

#include <cstdint>

#include "../ssd/ssm_types.h"

namespace prism::kernels::ssm {

/// Positions one thread walks through (a tile of time; K-1 halo inputs are re-read per tile).
constexpr int kConvFwdTile = 64;
constexpr int kConvBwdTile = 128;
constexpr int kConvThreads = 128;  ///< channels per block (one thread per channel and tile)

struct CausalConv1dFwdParams {
  const void* x = nullptr;  // [B, C, L] with strides (x_sb, x_sc, x_sl) in elements, dtype
  int64_t x_sb = 0, x_sc = 0, x_sl = 0;
  const float* w = nullptr;     // [C, K] fp32 contiguous
  const float* bias = nullptr;  // [C] fp32 or null
  const float* init = nullptr;  // [B, C, K-1] fp32 contiguous or null (zeros)
  const int64_t* cu_seqlens = nullptr;  // [num_cu] on the device, or null (one document); B == 1
  int num_cu = 0;
  void* out = nullptr;  // [B, C, L] with strides (o_sb, o_sc, o_sl), dtype
  int64_t o_sb = 0, o_sc = 0, o_sl = 0;
  void* final_state = nullptr;  // [B, C, K-1] contiguous, dtype (or null)
  int64_t B = 0, C = 0, L = 0;
  int K = 4;  // 2..4
  bool silu = true;
  DType dtype = DType::kFloat32;
};

struct CausalConv1dBwdParams {
  CausalConv1dFwdParams f;       // the forward's inputs (out / final_state unused)
  const void* dout = nullptr;    // [B, C, L] strides (g_sb, g_sc, g_sl), dtype
  int64_t g_sb = 0, g_sc = 0, g_sl = 0;
  void* dx = nullptr;            // [B, C, L] strides (dx_sb, dx_sc, dx_sl), dtype
  int64_t dx_sb = 0, dx_sc = 0, dx_sl = 0;
  float* dw_partial = nullptr;   // [B * num_tiles, C, K] fp32 (summed over dim 0 by the caller)
  float* db_partial = nullptr;   // [B * num_tiles, C] fp32, or null without bias
  float* dinit = nullptr;        // [B, C, K-1] fp32, or null
};

inline int64_t conv_bwd_num_tiles(int64_t L) { return (L + kConvBwdTile - 1) / kConvBwdTile; }

/// Launch on `stream` (a cudaStream_t); return a cudaError_t value (0 = success).
int causal_conv1d_fwd(const CausalConv1dFwdParams& p, void* stream);
int causal_conv1d_bwd(const CausalConv1dBwdParams& p, void* stream);

}  // namespace prism::kernels::ssm
