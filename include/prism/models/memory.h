// Will a model fit? Parameter bytes computed from the config alone, checked against the memory
// the device has left, before anything is allocated. Without it an absurd config (10^6 layers,
// a typo'd hidden_size) grows until the OOM killer ends the job with no message, or dies in the
// allocator with a raw "DefaultCPUAllocator: can't allocate memory".
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

#include "prism/models/model_config.h"

namespace prism::models {

/// Bytes of `copies` parameter-sized tensors of `cfg` in `dtype` (copies = 1: the weights; a
/// trainer with AdamW passes what it holds per parameter, e.g. weights + grads + two fp32 moments).
double parameter_bytes(const ModelConfig& cfg, c10::ScalarType dtype, double copies = 1.0);

/// Throws prism::Error when parameter_bytes(cfg, dtype, copies) exceeds
/// runtime::available_memory_bytes(device) (MemAvailable or the cgroup limit for CPU, device
/// memory for CUDA; "meta" and unknown amounts always pass). The message names `source` (the
/// config.json, when known), the keys that size the model (num_hidden_layers, hidden_size,
/// intermediate_size, vocab_size) with their values, and how the bytes split between them.
/// CausalLM::from_config and from_pretrained call it with copies = 1.
void check_fits(const ModelConfig& cfg, c10::ScalarType dtype, const c10::Device& device, double copies = 1.0,
                const std::string& source = "");

}  // namespace prism::models
