// Host launchers of the fused RMSNorm kernels (device code: rmsnorm_kernel.cuh, which explains
// the numerics and the deterministic weight-gradient reduction).
#include <cuda_runtime.h>

#include <cstdint>

#include "rmsnorm/rmsnorm_kernel.cuh"
#include "rmsnorm/rmsnorm_params.h"

namespace prism::kernels {
namespace {

using namespace rmsnorm;  // NOLINT(google-build-using-namespace): the kernels of this file

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <typename T>
int launch_fwd(const RmsNormParams& p, cudaStream_t s) {
  if (p.rows == 0 || p.cols == 0) return 0;
  constexpr int kVec = vec_width<T>();
  const int threads = threads_for(p.cols);
  const auto grid = static_cast<unsigned>(p.rows);
  const bool vec = p.cols % kVec == 0 && aligned16(p.x) && aligned16(p.w) && aligned16(p.out);
  if (vec) {
    rms_norm_fwd_kernel<T, kVec><<<grid, threads, 0, s>>>(static_cast<const T*>(p.x), static_cast<const T*>(p.w),
                                                           static_cast<T*>(p.out), p.rstd, p.cols, p.eps);
  } else {
    rms_norm_fwd_kernel<T, 1><<<grid, threads, 0, s>>>(static_cast<const T*>(p.x), static_cast<const T*>(p.w),
                                                        static_cast<T*>(p.out), p.rstd, p.cols, p.eps);
  }
  return static_cast<int>(cudaGetLastError());
}

size_t dw_smem_bytes(int64_t cols, bool with_dw) { return with_dw ? static_cast<size_t>(cols) * sizeof(float) : 0; }

// Sets the dynamic shared-memory limit of one backward instantiation (needed above 48 KB).
template <typename T, int VEC, bool kDw>
cudaError_t prepare_bwd(size_t smem) {
  return cudaFuncSetAttribute(rms_norm_bwd_kernel<T, VEC, kDw>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(smem));
}

// The backward grid: as many blocks as fit on the device at once (from the vectorised
// instantiation's occupancy, whatever the pointers' alignment turns out to be), at most one per row.
template <typename T>
int64_t bwd_grid(int64_t rows, int64_t cols, bool with_dw, cudaError_t* err) {
  constexpr int kVec = vec_width<T>();
  const int threads = threads_for(cols);
  const size_t smem = dw_smem_bytes(cols, with_dw);
  int device = 0, sms = 0, per_sm = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e == cudaSuccess) {
    if (with_dw) {
      e = prepare_bwd<T, kVec, true>(smem);
      if (e == cudaSuccess)
        e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, rms_norm_bwd_kernel<T, kVec, true>, threads, smem);
    } else {
      e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, rms_norm_bwd_kernel<T, kVec, false>, threads, 0);
    }
  }
  if (err) *err = e;
  if (e != cudaSuccess) return 0;
  int64_t g = static_cast<int64_t>(sms) * (per_sm > 0 ? per_sm : 1);
  if (g > rows) g = rows;
  return g < 1 ? 1 : g;
}

template <typename T>
int launch_bwd(const RmsNormBackwardParams& p, cudaStream_t s) {
  if (p.rows == 0 || p.cols == 0) {
    if (p.dw != nullptr && p.cols > 0) return static_cast<int>(cudaMemsetAsync(p.dw, 0, p.cols * sizeof(T), s));
    return 0;
  }
  constexpr int kVec = vec_width<T>();
  const bool with_dw = p.dw != nullptr;
  if (with_dw && p.dw_partial == nullptr) return static_cast<int>(cudaErrorInvalidValue);
  if (with_dw && p.cols > rms_norm_backward_max_cols()) return static_cast<int>(cudaErrorInvalidValue);
  cudaError_t e = cudaSuccess;
  // With dw the grid is the partial-row count the caller allocated (rms_norm_backward_partial_rows).
  const int64_t grid = with_dw ? p.dw_partial_rows : bwd_grid<T>(p.rows, p.cols, false, &e);
  if (e != cudaSuccess) return static_cast<int>(e);
  if (grid < 1 || grid > p.rows) return static_cast<int>(cudaErrorInvalidValue);
  if (with_dw) {
    e = prepare_bwd<T, kVec, true>(dw_smem_bytes(p.cols, true));
    if (e != cudaSuccess) return static_cast<int>(e);
  }
  const int threads = threads_for(p.cols);
  const size_t smem = dw_smem_bytes(p.cols, with_dw);
  const bool vec = p.cols % kVec == 0 && aligned16(p.x) && aligned16(p.w) && aligned16(p.dy) && aligned16(p.dx);
  const auto* x = static_cast<const T*>(p.x);
  const auto* w = static_cast<const T*>(p.w);
  const auto* dy = static_cast<const T*>(p.dy);
  auto* dx = static_cast<T*>(p.dx);
  const auto g = static_cast<unsigned>(grid);
  if (with_dw) {
    if (vec) {
      rms_norm_bwd_kernel<T, kVec, true><<<g, threads, smem, s>>>(x, w, dy, p.rstd, dx, p.dw_partial, p.rows, p.cols);
    } else {
      e = prepare_bwd<T, 1, true>(smem);
      if (e != cudaSuccess) return static_cast<int>(e);
      rms_norm_bwd_kernel<T, 1, true><<<g, threads, smem, s>>>(x, w, dy, p.rstd, dx, p.dw_partial, p.rows, p.cols);
    }
    e = cudaGetLastError();
    if (e != cudaSuccess) return static_cast<int>(e);
    const auto rgrid = static_cast<unsigned>((p.cols + 31) / 32);
    rms_norm_dw_reduce_kernel<T><<<rgrid, dim3(32, 8), 0, s>>>(p.dw_partial, static_cast<T*>(p.dw), grid, p.cols);
  } else if (vec) {
    rms_norm_bwd_kernel<T, kVec, false><<<g, threads, 0, s>>>(x, w, dy, p.rstd, dx, nullptr, p.rows, p.cols);
  } else {
    rms_norm_bwd_kernel<T, 1, false><<<g, threads, 0, s>>>(x, w, dy, p.rstd, dx, nullptr, p.rows, p.cols);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int rms_norm_forward(const RmsNormParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::kFloat32: return launch_fwd<float>(p, s);
    case DType::kFloat16: return launch_fwd<dev::half>(p, s);
    case DType::kBFloat16: return launch_fwd<dev::bf16>(p, s);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

int64_t rms_norm_backward_max_cols() {
  int device = 0, optin = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) return 0;
  // Leave room for the static block_sum scratch (and the runtime's reserved bytes).
  return optin > 2048 ? (optin - 2048) / static_cast<int64_t>(sizeof(float)) : 0;
}

int64_t rms_norm_backward_partial_rows(int64_t rows, int64_t cols, DType dtype, bool with_dw) {
  if (!with_dw || rows == 0 || cols == 0) return 0;
  cudaError_t e = cudaSuccess;
  switch (dtype) {
    case DType::kFloat32: return bwd_grid<float>(rows, cols, true, &e);
    case DType::kFloat16: return bwd_grid<dev::half>(rows, cols, true, &e);
    case DType::kBFloat16: return bwd_grid<dev::bf16>(rows, cols, true, &e);
  }
  return 0;
}

int rms_norm_backward(const RmsNormBackwardParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::kFloat32: return launch_bwd<float>(p, s);
    case DType::kFloat16: return launch_bwd<dev::half>(p, s);
    case DType::kBFloat16: return launch_bwd<dev::bf16>(p, s);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace prism::kernels
