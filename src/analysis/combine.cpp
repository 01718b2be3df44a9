#include "prism/analysis/combine.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <map>

#include "analysis/checkpoint_set.h"
#include "prism/analysis/weights.h"
#include "prism/core/error.h"

namespace prism::analysis {

std::unique_ptr<models::CausalLM> load_combination(const std::vector<std::string>& checkpoints,
                                                   const std::vector<double>& coeffs, const models::LoadOptions& opts) {
  PRISM_CHECK(!checkpoints.empty(), "load_combination: no checkpoints given");
  PRISM_CHECK(checkpoints.size() == coeffs.size(), "load_combination: ", checkpoints.size(), " checkpoints but ",
              coeffs.size(), " coefficients");
  std::vector<std::string> dirs;
  for (const auto& c : checkpoints) dirs.push_back(resolve_hf_dir(c));
  CheckpointSet set(dirs);
  auto model = models::CausalLM::from_config(set.config(), opts);
  std::map<std::string, at::Tensor> live;
  for (const auto& [name, t] : model->named_parameters()) live.emplace(name, t);
  at::NoGradGuard no_grad;
  for (size_t i : set.file_order()) {
    const auto& p = set.parameters()[i];
    std::vector<at::Tensor> src;
    for (size_t k = 0; k < set.size(); ++k) src.push_back(set.reader(k).get(p.stored[k]));
    accumulate_into(live.at(p.info.name), src, coeffs);
    for (size_t k = 0; k < set.size(); ++k) set.reader(k).release(p.stored[k]);
  }
  return model;
}

}  // namespace prism::analysis
