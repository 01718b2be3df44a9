// Torch-side helpers every job needs and core (torch-free) cannot hold: one dtype parser, one
// device resolver, generator state save/restore (CPU and CUDA), and memory readouts. Each exists
// once here so the CLI, the trainer, the rollout engine and the benchmarks agree on spelling and
// on error messages.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

namespace prism::runtime {

/// "fp32" | "float32" | "bf16" | "bfloat16" | "fp16" | "float16" | "fp64" | "float64" -> ScalarType.
/// `key` names where the string came from (a config key path or a CLI flag) for the error.
c10::ScalarType parse_dtype(const std::string& s, const std::string& key = "dtype");
/// Short name: fp32, bf16, fp16, fp64.
std::string dtype_name(c10::ScalarType t);
/// The name transformers writes in config.json (`torch_dtype` / `dtype`): float32, bfloat16, ...
std::string hf_dtype_name(c10::ScalarType t);

/// Whether a usable CUDA device exists (CUDA libraries loaded and at least one device).
bool cuda_available();
/// "cpu" | "cuda" | "cuda:N" | "auto" -> a concrete device. "cuda" means cuda:local_rank, "auto"
/// means that when a GPU exists, else cpu. Throws (naming `key`) for CUDA without a GPU or junk.
c10::Device resolve_device(const std::string& spec, int local_rank = 0, const std::string& key = "device");

/// Generator state of the default CPU generator and, when `device` is CUDA, of that device's
/// default generator, as hex strings (empty `cuda` for CPU runs). Restoring makes every later
/// random draw repeat, which exact resume relies on.
struct RngState {
  std::string cpu;
  std::string cuda;
};
RngState save_rng_state(const c10::Device& device);
/// Throws when `state` has CUDA state but `device` is not CUDA (or the reverse).
void restore_rng_state(const RngState& state, const c10::Device& device);

/// Memory a new allocation on `device` can still get, in bytes: for CPU, MemAvailable of
/// /proc/meminfo (or less: the room under this process's cgroup v2 memory.max); for CUDA, device
/// memory minus what this process's caching allocator holds; the "meta" device: INT64_MAX.
/// 0 where unknown.
int64_t available_memory_bytes(const c10::Device& device);

/// Resident set size of this process now, and its peak (VmHWM), in bytes (0 where unknown).
int64_t cpu_rss_bytes();
int64_t cpu_peak_rss_bytes();
/// Peak bytes held by the CUDA caching allocator on `device`; for CPU, cpu_peak_rss_bytes().
int64_t peak_memory_bytes(const c10::Device& device);

}  // namespace prism::runtime
