// Plain parameters of the fused RMSNorm kernels (no torch types: kernels/ is compiled by nvcc
// without torch headers; src/ops/rmsnorm_cuda.cpp fills these from at::Tensors).
#pragma once

#include <cstdint>

#include "common/kernel_dtype.h"

namespace prism::kernels {

struct RmsNormParams {
  const void* x = nullptr;  // [rows, cols], contiguous, dtype
  const void* w = nullptr;  // [cols], dtype
  void* out = nullptr;      // [rows, cols], dtype
  float* rstd = nullptr;    // [rows] fp32 1/sqrt(mean(x^2) + eps), written when non-null (saved for backward)
  int64_t rows = 0;
  int64_t cols = 0;
  float eps = 1e-6f;
  DType dtype = DType::kFloat32;
};

/// Launches on `stream` (a cudaStream_t); returns a cudaError_t value (0 = success).
int rms_norm_forward(const RmsNormParams& p, void* stream);

struct RmsNormBackwardParams {
  const void* x = nullptr;      // [rows, cols], contiguous, dtype (the forward input)
  const void* w = nullptr;      // [cols], dtype
  const void* dy = nullptr;     // [rows, cols], contiguous, dtype
  const float* rstd = nullptr;  // [rows] from the forward
  void* dx = nullptr;           // [rows, cols], dtype
  void* dw = nullptr;           // [cols], dtype; null = weight gradient not wanted
  float* dw_partial = nullptr;  // [dw_partial_rows, cols] fp32 scratch (when dw)
  int64_t dw_partial_rows = 0;  // rms_norm_backward_partial_rows(rows, cols, dtype, true)
  int64_t rows = 0;
  int64_t cols = 0;
  DType dtype = DType::kFloat32;
};

/// Rows of the fp32 dw_partial scratch the backward needs (one per block of its grid; 0 when no
/// weight gradient is wanted). Depends only on the shape and the current device, so the weight
/// gradient is deterministic: fixed per-block partial sums, then one fixed-order reduction.
int64_t rms_norm_backward_partial_rows(int64_t rows, int64_t cols, DType dtype, bool with_dw);

/// Largest `cols` the backward supports (its per-block weight-gradient accumulator lives in shared
/// memory: 4 bytes per column); larger rows must use the reference.
int64_t rms_norm_backward_max_cols();

/// dx (and dw when requested) of out = w * cast(x * rstd). Returns a cudaError_t value.
int rms_norm_backward(const RmsNormBackwardParams& p, void* stream);

}  // namespace prism::kernels
