#include "prism/runtime/runtime.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <ATen/ops/empty.h>

#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "prism/core/error.h"
#include "prism/core/fs.h"

namespace prism::runtime {

#ifdef PRISM_HAS_CUDA_KERNELS
int64_t cuda_peak_allocated_bytes(int device);  // runtime_cuda.cpp (needs the CUDA allocator headers)
#endif

c10::ScalarType parse_dtype(const std::string& s, const std::string& key) {
  if (s == "fp32" || s == "float32") return c10::ScalarType::Float;
  if (s == "bf16" || s == "bfloat16") return c10::ScalarType::BFloat16;
  if (s == "fp16" || s == "float16") return c10::ScalarType::Half;
  if (s == "fp64" || s == "float64") return c10::ScalarType::Double;
  throw Error(str(key, ": unknown dtype '", s, "' (expected fp32, bf16, fp16 or fp64)"));
}

std::string dtype_name(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Float: return "fp32";
    case c10::ScalarType::BFloat16: return "bf16";
    case c10::ScalarType::Half: return "fp16";
    case c10::ScalarType::Double: return "fp64";
    default: return c10::toString(t);
  }
}

std::string hf_dtype_name(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::BFloat16: return "bfloat16";
    case c10::ScalarType::Half: return "float16";
    case c10::ScalarType::Double: return "float64";
    default: return "float32";
  }
}

bool cuda_available() {
  const auto& hooks = at::detail::getCUDAHooks();
  return hooks.hasCUDA() && hooks.deviceCount() > 0;
}

c10::Device resolve_device(const std::string& spec, int local_rank, const std::string& key) {
  if (spec == "cpu") return c10::Device(c10::kCPU);
  if (spec == "auto") return cuda_available() ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank))
                                              : c10::Device(c10::kCPU);
  if (spec == "cuda" || spec.rfind("cuda:", 0) == 0) {
    if (!cuda_available()) throw Error(str(key, ": '", spec, "' requested but no CUDA device is available"));
    int index = local_rank;
    if (spec.size() > 5) {
      char* end = nullptr;
      long v = std::strtol(spec.c_str() + 5, &end, 10);
      if (*end != '\0' || v < 0) throw Error(str(key, ": bad device '", spec, "' (expected cuda:N)"));
      index = static_cast<int>(v);
    }
    const auto count = at::detail::getCUDAHooks().deviceCount();
    if (index >= count)
      throw Error(str(key, ": device cuda:", index, " requested but only ", count, " CUDA device(s) exist"));
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw Error(str(key, ": unknown device '", spec, "' (expected cpu, cuda, cuda:N or auto)"));
}

namespace {

std::string to_hex(const at::Tensor& bytes) {
  static const char* digits = "0123456789abcdef";
  auto t = bytes.contiguous();
  const auto* p = t.data_ptr<uint8_t>();
  std::string out;
  out.reserve(static_cast<size_t>(t.numel()) * 2);
  for (int64_t i = 0; i < t.numel(); ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

at::Tensor from_hex(const std::string& s, const char* what) {
  PRISM_CHECK(s.size() % 2 == 0, what, " RNG state: odd number of hex digits");
  auto t = at::empty({static_cast<int64_t>(s.size() / 2)}, at::TensorOptions().dtype(at::kByte));
  auto* p = t.data_ptr<uint8_t>();
  auto val = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw Error(str(what, " RNG state: '", c, "' is not a hex digit"));
  };
  for (size_t i = 0; i < s.size(); i += 2) p[i / 2] = static_cast<uint8_t>(val(s[i]) * 16 + val(s[i + 1]));
  return t;
}

}  // namespace

RngState save_rng_state(const c10::Device& device) {
  RngState st;
  st.cpu = to_hex(at::detail::getDefaultCPUGenerator().get_state());
  if (device.is_cuda()) st.cuda = to_hex(at::globalContext().defaultGenerator(device).get_state());
  return st;
}

void restore_rng_state(const RngState& st, const c10::Device& device) {
  PRISM_CHECK(!st.cpu.empty(), "RNG state: no CPU generator state");
  PRISM_CHECK(st.cuda.empty() || device.is_cuda(), "RNG state has CUDA generator state but the run is on ",
              device.str(), " (a GPU checkpoint resumed on CPU would not repeat its random draws)");
  PRISM_CHECK(!st.cuda.empty() || !device.is_cuda(), "RNG state has no CUDA generator state but the run is on ",
              device.str());
  // Generator is a handle: a copy shares the generator it names, so setting its state sets the default's.
  at::Generator cpu = at::detail::getDefaultCPUGenerator();
  cpu.set_state(from_hex(st.cpu, "CPU"));
  if (device.is_cuda()) {
    at::Generator cuda = at::globalContext().defaultGenerator(device);
    cuda.set_state(from_hex(st.cuda, "CUDA"));
  }
}

namespace {
// A "Vm...:  1234 kB" line of /proc/self/status, in bytes.
int64_t proc_status_kb(const char* field) {
  std::string s;
  try {
    s = fs::read_file("/proc/self/status");
  } catch (const std::exception&) {
    return 0;
  }
  auto pos = s.find(field);
  if (pos == std::string::npos) return 0;
  long long kb = 0;
  if (std::sscanf(s.c_str() + pos + std::strlen(field), " %lld", &kb) != 1) return 0;
  return static_cast<int64_t>(kb) * 1024;
}
}  // namespace

int64_t cpu_rss_bytes() { return proc_status_kb("VmRSS:"); }
int64_t cpu_peak_rss_bytes() { return proc_status_kb("VmHWM:"); }

int64_t peak_memory_bytes(const c10::Device& device) {
#ifdef PRISM_HAS_CUDA_KERNELS
  if (device.is_cuda()) return cuda_peak_allocated_bytes(device.index() < 0 ? 0 : device.index());
#endif
  return cpu_peak_rss_bytes();
}

}  // namespace prism::runtime
