// Peak GPU memory for the step log. Its own TU because it is the only runtime code that needs the
// CUDA allocator headers (compiled only in CUDA-enabled builds, like every *_cuda.cpp).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>

#include <cstdint>

namespace prism::runtime {

int64_t cuda_peak_allocated_bytes(int device) {
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
}

// Device memory total minus what this process's caching allocator holds: what a new model can
// still get (other processes on the GPU are not seen; check_fits is a guard, not an allocator).
int64_t cuda_available_bytes(int device) {
  const auto* props = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(device));
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  const int64_t reserved = stats.reserved_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].current;
  return static_cast<int64_t>(props->totalGlobalMem) - reserved;
}

}  // namespace prism::runtime
