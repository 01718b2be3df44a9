// Shared building blocks of the attention kernels: element types, the warp-level primitives
// (mma.sync m16n8k16, ldmatrix, cp.async, shuffles) behind small wrappers, the per-row key
// interval (the only masking rule), and tile copies.
//
// The wrappers have two implementations: real PTX under nvcc, and the host emulation in
// flash_emu.h when the kernels are compiled by the host compiler with PRISM_FLASH_EMULATE (CPU
// tests). Kernel code calls only these wrappers and plain C++, so both builds run the same code.
#pragma once

#include "../common/kernel_abi.h"

#include <cstdint>

#include "attention_params.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define PF_INLINE __device__ __forceinline__
#define PF_HD_INLINE __host__ __device__ __forceinline__
#define PF_UNROLL _Pragma("unroll")
#define PF_UNROLL4 _Pragma("unroll 4")
#elif defined(PRISM_FLASH_EMULATE)
#include <cmath>
#include <limits>

#include "flash_emu.h"
#define PF_INLINE inline
#define PF_HD_INLINE inline
#define PF_UNROLL
#define PF_UNROLL4
#else
#error "flash kernels: compile with nvcc, or define PRISM_FLASH_EMULATE for the host emulation"
#endif

namespace prism::kernels::attn {
PRISM_KERNEL_ABI_BEGIN

/// Where a thread is: block coordinates, grid size, thread index in the block.
struct BlockCtx {
  int bx, by, bz;
  int gx, gy, gz;
  int tid;
};

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

PF_HD_INLINE constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------------------------

PF_INLINE float pf_inf() {
#if defined(__CUDACC__)
  return __int_as_float(0x7f800000);
#else
  return std::numeric_limits<float>::infinity();
#endif
}

/// 2^x (ex2.approx: ~2 ulp, 2^-inf = 0).
PF_INLINE float fast_exp2(float x) {
#if defined(__CUDACC__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return std::exp2(x);
#endif
}

PF_INLINE float pf_log2(float x) {
#if defined(__CUDACC__)
  return log2f(x);
#else
  return std::log2(x);
#endif
}

PF_INLINE float pf_max(float a, float b) {
#if defined(__CUDACC__)
  return fmaxf(a, b);
#else
  return a > b ? a : (b > a ? b : a);
#endif
}

// ---------------------------------------------------------------------------------------------
// Element types: 16-bit storage, fp32 math
// ---------------------------------------------------------------------------------------------

#if !defined(__CUDACC__)
namespace emu_detail {
inline uint32_t f2u(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float u2f(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace emu_detail
#endif

struct Bf16 {
  static constexpr DType kDType = DType::kBFloat16;
  PF_INLINE static uint16_t from_float(float f) {
#if defined(__CUDACC__)
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
#else
    uint32_t u = emu_detail::f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
    u += 0x7fffu + ((u >> 16) & 1u);                     // round to nearest even
    return static_cast<uint16_t>(u >> 16);
#endif
  }
  PF_INLINE static float to_float(uint16_t h) {
#if defined(__CUDACC__)
    return __bfloat162float(__ushort_as_bfloat16(h));
#else
    return emu_detail::u2f(static_cast<uint32_t>(h) << 16);
#endif
  }
  /// Two floats as one packed register, `lo` in the low half (the lower-indexed element).
  PF_INLINE static uint32_t pack(float lo, float hi) {
#if defined(__CUDACC__)
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
#else
    return static_cast<uint32_t>(from_float(lo)) | (static_cast<uint32_t>(from_float(hi)) << 16);
#endif
  }
};

struct Fp16 {
  static constexpr DType kDType = DType::kFloat16;
  PF_INLINE static uint16_t from_float(float f) {
#if defined(__CUDACC__)
    return __half_as_ushort(__float2half_rn(f));
#else
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t u;
    std::memcpy(&u, &h, 2);
    return u;
#endif
  }
  PF_INLINE static float to_float(uint16_t h) {
#if defined(__CUDACC__)
    return __half2float(__ushort_as_half(h));
#else
    _Float16 v;
    std::memcpy(&v, &h, 2);
    return static_cast<float>(v);
#endif
  }
  PF_INLINE static uint32_t pack(float lo, float hi) {
#if defined(__CUDACC__)
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
#else
    return static_cast<uint32_t>(from_float(lo)) | (static_cast<uint32_t>(from_float(hi)) << 16);
#endif
  }
};

/// The two halves of a packed register as floats.
template <class T>
PF_INLINE void unpack2(uint32_t v, float& lo, float& hi) {
  lo = T::to_float(static_cast<uint16_t>(v & 0xffffu));
  hi = T::to_float(static_cast<uint16_t>(v >> 16));
}

// ---------------------------------------------------------------------------------------------
// Warp-level primitives
// ---------------------------------------------------------------------------------------------

PF_INLINE void sync_block() {
#if defined(__CUDACC__)
  __syncthreads();
#else
  emu::block_barrier();
#endif
}

PF_INLINE float shfl_xor(float v, int mask) {
#if defined(__CUDACC__)
  return __shfl_xor_sync(0xffffffffu, v, mask);
#else
  return emu::shfl_xor(v, mask);
#endif
}

/// Max / sum over the 4 lanes of a quad (the lanes that share a row of an mma accumulator).
PF_INLINE float quad_max(float v) {
  v = pf_max(v, shfl_xor(v, 1));
  return pf_max(v, shfl_xor(v, 2));
}
PF_INLINE float quad_sum(float v) {
  v += shfl_xor(v, 1);
  return v + shfl_xor(v, 2);
}
PF_INLINE float warp_sum(float v) {
  for (int m = 16; m > 0; m >>= 1) v += shfl_xor(v, m);
  return v;
}
PF_INLINE float warp_max(float v) {
  for (int m = 16; m > 0; m >>= 1) v = pf_max(v, shfl_xor(v, m));
  return v;
}

/// ldmatrix .x4: lane l supplies the address of row (l % 8) of matrix (l / 8); r[i] receives this
/// thread's pair of matrix i (see flash_emu.h for the exact table).
PF_INLINE void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* smem_row) {
#if defined(__CUDACC__)
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#else
  emu::ldmatrix_x4(r, smem_row, false);
#endif
}
PF_INLINE void ldmatrix_x4_trans(uint32_t (&r)[4], const uint16_t* smem_row) {
#if defined(__CUDACC__)
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#else
  emu::ldmatrix_x4(r, smem_row, true);
#endif
}

/// d[16x8 fp32] += a[16x16] * b[16x8] on tensor cores (T = Bf16 or Fp16).
template <class T>
PF_INLINE void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDACC__)
  if constexpr (T::kDType == DType::kBFloat16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#else
  emu::mma_16816(d, a, b0, b1, [](uint16_t h) { return T::to_float(h); });
#endif
}

/// 16-byte global -> shared copy that bypasses registers (and L1); zero-fills when !valid
/// (`src` is then not read). Completes at cp_async_wait.
PF_INLINE void cp_async16(void* smem_dst, const void* gmem_src, bool valid) {
#if defined(__CUDACC__)
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(gmem_src), "r"(src_bytes)
               : "memory");
#else
  emu::cp_async16(smem_dst, gmem_src, valid);
#endif
}
PF_INLINE void cp_async_commit() {
#if defined(__CUDACC__)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
  emu::cp_async_commit();
#endif
}
/// Waits until at most N committed groups are still in flight (this thread's copies only:
/// follow with sync_block before reading other threads' data).
template <int N>
PF_INLINE void cp_async_wait() {
#if defined(__CUDACC__)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#else
  emu::cp_async_wait(N);
#endif
}

// ---------------------------------------------------------------------------------------------
// Checked memory helpers (plain accesses on the device; bounds-checked in the emulation)
// ---------------------------------------------------------------------------------------------

PF_INLINE void st_shared_u32(uint16_t* p, uint32_t v) {
#if defined(__CUDACC__)
  *reinterpret_cast<uint32_t*>(p) = v;
#else
  emu::check_smem(p, 4, 4);
  std::memcpy(p, &v, 4);
#endif
}

/// 16-byte copy from shared to global memory (both 16-byte aligned).
PF_INLINE void copy16_shared_to_global(void* gdst, const uint16_t* ssrc) {
#if defined(__CUDACC__)
  *reinterpret_cast<uint4*>(gdst) = *reinterpret_cast<const uint4*>(ssrc);
#else
  emu::check_smem(ssrc, 16, 16);
  emu::check_global(gdst, 16);
  if (reinterpret_cast<uintptr_t>(gdst) % 16 != 0) emu::fail("misaligned 16-byte global store");
  std::memcpy(gdst, ssrc, 16);
#endif
}

/// 16-byte shared load as 4 packed registers.
PF_INLINE void ld_shared_16(uint32_t (&r)[4], const uint16_t* s) {
#if defined(__CUDACC__)
  const uint4 v = *reinterpret_cast<const uint4*>(s);
  r[0] = v.x;
  r[1] = v.y;
  r[2] = v.z;
  r[3] = v.w;
#else
  emu::check_smem(s, 16, 16);
  std::memcpy(r, s, 16);
#endif
}

template <class V>
PF_INLINE V ld_global(const V* p) {
#if !defined(__CUDACC__)
  emu::check_global(p, sizeof(V));
#endif
  return *p;
}
template <class V>
PF_INLINE void st_global(V* p, V v) {
#if !defined(__CUDACC__)
  emu::check_global(p, sizeof(V));
#endif
  *p = v;
}
/// 4-byte global load of two packed 16-bit elements.
PF_INLINE uint32_t ld_global_u32(const uint16_t* p) {
#if defined(__CUDACC__)
  return *reinterpret_cast<const uint32_t*>(p);
#else
  emu::check_global(p, 4);
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
#endif
}
PF_INLINE void atomic_add_f32(float* p, float v) {
#if defined(__CUDACC__)
  atomicAdd(p, v);
#else
  emu::check_global(p, 4);
  *p += v;
#endif
}

// ---------------------------------------------------------------------------------------------
// Masking: one visible key interval per query row
// ---------------------------------------------------------------------------------------------

struct RowRange {
  int lo, hi;  // visible keys lo..hi inclusive; empty when lo > hi
};

/// The keys query row r sees (MaskParams). Rows outside [0, len_q) see nothing. Monotone: lo and
/// hi never decrease with r inside [0, len_q).
PF_INLINE RowRange row_range(const MaskParams& m, int r, int len_q, int len_k) {
  if (r < 0 || r >= len_q) return {1, 0};
  int64_t lo = 0, hi = len_k - 1;
  const int64_t qpos = static_cast<int64_t>(r) + m.q_offset;
  if (m.cu_seqlens != nullptr) {
    // doc = number of interior boundaries <= r (binary search over cu[1..num_docs-1]), clamped so
    // that a malformed cu_seqlens can only give wrong masks, never out-of-bounds reads.
    int a = 1, b = m.num_docs;  // search in cu[a..b)
    while (a < b) {
      const int mid = (a + b) / 2;
      if (ld_global(m.cu_seqlens + mid) <= r) a = mid + 1;
      else b = mid;
    }
    const int doc = a - 1;
    lo = ld_global(m.cu_seqlens + doc);
    hi = static_cast<int64_t>(ld_global(m.cu_seqlens + doc + 1)) - 1;
  }
  if (m.causal && qpos < hi) hi = qpos;
  if (m.window > 0 && qpos - m.window + 1 > lo) lo = qpos - m.window + 1;
  if (lo < 0) lo = 0;
  if (hi > len_k - 1) hi = len_k - 1;
  if (lo > hi) return {1, 0};
  return {static_cast<int>(lo), static_cast<int>(hi)};
}

// ---------------------------------------------------------------------------------------------
// Tiles: ROWS x D elements in shared memory with a row pitch of D + 8 (the extra 16 bytes put
// the 8 rows an ldmatrix phase reads in 8 different bank groups).
// ---------------------------------------------------------------------------------------------

/// Starts the cp.async copy of rows row0..row0+ROWS-1 of a [len, D] matrix (row stride in
/// elements); rows at or beyond `len` are zero-filled.
template <int ROWS, int D, int NT>
PF_INLINE void load_tile_async(uint16_t* tile, const uint16_t* base, int64_t row_stride, int row0, int len, int tid) {
  constexpr int kChunksPerRow = D / 8;
  constexpr int kPitch = D + 8;
  for (int c = tid; c < ROWS * kChunksPerRow; c += NT) {
    const int r = c / kChunksPerRow, cc = c % kChunksPerRow;
    const int gr = row0 + r;
    const bool valid = gr < len;
    const uint16_t* src = valid ? base + static_cast<int64_t>(gr) * row_stride + cc * 8 : base;
    cp_async16(tile + r * kPitch + cc * 8, src, valid);
  }
}

/// Writes rows row0.. of a staged ROWS x D tile (pitch D + 8) to global memory, skipping rows >= len.
template <int ROWS, int D, int NT>
PF_INLINE void store_tile(uint16_t* base, int64_t row_stride, const uint16_t* tile, int row0, int len, int tid) {
  constexpr int kChunksPerRow = D / 8;
  constexpr int kPitch = D + 8;
  for (int c = tid; c < ROWS * kChunksPerRow; c += NT) {
    const int r = c / kChunksPerRow, cc = c % kChunksPerRow;
    const int gr = row0 + r;
    if (gr < len) copy16_shared_to_global(base + static_cast<int64_t>(gr) * row_stride + cc * 8, tile + r * kPitch + cc * 8);
  }
}

// ---------------------------------------------------------------------------------------------
// Host-side launch of a block function (emulation); the device side is in flash_launch.cuh.
// ---------------------------------------------------------------------------------------------

#if !defined(__CUDACC__)
/// Runs kernel K (static run(params, smem, ctx), kThreads, smem_bytes(params)) over the grid.
template <class K, class P>
void emu_launch(int gx, int gy, int gz, const P& p) {
  const size_t bytes = K::smem_bytes(p);
  std::unique_ptr<char[]> raw(new char[bytes + 128]);
  char* smem = raw.get() + (128 - reinterpret_cast<uintptr_t>(raw.get()) % 128) % 128;
  for (int z = 0; z < gz; ++z)
    for (int y = 0; y < gy; ++y)
      for (int x = 0; x < gx; ++x) {
        std::memset(smem, 0xFF, bytes);  // uninitialised shared memory reads as NaN
        emu::run_block(K::kThreads, smem, bytes, [&](int tid) { K::run(p, smem, BlockCtx{x, y, z, gx, gy, gz, tid}); });
      }
}
#endif

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::attn
