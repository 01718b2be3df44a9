// Model and optimizer setup (include/prism/train/model_setup.h).
#include "prism/train/model_setup.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <functional>
#include <map>
#include <regex>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/log.h"
#include "prism/models/causal_lm.h"
#include "prism/models/memory.h"
#include "prism/runtime/runtime.h"
#include "prism/train/metrics.h"
#include "prism/train/run_context.h"

namespace prism::train {

std::unique_ptr<models::CausalLM> load_model(const ModelSection& m, const c10::Device& device,
                                             const std::string& resume_dir, bool trainable) {
  models::LoadOptions lo;
  lo.dtype = runtime::parse_dtype(dtype_name(m.dtype), "model.dtype");
  lo.device = device.str();
  if (trainable) {
    // What training holds per parameter: the weights, their gradient and two fp32 Adam moments.
    // Refused before anything is allocated (an absurd config would otherwise grow until the OOM
    // killer ends the job with no message).
    const std::string dir = resume_dir.empty() ? m.path : fs::join(resume_dir, "model");
    models::check_fits(models::CausalLM::read_config(dir), lo.dtype, device,
                       2.0 + 8.0 / static_cast<double>(c10::elementSize(lo.dtype)), fs::join(dir, "config.json"));
  }
  if (!resume_dir.empty()) return models::CausalLM::from_pretrained(fs::join(resume_dir, "model"), lo);
  if (m.init == ModelInit::kScratch) {
    auto model = models::CausalLM::from_architecture(m.path, lo);
    model->init_weights(static_cast<uint64_t>(m.init_seed));
    return model;
  }
  return models::CausalLM::from_pretrained(m.path, lo);
}

std::vector<bool> decay_mask(const models::CausalLM& model, const std::vector<std::string>& no_decay) {
  std::vector<bool> decay;
  for (auto kind : model.parameter_kinds()) {
    const std::string name = models::parameter_kind_name(kind);
    decay.push_back(std::find(no_decay.begin(), no_decay.end(), name) == no_decay.end());
  }
  return decay;
}

std::vector<bool> trainable_mask(const models::CausalLM& model, const std::vector<std::string>& selectors,
                                 const std::string& key) {
  static const std::vector<std::string> kKinds = {"embedding", "attention", "mlp", "mamba2", "norm", "lm_head"};
  const auto infos = model.parameter_infos();
  std::map<std::string, const models::ParameterInfo*> by_name;
  for (const auto& i : infos) by_name.emplace(i.name, &i);
  const auto& params = model.named_parameters();
  if (selectors.empty()) throw Error("no parameter selected", key_context("", key, "all, a kind or a regex", "[]"));
  std::vector<bool> mask(params.size(), false);
  for (size_t s = 0; s < selectors.size(); ++s) {
    const std::string& sel = selectors[s];
    const std::string where = str(key, "[", s, "]");
    std::function<bool(const std::string&, const models::ParameterInfo&)> pick;
    if (sel == "all") {
      pick = [](const std::string&, const models::ParameterInfo&) { return true; };
    } else if (std::find(kKinds.begin(), kKinds.end(), sel) != kKinds.end()) {
      pick = [sel](const std::string&, const models::ParameterInfo& i) { return i.kind == sel; };
    } else {
      std::regex re;
      try {
        re = std::regex(sel, std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        throw Error(str("not a valid regex (", e.what(), ")"),
                    key_context("", where, "all, a parameter kind or an ECMAScript regex", sel));
      }
      pick = [re](const std::string& name, const models::ParameterInfo&) { return std::regex_search(name, re); };
    }
    bool any = false;
    for (size_t p = 0; p < params.size(); ++p) {
      auto it = by_name.find(params[p].first);
      PRISM_CHECK(it != by_name.end(), "trainable_mask: parameter '", params[p].first, "' has no ParameterInfo");
      if (pick(params[p].first, *it->second)) mask[p] = any = true;
    }
    if (!any)
      throw Error("selects no parameter of this model",
                  key_context("", where,
                              "all, a kind (embedding attention mlp mamba2 norm lm_head) or a regex "
                              "matching a parameter name",
                              sel));
  }
  return mask;
}

std::unique_ptr<DistributedAdamW> make_optimizer(models::CausalLM& model, RunContext& ctx, const OptimizerConfig& cfg,
                                                 const std::vector<bool>& trainable) {
  const auto& params = model.named_parameters();
  const auto decay = decay_mask(model, cfg.no_decay);
  PRISM_CHECK(trainable.empty() || trainable.size() == params.size(), "make_optimizer: ", trainable.size(),
              " trainable flags for ", params.size(), " parameters");
  // Frozen parameters never reach the optimizer: no gradient, no optimizer state, and under
  // parameter sharding they stay resident (only trained parameters are sharded and gathered).
  std::vector<std::pair<std::string, at::Tensor>> live;
  std::vector<bool> live_decay;
  int64_t n_train = 0, n_all = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    n_all += params[i].second.numel();
    if (trainable.empty() || trainable[i]) {
      live.push_back(params[i]);
      live_decay.push_back(decay[i]);
      n_train += params[i].second.numel();
    } else {
      params[i].second.requires_grad_(false);
    }
  }
  if (n_train < n_all && ctx.is_main())
    log::info(str("trainable: ", n_train, " of ", n_all, " parameters (", 100.0 * static_cast<double>(n_train) / n_all,
                  " %) in ", live.size(), " of ", params.size(), " tensors; the others are frozen (no gradient, no ",
                  "optimizer state)"));
  ParamSharding sh;
  if (ctx.shard_size() > 1) {
    sh.shard = ctx.shard_comm();
    sh.gather = ctx.gather_comm();
    sh.replicate = ctx.replicate_comm();
    // Units: one per decoder layer (what the model's layer hooks bracket); the rest is the root.
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < live.size(); ++i) index[live[i].first] = i;
    sh.units.resize(model.config().layers.size());
    for (const auto& info : model.parameter_infos()) {
      auto it = index.find(info.name);
      if (info.layer >= 0 && it != index.end()) sh.units[static_cast<size_t>(info.layer)].push_back(it->second);
    }
  }
  auto opt = std::make_unique<DistributedAdamW>(live, live_decay, ctx.comm(), cfg, std::move(sh));
  model.set_layer_hooks(opt->layer_hooks());
  return opt;
}

std::string first_nonfinite_parameter(const models::CausalLM& model) { return first_nonfinite_parameter(model, {}); }

std::string first_nonfinite_parameter(const models::CausalLM& model, const std::vector<at::Tensor>& values) {
  at::NoGradGuard no_grad;
  const auto& ps = model.named_parameters();
  PRISM_CHECK(values.empty() || values.size() == ps.size(), "first_nonfinite_parameter: ", values.size(),
              " tensors for ", ps.size(), " parameters");
  // One flag per tensor, read back once: a host sync per parameter would dominate on a GPU. The
  // flags of host copies and device tensors are moved to the CPU before stacking.
  std::vector<at::Tensor> ok;
  ok.reserve(ps.size());
  for (size_t i = 0; i < ps.size(); ++i)
    ok.push_back(at::isfinite(values.empty() ? ps[i].second : values[i]).all().to(at::kCPU));
  const auto flags = at::stack(ok);
  const bool* p = flags.data_ptr<bool>();
  for (size_t i = 0; i < ps.size(); ++i)
    if (!p[i]) return ps[i].first;
  return "";
}

double training_flops_per_token(const models::CausalLM& m, int64_t seq, int64_t* counted_params) {
  const auto& c = m.config();
  int64_t n = m.num_parameters();
  for (const auto& [name, t] : m.named_parameters())
    if (name == c.embed_name && !c.tie_word_embeddings) n -= t.numel();
  int64_t attn_blocks = 0;
  for (const auto& l : c.layers)
    for (const auto& b : l.blocks) attn_blocks += b.kind == models::BlockKind::kAttention;
  if (counted_params) *counted_params = n;
  return flops_per_token(n, attn_blocks, c.num_heads, c.head_dim, seq);
}

}  // namespace prism::train
