// Plain parameters of the fused RMSNorm forward kernel (no torch types: kernels/ is compiled by
// nvcc without torch headers; src/ops/rmsnorm_cuda.cpp fills this from at::Tensors).
#pragma once

#include <cstdint>

namespace prism::kernels {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

struct RmsNormParams {
  const void* x = nullptr;  // [rows, cols], contiguous, dtype
  const void* w = nullptr;  // [cols], dtype
  void* out = nullptr;      // [rows, cols], dtype
  int64_t rows = 0;
  int64_t cols = 0;
  float eps = 1e-6f;
  DType dtype = DType::kFloat32;
};

/// Launches on `stream` (a cudaStream_t); returns a cudaError_t value (0 = success).
int rms_norm_forward(const RmsNormParams& p, void* stream);

}  // namespace prism::kernels
