// Host emulation of CUDA thread blocks for the SIMT kernels (see device_compat.cuh): every CUDA
// thread of a block is an OS thread, __syncthreads is a std::barrier over the block, a warp
// shuffle is an exchange through 32 slots between two barriers over the warp. Blocks run one
// after another. Threads that return early drop out of their barriers (as exited threads do on
// the hardware). Dynamic shared memory starts as 0xFF bytes (NaN in every float type), so a read
// before a write shows up in the results. Test-only; slow but exact about what each thread sees.
#pragma once

#if defined(__CUDACC__)
#error "block_emu.h is the host emulation; device code uses the real intrinsics"
#endif

#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

namespace prism::kernels::emu {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

struct ThreadState {
  Dim3 thread_idx, block_idx, block_dim, grid_dim;
  std::barrier<>* block = nullptr;
  std::barrier<>* warp = nullptr;
  uint64_t* slots = nullptr;  // the warp's 32 exchange slots
  unsigned char* smem = nullptr;
  int lane = 0;
};

inline ThreadState& tls() {
  thread_local ThreadState s;
  return s;
}

inline void syncthreads() { tls().block->arrive_and_wait(); }

template <typename T>
T shfl_xor(T v, int lane_mask) {
  static_assert(sizeof(T) <= sizeof(uint64_t));
  auto& t = tls();
  std::memcpy(&t.slots[t.lane], &v, sizeof(T));
  t.warp->arrive_and_wait();
  T r;
  std::memcpy(&r, &t.slots[(t.lane ^ lane_mask) & 31], sizeof(T));
  t.warp->arrive_and_wait();
  return r;
}

/// __shfl_up_sync: the value of lane - delta, or the caller's own value for lanes < delta.
template <typename T>
T shfl_up(T v, int delta) {
  static_assert(sizeof(T) <= sizeof(uint64_t));
  auto& t = tls();
  std::memcpy(&t.slots[t.lane], &v, sizeof(T));
  t.warp->arrive_and_wait();
  T r;
  std::memcpy(&r, &t.slots[t.lane >= delta ? t.lane - delta : t.lane], sizeof(T));
  t.warp->arrive_and_wait();
  return r;
}

template <typename T>
T* dynamic_smem() {
  return reinterpret_cast<T*>(tls().smem);
}

/// kernel<<<grid, block, smem_bytes>>>(args...), synchronously.
template <typename Kernel, typename... Args>
void launch(Dim3 grid, Dim3 block, size_t smem_bytes, Kernel kernel, Args... args) {
  const unsigned n = block.x * block.y * block.z;
  if (n == 0 || n > 1024) std::abort();
  const unsigned num_warps = (n + 31) / 32;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::barrier<> block_bar(static_cast<std::ptrdiff_t>(n));
        std::vector<std::unique_ptr<std::barrier<>>> warp_bars;
        for (unsigned w = 0; w < num_warps; ++w) {
          const unsigned lanes = w + 1 < num_warps ? 32u : n - 32u * w;
          warp_bars.push_back(std::make_unique<std::barrier<>>(static_cast<std::ptrdiff_t>(lanes)));
        }
        std::vector<uint64_t> slots(32 * num_warps);
        std::vector<unsigned char> smem(smem_bytes + 16, 0xFF);
        std::vector<std::thread> threads;
        threads.reserve(n);
        for (unsigned tid = 0; tid < n; ++tid) {
          threads.emplace_back([&, tid] {
            auto& t = tls();
            t.thread_idx = Dim3{tid % block.x, (tid / block.x) % block.y, tid / (block.x * block.y)};
            t.block_idx = Dim3{bx, by, bz};
            t.block_dim = block;
            t.grid_dim = grid;
            t.block = &block_bar;
            t.warp = warp_bars[tid / 32].get();
            t.slots = slots.data() + 32 * (tid / 32);
            t.smem = smem.data();
            t.lane = static_cast<int>(tid % 32);
            kernel(args...);
            t.warp->arrive_and_drop();
            t.block->arrive_and_drop();
          });
        }
        for (auto& th : threads) th.join();
      }
}

}  // namespace prism::kernels::emu
