// Plain parameters of the fused gated RMSNorm of the Mamba2 mixer (norm(y * silu(z)) in groups),
// forward and backward. src/ops/rms_norm_gated_cuda.cpp fills them; no torch types here.
#pragma once

#include <cstdint>

#include "../ssd/ssm_types.h"

namespace prism::kernels::ssm {

constexpr int kGatedNormThreads = 256;
constexpr int64_t kGatedNormMaxGroup = 12288;  ///< backward keeps one fp32 weight-grad row per group in smem

struct GatedRmsNormParams {
  const void* y = nullptr;  // [rows, I], row stride y_rs, unit column stride
  DType y_dtype = DType::kFloat32;
  int64_t y_rs = 0;
  const void* z = nullptr;  // [rows, I], row stride z_rs
  DType z_dtype = DType::kFloat32;
  int64_t z_rs = 0;
  const float* w = nullptr;  // [I] fp32
  void* out = nullptr;       // [rows, I] contiguous, out_dtype
  DType out_dtype = DType::kFloat32;
  float* rstd = nullptr;  // [rows, G] fp32 (saved for backward), or null
  int64_t rows = 0, I = 0, group = 0;
  float eps = 1e-6f;
};

struct GatedRmsNormBwdParams {
  GatedRmsNormParams f;       // y, z, w, rstd (required), dtypes; out unused
  const void* dout = nullptr; // [rows, I] contiguous, f.out_dtype
  void* dy = nullptr;         // [rows, I] contiguous, f.y_dtype
  void* dz = nullptr;         // [rows, I] contiguous, f.z_dtype
  float* dw_partial = nullptr;  // [num_chunks, I] fp32: the caller sums over dim 0
  int64_t rows_per_chunk = 1;
  int64_t num_chunks = 1;
};

/// Launch on `stream` (a cudaStream_t); return a cudaError_t value (0 = success).
int gated_rms_norm_fwd(const GatedRmsNormParams& p, void* stream);
int gated_rms_norm_bwd(const GatedRmsNormBwdParams& p, void* stream);

}  // namespace prism::kernels::ssm
