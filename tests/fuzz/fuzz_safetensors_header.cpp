// libFuzzer target for the safetensors header parser (src/io/safetensors_header.cpp), the only
// code that interprets untrusted checkpoint bytes. Built without LibTorch by run_fuzz.sh.
//
// Contract under test: for ANY bytes, parse_safetensors_header either returns a header whose
// tensors tile the buffer exactly, or throws prism::Error. Any other exception, a crash, or an
// ASan/UBSan report is a finding; so is a returned header that breaks the invariants below,
// because safetensors.cpp creates tensor views from it without further checks.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#define PRISM_IO_SAFETENSORS_NO_TORCH
#include "prism/core/error.h"
#include "prism/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  prism::io::SafetensorsHeader h;
  try {
    h = prism::io::parse_safetensors_header(data, size, "fuzz.safetensors");
  } catch (const prism::Error& e) {
    // Messages must stay bounded even for a 100 MB header (no dumping of whole values).
    if (std::string(e.what()).size() > 4096) std::abort();
    return 0;
  }
  // Invariants of an accepted header.
  if (h.data_offset() > size) std::abort();
  const uint64_t buffer = size - h.data_offset();
  uint64_t cursor = 0;
  for (const auto& t : h.tensors) {
    if (t.begin != cursor || t.end < t.begin || t.end > buffer) std::abort();
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) std::abort();
      numel *= static_cast<uint64_t>(d);  // cannot overflow: validated by the parser
    }
    if (numel * prism::io::safetensors_dtype_size(t.dtype) != t.end - t.begin) std::abort();
    cursor = t.end;
  }
  if (cursor != buffer) std::abort();
  return 0;
}
