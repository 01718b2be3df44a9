// Plain parameters of the Mamba2 SSD kernels: the one-token decode step (selective state update)
// and the chunked scan forward. src/ops/ssd_scan_cuda.cpp fills them; no torch types here.
#pragma once

#include <cstdint>

#include "ssd/ssm_types.h"

namespace prism::kernels::ssm {

/// A strided tensor argument of any kernel dtype (strides in elements).
struct StridedArg {
  const void* ptr = nullptr;
  DType dtype = DType::kFloat32;
  int64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
};

struct SsdStepParams {
  float* state = nullptr;  // [B, H, P, N] fp32 contiguous, updated in place
  StridedArg x;            // [B, H, P]
  StridedArg dt;           // [B, H]
  StridedArg A;            // [H]
  StridedArg Bm;           // [B, G, N] (unit stride over N)
  StridedArg Cm;           // [B, G, N] (unit stride over N)
  StridedArg D;            // [H] (ptr null: no skip)
  float* y = nullptr;      // [B, H, P] fp32 contiguous
  int64_t B = 0, H = 0, P = 0, N = 0, G = 0;
};

int ssd_step_fwd(const SsdStepParams& p, void* stream);

/// Chunked SSD forward (mamba_chunk_scan_combined without dt preprocessing). Head dim P and state
/// size N are compile-time (supported: ssd_scan_supported); the chunk size Q must be a multiple of 64.
struct SsdScanFwdParams {
  StridedArg x;   // [B, L, H, P] (unit stride over P)
  StridedArg dt;  // [B, L, H]
  StridedArg A;   // [H]
  StridedArg Bm;  // [B, L, G, N] (unit stride over N)
  StridedArg Cm;  // [B, L, G, N] (unit stride over N)
  StridedArg D;   // [H] (ptr null: no skip)
  const uint8_t* reset = nullptr;      // [L]: 1 at document starts t > 0 (B == 1), or null
  const float* initial_state = nullptr;  // [B, H, P, N] fp32 contiguous or null (zeros)
  float* y = nullptr;            // [B, L, H, P] fp32 contiguous
  float* final_state = nullptr;  // [B, H, P, N] fp32 contiguous
  // Workspaces (the binding allocates them with the sizes below):
  double* cs = nullptr;     // [B, H, nc*Q] chunk-local cumsum of dt*A (fp64: exact differences)
  float* cb = nullptr;      // [B, nc, G, Q, Q] C_t . B_s (lower-triangular 64x64 tiles written)
  float* states = nullptr;  // [B, nc, H, P, N] chunk states, then the state entering each chunk
  int64_t B = 0, L = 0, H = 0, P = 0, N = 0, G = 0, Q = 0;
};

bool ssd_scan_supported(int64_t P, int64_t N, int64_t Q);
int ssd_scan_fwd(const SsdScanFwdParams& p, void* stream);

}  // namespace prism::kernels::ssm
