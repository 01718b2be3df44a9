// Host emulation of the few CUDA primitives the attention kernels use, so that the very same
// kernel code (flash_*.cuh compiled by the host compiler with PRISM_FLASH_EMULATE) runs on a CPU
// in tests/ops/test_attention_emu.cpp. It exists because the kernels are written on machines
// without a GPU: fragment layouts, masks, pipelining and index arithmetic get checked against the
// ATen reference before the kernels ever meet an H100.
//
// Model: one block at a time; every CUDA thread is a fiber (ucontext) on the calling OS thread.
// Fibers of a warp run round-robin until each reaches __syncthreads (or exits), warp by warp;
// a warp collective (mma, ldmatrix, shuffle) is two warp barriers around an exchange through
// per-lane slots, so it sees exactly the operands of all 32 lanes, like the hardware.
// The emulation is deliberately strict:
//   - mma.sync / ldmatrix are evaluated from the PTX ISA fragment tables (not from the kernel's
//     own assumptions), element by element;
//   - cp.async writes NaN bytes (0xFF) into its shared-memory destination at issue and the real
//     bytes only at cp.async.wait_group, so reading a tile before waiting, or overwriting a tile
//     other warps still read (missing __syncthreads), shows up as NaN in the results;
//   - shared memory starts as NaN bytes; every shared/global access the kernels make through the
//     helpers is bounds- and alignment-checked (globals against ranges the test registers);
//   - a collective that not all lanes reach, or a __syncthreads reached by part of the block, aborts.
// Errors abort the process with a message: they are kernel bugs, not recoverable conditions.
#pragma once

#if defined(__CUDACC__)
#error "flash_emu.h is the host emulation; device code uses the real intrinsics"
#endif

#include <ucontext.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

namespace prism::kernels::attn::emu {

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "flash emulator: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

struct Copy16 {
  char* dst;
  unsigned char data[16];
};

enum class FiberState { kReady, kWaitWarp, kAtBlock, kDone };

struct Fiber {
  ucontext_t ctx{};
  std::unique_ptr<char[]> stack;
  FiberState state = FiberState::kReady;
  std::vector<std::vector<Copy16>> groups;  // committed cp.async groups, oldest first
  std::vector<Copy16> open;                 // issued, not yet committed
};

constexpr int kSlotBytes = 64;
constexpr size_t kStackBytes = 256 * 1024;

struct BlockState {
  int nthreads = 0;
  char* smem = nullptr;
  size_t smem_bytes = 0;
  std::vector<Fiber> fibers;
  ucontext_t sched{};
  int current = -1;
  std::vector<int> warp_arrived;
  std::vector<unsigned char> slots;
  std::function<void(int)> body;
};

struct GlobalRange {
  const char* lo;
  const char* hi;
};

inline BlockState*& state() {
  static BlockState* s = nullptr;
  return s;
}
inline std::vector<GlobalRange>& globals() {
  static std::vector<GlobalRange> g;
  return g;
}

/// Registers a global-memory allocation the kernels may touch; while any is registered, every
/// checked global access must fall inside one of them.
inline void register_global(const void* p, size_t bytes) {
  globals().push_back({static_cast<const char*>(p), static_cast<const char*>(p) + bytes});
}
inline void clear_globals() { globals().clear(); }

inline void check_global(const void* p, size_t bytes) {
  if (globals().empty()) return;
  const char* c = static_cast<const char*>(p);
  for (const auto& r : globals())
    if (c >= r.lo && c + bytes <= r.hi) return;
  fail("global memory access outside every registered allocation");
}

inline void check_smem(const void* p, size_t bytes, size_t align) {
  auto& s = *state();
  const char* c = static_cast<const char*>(p);
  if (c < s.smem || c + bytes > s.smem + s.smem_bytes) fail("shared memory access out of bounds");
  if (reinterpret_cast<uintptr_t>(c) % align != 0) fail("misaligned shared memory access");
}

inline int current_tid() { return state()->current; }

inline void yield() {
  auto& s = *state();
  swapcontext(&s.fibers[s.current].ctx, &s.sched);
}

inline void warp_barrier() {
  auto& s = *state();
  const int w = s.current / 32;
  if (++s.warp_arrived[w] == 32) {
    s.warp_arrived[w] = 0;
    for (int l = 0; l < 32; ++l) {
      auto& f = s.fibers[w * 32 + l];
      if (f.state == FiberState::kWaitWarp) f.state = FiberState::kReady;
    }
  } else {
    s.fibers[s.current].state = FiberState::kWaitWarp;
    yield();
  }
}

inline void block_barrier() {
  auto& s = *state();
  s.fibers[s.current].state = FiberState::kAtBlock;
  yield();
}

template <class T>
void put_slot(const T& v) {
  static_assert(sizeof(T) <= kSlotBytes);
  auto& s = *state();
  std::memcpy(&s.slots[static_cast<size_t>(s.current) * kSlotBytes], &v, sizeof(T));
}
template <class T>
T get_slot(int lane) {  // lane of the calling thread's warp
  auto& s = *state();
  T v;
  std::memcpy(&v, &s.slots[static_cast<size_t>((s.current / 32) * 32 + lane) * kSlotBytes], sizeof(T));
  return v;
}

inline float shfl_xor(float v, int mask) {
  put_slot(v);
  warp_barrier();
  const float r = get_slot<float>((current_tid() % 32) ^ mask);
  warp_barrier();
  return r;
}

inline uint16_t ld_u16(const char* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

/// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i..8i+7 give the row addresses of
/// matrix i; each thread receives, per matrix, the pair (row lane/4, cols 2(lane%4), +1) of the
/// matrix (of its transpose with .trans).
inline void ldmatrix_x4(uint32_t (&r)[4], const void* addr, bool trans) {
  check_smem(addr, 16, 16);
  put_slot(addr);
  warp_barrier();
  const int lane = current_tid() % 32;
  for (int i = 0; i < 4; ++i) {
    uint16_t lo, hi;
    if (!trans) {
      const char* row = static_cast<const char*>(get_slot<const void*>(i * 8 + lane / 4));
      lo = ld_u16(row + 2 * (2 * (lane % 4)));
      hi = ld_u16(row + 2 * (2 * (lane % 4) + 1));
    } else {
      const char* r0 = static_cast<const char*>(get_slot<const void*>(i * 8 + 2 * (lane % 4)));
      const char* r1 = static_cast<const char*>(get_slot<const void*>(i * 8 + 2 * (lane % 4) + 1));
      lo = ld_u16(r0 + 2 * (lane / 4));
      hi = ld_u16(r1 + 2 * (lane / 4));
    }
    r[i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  warp_barrier();
}

struct MmaOperands {
  uint32_t a[4];
  uint32_t b[2];
};

/// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32, d += a * b, with the PTX ISA
/// fragment tables (groupID = lane >> 2, tig = lane % 4):
///   A 16x16: reg 0 (row g, cols 2tig..+1), reg 1 (row g+8, same cols), reg 2 (row g, cols 2tig+8..+9), reg 3 (row g+8, ...)
///   B 16x8:  reg 0 (rows k = 2tig..+1, col g), reg 1 (rows 2tig+8..+9, col g)
///   C 16x8:  c0,c1 (row g, cols 2tig..+1), c2,c3 (row g+8, cols 2tig..+1)
/// Lower-indexed elements sit in the low 16 bits.
template <class ToFloat>
void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, ToFloat to_float) {
  MmaOperands mine{{a[0], a[1], a[2], a[3]}, {b0, b1}};
  put_slot(mine);
  warp_barrier();
  auto A = [&](int row, int k) {
    const int reg = (row < 8 ? 0 : 1) + (k < 8 ? 0 : 2);
    const auto ops = get_slot<MmaOperands>((row % 8) * 4 + (k % 8) / 2);
    return to_float(static_cast<uint16_t>(k % 2 ? ops.a[reg] >> 16 : ops.a[reg] & 0xFFFFu));
  };
  auto B = [&](int k, int n) {
    const auto ops = get_slot<MmaOperands>(n * 4 + (k % 8) / 2);
    const uint32_t v = ops.b[k < 8 ? 0 : 1];
    return to_float(static_cast<uint16_t>(k % 2 ? v >> 16 : v & 0xFFFFu));
  };
  const int lane = current_tid() % 32, g = lane / 4, t = lane % 4;
  float out[4];
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i % 2);
    float acc = d[i];
    for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);
    out[i] = acc;
  }
  warp_barrier();
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

inline void cp_async16(void* dst, const void* src, bool valid) {
  check_smem(dst, 16, 16);
  Copy16 c;
  c.dst = static_cast<char*>(dst);
  if (valid) {
    check_global(src, 16);
    if (reinterpret_cast<uintptr_t>(src) % 16 != 0) fail("misaligned cp.async global source");
    std::memcpy(c.data, src, 16);
  } else {
    std::memset(c.data, 0, 16);
  }
  auto& f = state()->fibers[current_tid()];
  f.open.push_back(c);
  std::memset(dst, 0xFF, 16);  // NaN until waited for
}
inline void cp_async_commit() {
  auto& f = state()->fibers[current_tid()];
  f.groups.push_back(std::move(f.open));
  f.open.clear();
}
inline void cp_async_wait(int n) {
  auto& f = state()->fibers[current_tid()];
  while (static_cast<int>(f.groups.size()) > n) {
    for (const auto& c : f.groups.front()) std::memcpy(c.dst, c.data, 16);
    f.groups.erase(f.groups.begin());
  }
}

inline void fiber_entry() {
  auto& s = *state();
  s.body(s.current);
  s.fibers[s.current].state = FiberState::kDone;
  // returning resumes uc_link (the scheduler)
}

/// Runs one block of `nthreads` threads over `smem` to completion.
inline void run_block(int nthreads, char* smem, size_t smem_bytes, std::function<void(int)> body) {
  if (nthreads % 32 != 0 || nthreads <= 0) fail("block size must be a positive multiple of 32");
  BlockState s;
  s.nthreads = nthreads;
  s.smem = smem;
  s.smem_bytes = smem_bytes;
  s.fibers.resize(nthreads);
  s.warp_arrived.assign(nthreads / 32, 0);
  s.slots.assign(static_cast<size_t>(nthreads) * kSlotBytes, 0);
  s.body = std::move(body);
  BlockState* prev = state();
  state() = &s;
  for (auto& f : s.fibers) {
    f.stack.reset(new char[kStackBytes]);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.get();
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &s.sched;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  const int nwarps = nthreads / 32;
  for (;;) {
    for (int w = 0; w < nwarps; ++w) {
      for (;;) {
        bool ran = false;
        for (int l = 0; l < 32; ++l) {
          const int i = w * 32 + l;
          if (s.fibers[i].state != FiberState::kReady) continue;
          s.current = i;
          swapcontext(&s.sched, &s.fibers[i].ctx);
          ran = true;
        }
        bool settled = true;
        for (int l = 0; l < 32; ++l) {
          const auto st = s.fibers[w * 32 + l].state;
          settled = settled && (st == FiberState::kAtBlock || st == FiberState::kDone);
        }
        if (settled) break;
        if (!ran) fail("warp collective not reached by all 32 lanes (divergent mma/ldmatrix/shuffle)");
      }
    }
    int done = 0;
    for (const auto& f : s.fibers) done += f.state == FiberState::kDone;
    if (done == nthreads) break;
    if (done > 0) fail("__syncthreads reached by only part of the block");
    for (auto& f : s.fibers) f.state = FiberState::kReady;
  }
  for (const auto& f : s.fibers)
    if (!f.groups.empty() || !f.open.empty()) fail("cp.async copies outstanding at kernel exit");
  state() = prev;
}

}  // namespace prism::kernels::attn::emu
