// The entry points declared in attention_params.h: dtype dispatch onto the per-dtype translation
// units (flash_{fwd,bwd}_{bf16,fp16}.cu, flash_decode.cu).
#include <cuda_runtime.h>

#include "attention_params.h"

namespace prism::kernels::attn {

int flash_fwd_bf16(const FlashFwdParams& p, cudaStream_t s);
int flash_fwd_fp16(const FlashFwdParams& p, cudaStream_t s);
int flash_bwd_bf16(const FlashBwdParams& p, cudaStream_t s);
int flash_bwd_fp16(const FlashBwdParams& p, cudaStream_t s);
int flash_decode_bf16(const FlashDecodeParams& p, cudaStream_t s);
int flash_decode_fp16(const FlashDecodeParams& p, cudaStream_t s);

bool flash_fwd_supports_head_dim(int d) { return d == 64 || d == 128 || d == 256; }
bool flash_bwd_supports_head_dim(int d) { return d == 64 || d == 128; }
bool flash_decode_supports_head_dim(int d) { return d == 64 || d == 128; }

int flash_fwd(const FlashFwdParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  return p.dtype == DType::kBFloat16 ? flash_fwd_bf16(p, s) : flash_fwd_fp16(p, s);
}
int flash_bwd(const FlashBwdParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  return p.dtype == DType::kBFloat16 ? flash_bwd_bf16(p, s) : flash_bwd_fp16(p, s);
}
int flash_decode(const FlashDecodeParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  return p.dtype == DType::kBFloat16 ? flash_decode_bf16(p, s) : flash_decode_fp16(p, s);
}

}  // namespace prism::kernels::attn
