// check_fits: parameter bytes from the config against the device's free memory (memory.h).
#include "prism/models/memory.h"

#include <c10/core/ScalarType.h>

#include <cstdio>
#include <string>

#include "prism/core/error.h"
#include "prism/models/causal_lm.h"
#include "prism/runtime/runtime.h"

namespace prism::models {
namespace {

std::string gib(double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

}  // namespace

double parameter_bytes(const ModelConfig& cfg, c10::ScalarType dtype, double copies) {
  return CausalLM::parameter_count(cfg) * static_cast<double>(c10::elementSize(dtype)) * copies;
}

void check_fits(const ModelConfig& cfg, c10::ScalarType dtype, const c10::Device& device, double copies,
                const std::string& source) {
  const int64_t available = runtime::available_memory_bytes(device);
  if (available <= 0) return;  // unknown: nothing to compare with
  const double need = parameter_bytes(cfg, dtype, copies);
  if (need <= static_cast<double>(available)) return;
  // Say which keys the bytes come from: the vocabulary matrices or the layers.
  ModelConfig no_layers = cfg;
  no_layers.layers.clear();
  const double outside = parameter_bytes(no_layers, dtype, copies);
  const bool layers_dominate = need - outside >= outside;
  throw Error(str("the model does not fit: its parameters need ", gib(need), " (", runtime::dtype_name(dtype),
                  copies != 1.0 ? str(" x ", copies, " copies") : std::string(), ") but ", device.str(), " has ",
                  gib(static_cast<double>(available)), " available; ", gib(need - outside),
                  " in num_hidden_layers = ", cfg.num_layers(), " layers (hidden_size = ", cfg.hidden_size,
                  ", intermediate_size = ", cfg.intermediate_size, "), ", gib(outside),
                  " in the embeddings (vocab_size = ", cfg.vocab_size, " x hidden_size = ", cfg.hidden_size, ")"),
              key_context(source, layers_dominate ? "num_hidden_layers" : "vocab_size"));
}

}  // namespace prism::models
