// Peak GPU memory for the step log. Its own TU because it is the only runtime code that needs the
// CUDA allocator headers (compiled only in CUDA-enabled builds, like every *_cuda.cpp).
#include <c10/cuda/CUDACachingAllocator.h>

#include <cstdint>

namespace prism::runtime {

int64_t cuda_peak_allocated_bytes(int device) {
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
}

}  // namespace prism::train
