// Backward kernels (preprocess + dk/dv/dq) for fp16, one translation unit per dtype.
#include "flash_launch.cuh"

namespace prism::kernels::attn {
int flash_bwd_fp16(const FlashBwdParams& p, cudaStream_t s) { return run_flash_bwd<Fp16>(p, CudaLauncher{s}); }
}  // namespace prism::kernels::attn
