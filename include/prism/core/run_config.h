// The job configs prism-train reads today, declared once for YAML, dumps, validation and docs.
//
// Why here (core) and not in tools/: library users and tests build these structs directly in
// C++ too, and the resolved config must be writable into every run directory by the library.
// Sections are reusable: later jobs (train, rl) compose ModelSection with their own sections.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "prism/core/config.h"

namespace prism {

/// Which checkpoint to load, and where and in what precision to run it.
struct ModelSection {
  std::string path;            ///< HF checkpoint directory (config.json + *.safetensors); required
  std::string dtype = "fp32";  ///< fp32 | bf16
  std::string device = "cpu";  ///< cpu | cuda | auto (cuda when available)

  bool operator==(const ModelSection&) const = default;
  void visit(config::Visitor& v) {
    v.field("path", path, config::required(), "HF checkpoint directory (config.json + *.safetensors)");
    v.field("dtype", dtype, config::one_of({"fp32", "bf16"}), "parameter and activation dtype");
    v.field("device", device, config::one_of({"cpu", "cuda", "auto"}), "auto: cuda when available, else cpu");
  }
};

/// Sampling settings for generation from token ids.
struct GenerateSection {
  std::vector<std::int64_t> prompt_ids;  ///< prompt token ids; required, non-empty
  std::int64_t max_new_tokens = 16;      ///< tokens generated after the prompt
  double temperature = 0.0;              ///< 0 = greedy
  double top_p = 1.0;                    ///< nucleus sampling mass, (0, 1]
  std::int64_t seed = 0;                 ///< sampling RNG seed (unused when greedy)

  bool operator==(const GenerateSection&) const = default;
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("prompt_ids", prompt_ids, required() & non_empty() & non_negative(), "prompt token ids");
    v.field("max_new_tokens", max_new_tokens, positive(), "tokens generated after the prompt");
    v.field("temperature", temperature, non_negative(), "softmax temperature; 0 = greedy");
    v.field("top_p", top_p, greater_than(0) & at_most(1), "nucleus sampling probability mass");
    v.field("seed", seed, non_negative(), "sampling RNG seed (unused when greedy)");
  }
};

/// `prism-train run` for a generation job: load a model, generate, write into output_dir.
struct GenerateJobConfig {
  std::string output_dir;  ///< run directory; the resolved config is saved there as config.yaml
  ModelSection model;
  GenerateSection generate;

  bool operator==(const GenerateJobConfig&) const = default;
  void visit(config::Visitor& v) {
    v.field("output_dir", output_dir, config::required(), "run directory; the resolved config is saved there");
    v.field("model", model, "checkpoint to load");
    v.field("generate", generate, "generation settings");
  }
};

}  // namespace prism
