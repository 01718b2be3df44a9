// Fused RMSNorm forward, one block per row, fp32 statistics, transformers' cast order
// (architectures.md §1.1): n = x * rsqrt(mean(x^2) + eps) is rounded to the input dtype first,
// then multiplied by the weight in that dtype (computed in fp32 and rounded once, as PyTorch's
// bf16/fp16 elementwise ops do). Held to src/ops/rmsnorm_ref.cpp by tests/ops/test_rmsnorm_cuda.cpp
// (GPU only).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "rmsnorm/rmsnorm_params.h"

namespace prism::kernels {
namespace {

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

constexpr int kThreads = 256;

template <typename T>
__global__ void rms_norm_kernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ out, int64_t cols,
                                float eps) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * cols;
  T* orow = out + row * cols;
  float acc = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    const float v = to_f(xr[c]);
    acc += v * v;
  }
  // Block reduction: warp shuffles, then one value per warp through shared memory.
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  __shared__ float warp_sums[kThreads / 32];
  __shared__ float inv_rms;
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x < 32) {
    float s = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.f;
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (threadIdx.x == 0) inv_rms = rsqrtf(s / static_cast<float>(cols) + eps);
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    const T n = from_f<T>(to_f(xr[c]) * inv_rms);  // round to the input dtype first (HF order)
    orow[c] = from_f<T>(to_f(w[c]) * to_f(n));
  }
}

template <typename T>
int launch(const RmsNormParams& p, cudaStream_t s) {
  if (p.rows == 0) return 0;
  rms_norm_kernel<T><<<static_cast<unsigned>(p.rows), kThreads, 0, s>>>(
      static_cast<const T*>(p.x), static_cast<const T*>(p.w), static_cast<T*>(p.out), p.cols, p.eps);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int rms_norm_forward(const RmsNormParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::kFloat32: return launch<float>(p, s);
    case DType::kFloat16: return launch<__half>(p, s);
    case DType::kBFloat16: return launch<__nv_bfloat16>(p, s);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace prism::kernels
