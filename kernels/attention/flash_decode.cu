// Decode kernels (split-KV + combine) for bf16 and fp16.
#include "flash_launch.cuh"

namespace prism::kernels::attn {
int flash_decode_bf16(const FlashDecodeParams& p, cudaStream_t s) { return run_flash_decode<Bf16>(p, CudaLauncher{s}); }
int flash_decode_fp16(const FlashDecodeParams& p, cudaStream_t s) { return run_flash_decode<Fp16>(p, CudaLauncher{s}); }
}  // namespace prism::kernels::attn
