// prism-train plan: the per-rank memory plan of a mid-training or GRPO config (train/plan.h),
// whether it fits a device, and the smallest layout that does. Reads config.json only.
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <tuple>
#include <vector>

#include "prism-train/commands.h"
#include "prism/core/config.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/io/tokenizer.h"
#include "prism/models/causal_lm.h"
#include "prism/rl/grpo.h"
#include "prism/rl/prompts.h"
#include "prism/runtime/runtime.h"
#include "prism/train/plan.h"
#include "prism/train/train_config.h"

namespace prism::cli {

namespace {

/// Exit status of `plan` when the configured layout does not fit.
constexpr int kExitDoesNotFit = 4;

struct PlanOptions {
  std::string config_path;
  std::vector<std::string> sets;
  std::string job = "auto";
  std::string device_memory;
  std::string device = "config";
  int64_t world_size = 0;
};

// A GRPO config is the one with a top-level `rollout:` section.
bool looks_like_rl(const std::string& path) {
  static const std::regex rollout(R"((^|\n)rollout\s*:)");
  // A missing file is reported by load_config like for every other job.
  return fs::exists(path) && std::regex_search(fs::read_file(path), rollout);
}

// Where the job will run: model.device, with auto meaning a GPU (plans are made on login nodes).
std::string planned_device(const std::string& flag, train::DeviceChoice d) {
  if (flag != "config") return flag;
  return d == train::DeviceChoice::kCpu ? "cpu" : "cuda";
}

double budget(const PlanOptions& o, const std::string& configured, const std::string& device, std::string& source) {
  if (!o.device_memory.empty()) {
    source = "--device-memory";
    return train::parse_byte_size(o.device_memory, "--device-memory");
  }
  if (!configured.empty()) {
    source = "model.device_memory";
    return train::parse_byte_size(configured, "model.device_memory");
  }
  if (device == "cpu") {
    source = "available RAM";
    return static_cast<double>(runtime::available_memory_bytes(c10::Device(c10::kCPU)));
  }
  if (runtime::cuda_available()) {
    source = "free memory of cuda:0";
    return static_cast<double>(runtime::available_memory_bytes(c10::Device(c10::kCUDA, 0)));
  }
  source = "assumed (an 80 GB H100; --device-memory to change)";
  return 80e9;
}

int64_t world_from(const PlanOptions& o, const train::DistSection& d) {
  if (o.world_size > 0) return o.world_size;
  if (const char* w = std::getenv("WORLD_SIZE"); w && *w) return std::max<int64_t>(1, std::atoll(w));
  return d.replicate_size > 0 ? d.shard_size * d.replicate_size : d.shard_size;
}

// The shortest and longest rendered prompt of a GRPO config's data (the engine sizes its decode
// cache for the longest + max_new_tokens); {0, 0} when the checkpoint has no tokenizer. Draws
// until every prompt of every domain was drawn once (domain weights repeat some domains before
// others finish an epoch).
std::pair<int64_t, int64_t> prompt_lengths(const rl::RlConfig& cfg, const models::ModelConfig& model) {
  const std::string tok_path = fs::join(cfg.model.path, "tokenizer.json");
  if (!fs::exists(tok_path)) return {0, 0};
  const auto tok = io::Tokenizer::from_file(tok_path);
  const int64_t ctx = model.max_position_embeddings;
  rl::PromptSet prompts(cfg.data, *tok,
                        ctx > 0 ? ctx - cfg.rollout.max_new_tokens : std::numeric_limits<int64_t>::max());
  std::map<std::string, int64_t> left;
  for (const auto& d : prompts.domains()) left[d] = prompts.size(d);
  int64_t shortest = std::numeric_limits<int64_t>::max(), longest = 0, draws = 0;
  while (!left.empty() && draws < 100 * prompts.size()) {
    for (const auto& p : prompts.take(prompts.size())) {
      shortest = std::min(shortest, static_cast<int64_t>(p.tokens.size()));
      longest = std::max(longest, static_cast<int64_t>(p.tokens.size()));
      if (auto it = left.find(p.target.domain); it != left.end() && --it->second == 0) left.erase(it);
    }
    draws += prompts.size();
  }
  return {longest > 0 ? shortest : 0, longest};
}

int cmd_plan(const PlanOptions& o) {
  const bool rl = o.job == "rl" || (o.job == "auto" && looks_like_rl(o.config_path));
  train::MemoryPlanInput in;
  std::string configured, source;
  if (rl) {
    auto cfg = config::load_config<rl::RlConfig>(o.config_path, o.sets);
    const std::string device = planned_device(o.device, cfg.model.device);
    const auto model = models::CausalLM::read_config(cfg.model.path);
    in = rl::plan_input(cfg, model, world_from(o, cfg.dist), device);
    // plan_input set the RL step without prompt lengths (the trainer plans before reading the
    // prompts); here they are tokenized for the tighter rollout and decode-cache figures.
    std::tie(in.shortest_prompt_tokens, in.prompt_tokens) = prompt_lengths(cfg, model);
    configured = cfg.model.device_memory;
  } else {
    auto cfg = config::load_config<train::MidTrainConfig>(o.config_path, o.sets);
    const std::string device = planned_device(o.device, cfg.model.device);
    in = train::plan_input(cfg, models::CausalLM::read_config(cfg.model.path), world_from(o, cfg.dist), device);
    configured = cfg.model.device_memory;
  }
  const double device_bytes = budget(o, configured, in.cuda ? "cuda" : "cpu", source);
  const auto plan = train::plan_memory(in);
  std::cout << train::format_plan(plan, device_bytes);
  std::cout << "device memory: " << train::format_bytes(device_bytes) << " (" << source << ")\n";
  const auto fix = train::suggest_layout(in, device_bytes);
  if (!fix) {
    std::cout << "no layout fits on " << in.world_size << " ranks ("
              << (rl ? "shard sizes up to the world size, activation checkpointing, fewer decode slots"
                     : "shard sizes up to the world size, activation checkpointing, smaller micro-batches")
              << " were tried); plan with more ranks: --world-size N\n";
  } else {
    std::cout << "smallest layout that fits: " << train::layout_change(in, *fix) << "\n";
    if (train::layout_change(in, *fix) != "the configured layout")
      std::cout << train::format_plan(train::plan_memory(*fix), device_bytes);
  }
  return plan.total() <= device_bytes ? 0 : kExitDoesNotFit;
}

}  // namespace

void register_plan_commands(CLI::App& app, Commands& cmds) {
  auto o = std::make_shared<PlanOptions>();
  auto* s = app.add_subcommand("plan",
                               "Per-rank memory plan of a mid or rl config: parameters, gradients, optimizer "
                               "state, activations, buffers, decode cache; whether it fits; the smallest "
                               "layout that does (reads config.json only)");
  s->footer("Exit status: 0 the configured layout fits, 4 it does not, 1 error.");
  s->add_option("--config,-c", o->config_path, "YAML config (configs/mid/*.yaml or configs/rl/*.yaml)")->required();
  s->add_option("--set", o->sets, "Override a key: --set dist.shard_size=8 (repeatable)");
  s->add_option("--device-memory", o->device_memory,
                "Memory per device, e.g. 80GB or 141GiB (default: model.device_memory, else the device's)");
  s->add_option("--world-size", o->world_size,
                "Ranks (default: $WORLD_SIZE, else dist.shard_size x dist.replicate_size)")
      ->check(CLI::PositiveNumber);
  s->add_option("--device", o->device, "config (model.device; auto plans for CUDA) | cuda | cpu")
      ->capture_default_str()
      ->check(CLI::IsMember({"config", "cuda", "cpu"}));
  s->add_option("--job", o->job, "auto (rl when the config has a rollout section) | mid | rl")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "mid", "rl"}));
  cmds.add(s, [o] { return cmd_plan(*o); });
}

}  // namespace prism::cli
