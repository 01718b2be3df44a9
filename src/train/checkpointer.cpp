// Checkpointer (include/prism/train/checkpointer.h).
#include "prism/train/checkpointer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <thread>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/log.h"
#include "prism/models/causal_lm.h"
#include "prism/train/checkpoint_dir.h"
#include "prism/train/model_setup.h"
#include "prism/train/optimizer.h"
#include "prism/train/run_context.h"

namespace prism::train {

namespace {

ErrorContext file_context(const std::string& file) {
  ErrorContext c;
  c.file = file;
  return c;
}

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kFailed = "\x01";  // prefix of a broadcast "rank 0 failed" message

uint64_t tree_bytes(const std::string& path) {
  if (!fs::is_directory(path)) return fs::is_regular_file(path) ? fs::file_size(path) : 0;
  uint64_t n = 0;
  for (const auto& e : fs::list_dir(path)) n += tree_bytes(fs::join(path, e));
  return n;
}

// `<name>.tmp.<digits>`: the temp name of fs::write_file_atomic and CausalLM::save_pretrained.
bool is_write_temp(const std::string& name) {
  const auto at = name.rfind(".tmp.");
  if (at == std::string::npos || at + 5 >= name.size()) return false;
  return std::all_of(name.begin() + static_cast<std::ptrdiff_t>(at + 5), name.end(),
                     [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

Checkpointer::Checkpointer(RunContext& ctx, std::string output_dir, const CheckpointSection& cfg,
                           CheckpointFaults faults)
    : ctx_(ctx), output_dir_(std::move(output_dir)), cfg_(cfg), faults_(faults) {}

std::string Checkpointer::resolve_resume(const std::string& resume) const {
  if (resume.empty()) {
    auto existing = CheckpointDir::latest_complete(output_dir_);
    PRISM_CHECK(!existing, output_dir_, ": already holds checkpoint ", existing.value_or(""),
                "; pass --resume auto to continue it, or choose another output_dir");
    return "";
  }
  if (resume == "auto") return CheckpointDir::latest_complete(output_dir_).value_or("");
  PRISM_CHECK(fs::exists(fs::join(resume, CheckpointDir::kCompleteMarker)), resume,
              ": not a complete checkpoint (no COMPLETE marker)");
  return resume;
}

void Checkpointer::remove_stale_temps() {
  if (!ctx_.is_main()) return;
  CheckpointDir(output_dir_).remove_stale_temps(/*all=*/true);
  if (!fs::is_directory(output_dir_)) return;
  for (const auto& name : fs::list_dir(output_dir_)) {
    if (!is_write_temp(name)) continue;
    log::info(str("removing a temp left by an interrupted write: ", fs::join(output_dir_, name)));
    fs::remove_all(fs::join(output_dir_, name));
  }
}

uint64_t Checkpointer::estimate_bytes(const models::CausalLM& model) const {
  if (auto dir = CheckpointDir::latest_complete(output_dir_)) return tree_bytes(*dir) + (1u << 20);
  const uint64_t n = static_cast<uint64_t>(model.num_parameters());
  const uint64_t elem = model.dtype() == c10::ScalarType::Float ? 4 : 2;
  // fp32 master weights + two moments; tokenizer and config files are small: 1 MiB of slack.
  return n * (elem + 12) + (1u << 20);
}

void Checkpointer::check_space(const models::CausalLM& model) {
  std::string err;
  if (ctx_.is_main()) {
    CheckpointDir ck(output_dir_, static_cast<int>(cfg_.keep_last));
    const uint64_t need = estimate_bytes(model);
    const uint64_t free = ck.free_bytes();
    // What save() may prune before writing: all but the newest keep_last - 1 (nothing is pruned
    // here: the newest checkpoint may be the one this run resumes from).
    uint64_t reclaimable = 0;
    const auto steps = CheckpointDir::complete_steps(output_dir_);
    if (cfg_.keep_last > 0)
      for (size_t i = 0; i + static_cast<size_t>(cfg_.keep_last - 1) < steps.size(); ++i)
        reclaimable += tree_bytes(ck.path_for(steps[i]));
    if (free + reclaimable < need)
      err = str(ck.root(), ": not enough disk space for a checkpoint: one needs about ", format_bytes(need), ", ",
                format_bytes(free), " are free", reclaimable ? str(" (+", format_bytes(reclaimable), " prunable)") : "",
                "; free space, lower checkpoint.keep_last, or move output_dir");
  }
  err = ctx_.broadcast_string(err);
  if (!err.empty()) throw Error(err);
}

std::string Checkpointer::save(const models::CausalLM& model, const DistributedAdamW& opt, const TrainerState& state,
                               const std::string& config_yaml,
                               const std::vector<std::pair<std::string, const models::CausalLM*>>& extra_models) {
  // Rank 0 writes full tensors per name, so the checkpoint does not depend on the layout (resume on
  // any dist.shard_size/replicate_size); sharded layers reach it one at a time through the host.
  const auto full = model.gather_to_host(ctx_.is_main());
  std::vector<std::vector<at::Tensor>> extra_full;  // e.g. a sharded reference model, gathered the same way
  for (const auto& [name, m] : extra_models) extra_full.push_back(m->gather_to_host(ctx_.is_main()));
  const std::string bad = ctx_.broadcast_string(ctx_.is_main() ? first_nonfinite_parameter(model, full) : "");
  if (!bad.empty()) {
    const auto healthy = CheckpointDir::latest_healthy(output_dir_);
    throw Error(str("refusing to write checkpoint step ", state.step, ": parameter '", bad,
                    "' holds NaN/inf (the weights diverged); ",
                    healthy ? str("resume from the last healthy checkpoint (step ", *healthy,
                                  ") with a lower optimizer.lr: --resume auto --set optimizer.lr=...")
                            : std::string("no healthy checkpoint exists; restart with a lower optimizer.lr")));
  }
  const bool healthy = state.consecutive_skipped == 0;
  CheckpointDir ck(output_dir_, static_cast<int>(cfg_.keep_last));
  uint64_t need = 0;
  std::string tmp;
  if (ctx_.is_main()) {
    need = estimate_bytes(model);
    try {
      tmp = ck.begin(state.step, need, healthy);
    } catch (const std::exception& e) {
      tmp = std::string(kFailed) + e.what();
    }
  }
  tmp = ctx_.broadcast_string(tmp);
  if (tmp.rfind(kFailed, 0) == 0) throw Error(tmp.substr(1));

  // Each phase ends with a vote instead of a barrier, so a rank whose write failed (disk full)
  // makes every rank fail the same way instead of leaving the others waiting.
  std::string error;
  auto phase = [&](const std::function<void()>& write) {
    try {
      write();
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (ctx_.any(!error.empty())) {
      if (ctx_.is_main()) ck.abort(tmp);
      throw Error(str("writing checkpoint step ", state.step, " failed: ",
                      error.empty() ? std::string("on another rank") : error,
                      need > 0 ? str(" (a checkpoint needs about ", format_bytes(need), ")") : std::string(),
                      "; the previous checkpoints are untouched"));
    }
  };
  phase([&] {
    if (!ctx_.is_main()) return;
    model.save_pretrained(fs::join(tmp, "model"), full);
    for (size_t i = 0; i < extra_models.size(); ++i)
      extra_models[i].second->save_pretrained(fs::join(tmp, extra_models[i].first), extra_full[i]);
    nlohmann::json st;
    st["step"] = state.step;
    st["tokens"] = state.tokens;
    st["consecutive_skipped"] = state.consecutive_skipped;
    st["last_loss"] = state.last_loss;
    st["world_size"] = ctx_.world_size();
    st["healthy"] = healthy;
    const auto rng = ctx_.save_rng();
    st["rng_cpu"] = rng.cpu;
    if (!rng.cuda.empty()) st["rng_cuda"] = rng.cuda;
    nlohmann::json extra = nlohmann::json::object();
    for (const auto& [k, v] : state.extra) extra[k] = nlohmann::json::parse(v);
    st["extra"] = extra;
    fs::write_file_atomic(fs::join(tmp, kStateFile), st.dump(2));
    fs::write_file_atomic(fs::join(tmp, "config.yaml"), config_yaml);
  });
  phase([&] { opt.save(tmp); });
  if (faults_.pause_before_commit_ms > 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(faults_.pause_before_commit_ms));
  std::string final_dir;
  phase([&] {
    if (ctx_.is_main()) final_dir = ck.commit(tmp, state.step, healthy);
  });
  last_ = ctx_.broadcast_string(final_dir);
  return last_;
}

TrainerState Checkpointer::load(const std::string& dir, DistributedAdamW& opt) {
  opt.load(dir);
  const std::string path = fs::join(dir, kStateFile);
  TrainerState s;
  runtime::RngState rng;
  try {
    const auto st = nlohmann::json::parse(fs::read_file(path));
    s.step = st.at("step").get<int64_t>();
    s.tokens = st.at("tokens").get<int64_t>();
    s.consecutive_skipped = st.at("consecutive_skipped").get<int64_t>();
    s.last_loss = st.value("last_loss", 0.0);
    for (const auto& [k, v] : st.at("extra").items()) s.extra[k] = v.dump();
    rng.cpu = st.at("rng_cpu").get<std::string>();
    rng.cuda = st.value("rng_cuda", std::string());
  } catch (const nlohmann::json::exception& e) {
    // nlohmann's text names neither the file nor (for parse errors) what to do about it.
    throw Error(str("corrupt or incomplete trainer state (", e.what(),
                    "); resume from another checkpoint: --resume <output_dir>/checkpoints/step-N"),
                file_context(path));
  }
  ctx_.restore_rng(rng);
  PRISM_CHECK(opt.steps() <= s.step, dir, ": optimizer state is at step ", opt.steps(), " but ", kStateFile, " at ",
              s.step);
  last_ = dir;
  return s;
}

std::string Checkpointer::saved_config(const std::string& dir) {
  const std::string p = fs::join(dir, "config.yaml");
  return fs::is_regular_file(p) ? fs::read_file(p) : std::string();
}

}  // namespace prism::train
