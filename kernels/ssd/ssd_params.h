// Plain parameters of the Mamba2 SSD kernels: the one-token decode step (selective state update)
// and the chunked scan forward and backward. src/ops/ssd_scan_cuda.cpp fills them; no torch types
// here. Device code of the scan: ssd_scan_kernel.cuh (runs on a CPU in tests/ops/test_ssd_emu.cpp).
#pragma once

#include <cstdint>

#include "ssm_types.h"

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

/// Chunked SSD backward: the gradients of y and final_state w.r.t. x, dt, A, B, C, D and
/// initial_state (dt enters as given: softplus / bias / limits are outside the scan). It recomputes
/// the forward's cs / cb / states from the inputs (nothing but the inputs is saved), then runs the
/// backward launches described in ssd_scan_kernel.cuh. Deterministic: no atomics; every sum over
/// blocks is a fixed-order pass over per-block partials. All outputs are fp32 and fully written.
struct SsdScanBwdParams {
  SsdScanFwdParams f;                 // inputs and the forward workspaces (cs, cb, states, and
                                      // final_state as a [B, H, P, N] scratch); f.y is unused
  const float* dy = nullptr;          // [B, L, H, P] fp32 contiguous
  const float* dfinal_state = nullptr;  // [B, H, P, N] fp32 contiguous, or null (zero)
  float* dx = nullptr;                // [B, L, H, P]
  float* ddt = nullptr;               // [B, L, H]
  float* dA = nullptr;                // [H]
  float* dB = nullptr;                // [B, L, G, N]
  float* dC = nullptr;                // [B, L, G, N]
  float* dD = nullptr;                // [H], or null (no D)
  float* dinitial_state = nullptr;    // [B, H, P, N], or null (not wanted)
  // Workspaces (sizes: ssd_scan_bwd_workspace):
  float* dstates = nullptr;   // [B, nc, H, P, N] dL/dHin from y, then dL/d(chunk state)
  float* dcb = nullptr;       // [B, nc, G, Q, Q] dL/d(C_t . B_s), lower-triangular 64x64 tiles
  double* rowpart = nullptr;  // [B, H, nc, Q/64, Q] row sums of dL/dseg per 64-column tile
  double* colpart = nullptr;  // [B, H, nc, Q/64, Q] column sums of dL/dseg per 64-row tile
  double* dcs_off = nullptr;  // [B, H, nc*Q] dL/dcs[t] through exp(cs[t]) C_t . Hin
  double* kst = nullptr;      // [B, H, nc*Q] dL/dcs through the chunk-state decay of position s
  double* dS = nullptr;       // [B, H, nc] dL/dcs[Q-1] through the chunk decay of state passing
  double* dA_part = nullptr;  // [B, H, nc] per-chunk partial dA
  double* dD_part = nullptr;  // [B, H, nc*Q/64] per-tile partial dD
};

/// Element counts of the backward workspaces, in the order of SsdScanBwdParams.
struct SsdScanBwdWorkspace {
  int64_t dstates = 0, dcb = 0, rowpart = 0, colpart = 0, dcs_off = 0, kst = 0, dS = 0, dA_part = 0, dD_part = 0;
};

inline SsdScanBwdWorkspace ssd_scan_bwd_workspace(int64_t B, int64_t L, int64_t H, int64_t P, int64_t N, int64_t G,
                                                  int64_t Q) {
  const int64_t nc = (L + Q - 1) / Q, nT = Q / 64;
  SsdScanBwdWorkspace w;
  w.dstates = B * nc * H * P * N;
  w.dcb = B * nc * G * Q * Q;
  w.rowpart = w.colpart = B * H * nc * nT * Q;
  w.dcs_off = w.kst = B * H * nc * Q;
  w.dS = w.dA_part = B * H * nc;
  w.dD_part = B * H * nc * nT;
  return w;
}

bool ssd_scan_supported(int64_t P, int64_t N, int64_t Q);
int ssd_scan_fwd(const SsdScanFwdParams& p, void* stream);
int ssd_scan_bwd(const SsdScanBwdParams& p, void* stream);

}  // namespace prism::kernels::ssm
