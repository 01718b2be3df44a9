// Model and optimizer setup (include/prism/train/model_setup.h).
#include "prism/train/model_setup.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>

#include "prism/core/fs.h"
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
    auto model = models::CausalLM::from_config(models::CausalLM::read_config(m.path), lo);
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

std::unique_ptr<DistributedAdamW> make_optimizer(models::CausalLM& model, RunContext& ctx, const OptimizerConfig& cfg) {
  ParamSharding sh;
  if (ctx.shard_size() > 1) {
    sh.shard = ctx.shard_comm();
    sh.gather = ctx.gather_comm();
    sh.replicate = ctx.replicate_comm();
    // Units: one per decoder layer (what the model's layer hooks bracket); the rest is the root.
    std::map<std::string, size_t> index;
    const auto& ps = model.named_parameters();
    for (size_t i = 0; i < ps.size(); ++i) index[ps[i].first] = i;
    sh.units.resize(model.config().layers.size());
    for (const auto& info : model.parameter_infos()) {
      auto it = index.find(info.name);
      if (info.layer >= 0 && it != index.end()) sh.units[static_cast<size_t>(info.layer)].push_back(it->second);
    }
  }
  auto opt = std::make_unique<DistributedAdamW>(model.named_parameters(), decay_mask(model, cfg.no_decay), ctx.comm(),
                                                cfg, std::move(sh));
  model.set_layer_hooks(opt->layer_hooks());
  return opt;
}

std::string first_nonfinite_parameter(const models::CausalLM& model) {
  at::NoGradGuard no_grad;
  const auto& ps = model.named_parameters();
  // One flag per tensor, read back once: a host sync per parameter would dominate on a GPU.
  std::vector<at::Tensor> ok;
  ok.reserve(ps.size());
  for (const auto& [name, t] : ps) ok.push_back(at::isfinite(t).all());
  const auto flags = at::stack(ok).to(at::kCPU);
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
