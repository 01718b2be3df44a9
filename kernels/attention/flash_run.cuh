// Host-side orchestration of the attention kernels, shared by the CUDA build (CudaLauncher in
// flash_launch.cuh) and the CPU emulation (EmuLauncher in tests): which kernels run, in which
// order, over which grid. A launcher provides
//   template <class K, class P> int go(const P& params, int grid_x, int grid_y, int grid_z)
// and returns a cudaError_t value (0 = success).
#pragma once

#include "../common/kernel_abi.h"

#include "flash_bwd.cuh"
#include "flash_decode.cuh"
#include "flash_fwd.cuh"

namespace prism::kernels::attn {
PRISM_KERNEL_ABI_BEGIN

constexpr int kErrorInvalidValue = 1;  // cudaErrorInvalidValue

template <class T, class L>
int run_flash_fwd(const FlashFwdParams& p, const L& launch) {
  if (p.len_q == 0 || p.batch == 0 || p.heads_q == 0) return 0;
  auto go = [&](auto kernel) {
    using K = typename decltype(kernel)::Kernel;
    return launch.template go<K>(p, K::grid_x(p), p.heads_q, p.batch);
  };
  switch (p.head_dim) {
    case 64: return go(FlashFwdConfig<T, 64>{});
    case 128: return go(FlashFwdConfig<T, 128>{});
    case 256: return go(FlashFwdConfig<T, 256>{});
    default: return kErrorInvalidValue;
  }
}

template <class T, class L>
int run_flash_bwd(const FlashBwdParams& p, const L& launch) {
  if (p.len_q == 0 || p.len_k == 0 || p.batch == 0 || p.heads_q == 0) return 0;
  if (p.num_splits < 1 || (p.heads_q / p.heads_kv) % p.num_splits != 0) return kErrorInvalidValue;
  auto go = [&](auto cfg, auto pre) {
    using K = typename decltype(cfg)::Kernel;
    using Pre = decltype(pre);
    if (const int e = launch.template go<Pre>(p, Pre::grid_x(p), p.heads_q, p.batch)) return e;
    return launch.template go<K>(p, K::grid_x(p), p.heads_kv, p.batch * p.num_splits);
  };
  switch (p.head_dim) {
    case 64: return go(FlashBwdConfig<T, 64>{}, FlashBwdPreprocess<T, 64>{});
    case 128: return go(FlashBwdConfig<T, 128>{}, FlashBwdPreprocess<T, 128>{});
    default: return kErrorInvalidValue;
  }
}

template <class T, class L>
int run_flash_decode(const FlashDecodeParams& p, const L& launch) {
  if (p.len_q == 0 || p.batch == 0 || p.heads_q == 0) return 0;
  if ((p.heads_q / p.heads_kv) * p.len_q > kFlashDecodeMaxRows || p.num_splits < 1 ||
      p.keys_per_split % kFlashDecodeTileKeys != 0 || (p.num_splits > 1 && p.keys_per_split <= 0))
    return kErrorInvalidValue;
  auto go = [&](auto kernel, auto combine) {
    using K = decltype(kernel);
    using C = decltype(combine);
    if (const int e = launch.template go<K>(p, p.num_splits, p.heads_kv, p.batch)) return e;
    if (p.num_splits == 1) return 0;
    return launch.template go<C>(p, p.batch * p.heads_q * p.len_q, 1, 1);
  };
  switch (p.head_dim) {
    case 64: return go(FlashDecodeKernel<T, 64>{}, FlashDecodeCombine<T, 64>{});
    case 128: return go(FlashDecodeKernel<T, 128>{}, FlashDecodeCombine<T, 128>{});
    default: return kErrorInvalidValue;
  }
}

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::attn
