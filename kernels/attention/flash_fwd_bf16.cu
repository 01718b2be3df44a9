// Forward kernels for bf16 (all head dims), in their own translation unit so the
// instantiations compile in parallel.
#include "flash_launch.cuh"

namespace prism::kernels::attn {
int flash_fwd_bf16(const FlashFwdParams& p, cudaStream_t s) { return run_flash_fwd<Bf16>(p, CudaLauncher{s}); }
}  // namespace prism::kernels::attn
