// Mamba2 selective state-space scan (SSD): the recurrence of architectures.md §2.4
//   h_t = exp(dt_t * A) h_{t-1} + dt_t * B_t x_t^T,   y_t = C_t h_t + D * x_t
// evaluated chunk-wise (the SSD algorithm: quadratic inside a chunk, a linear recurrence over
// chunk states), with state resets at document boundaries and optional initial/final states.
// CUDA kernels (kernels/ssd): the chunked forward and backward (an autograd Function) and the
// decode step; the reference (ATen autograd) runs everywhere else.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "prism/ops/dispatch.h"

namespace prism::ops {

struct SsdScanParams {
  int64_t chunk_size = 256;   ///< Q (config `chunk_size` / `mamba_chunk_size`)
  at::Tensor cu_seqlens;      ///< packed documents, int64 [num_docs + 1] over L (B == 1): the state
                              ///< is reset at every document start. Undefined = one document.
  at::Tensor initial_state;   ///< [B, H, P, N] fp32 state entering position 0 (undefined = zeros)
  Impl impl = Impl::kAuto;    ///< kAuto: the CUDA kernels (kernels/ssd; forward, and backward when a
                              ///< gradient is needed) for CUDA tensors with P = 64, N in {64, 128} and
                              ///< Q a multiple of 64 <= 256 (fp32/bf16/fp16 x); else the reference
};

struct SsdScanResult {
  at::Tensor y;            ///< [B, L, H, P] fp32 (includes the D * x skip when D is given)
  at::Tensor final_state;  ///< [B, H, P, N] fp32 state after the last position
};

/// x [B, L, H, P], dt [B, L, H] (after softplus/clamp), A [H] (negative), B and C [B, L, G, N]
/// with H % G == 0 (head h uses group h / (H/G)), D [H] or undefined. Inputs of any float dtype;
/// all math and the state are fp32 (fp64 if x is fp64).
SsdScanResult ssd_scan(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                       const at::Tensor& C, const at::Tensor& D, const SsdScanParams& p);
SsdScanResult ssd_scan_ref(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                           const at::Tensor& C, const at::Tensor& D, const SsdScanParams& p);

/// One decode step (selective_state_update): state [B, H, P, N] fp32 is updated in place and
/// y [B, H, P] (fp32) returned. x [B, H, P], dt [B, H], B/C [B, G, N].
/// kAuto: the CUDA kernel (kernels/ssd/ssd_step.cu) for a contiguous fp32 CUDA state without autograd.
at::Tensor ssd_step(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                    const at::Tensor& B, const at::Tensor& C, const at::Tensor& D, Impl impl = Impl::kAuto);
at::Tensor ssd_step_ref(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                        const at::Tensor& B, const at::Tensor& C, const at::Tensor& D);

}  // namespace prism::ops
