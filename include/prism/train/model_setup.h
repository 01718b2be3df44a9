// Model and optimizer setup shared by every training job: load (a checkpoint being resumed, an HF
// checkpoint, or a from-scratch init), the weight-decay mask from the model's own parameter kinds
// (models::ParameterKind; no name heuristics here), and the DistributedAdamW over the live
// parameters.
//
// **Example**:
//
//     auto model = load_model(cfg.model, ctx->device(), resume_dir);
//     auto opt = make_optimizer(*model, *ctx, cfg.optimizer);
//     check_finite_weights(*model, "final export");   // throws naming the first bad tensor
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "prism/train/job_config.h"
#include "prism/train/optimizer.h"

namespace prism::models {
class CausalLM;
}

namespace prism::train {

class RunContext;

/// `resume_dir` non-empty: the checkpoint's `model/` (its weights win over `model.path`); else
/// `model.path` per `model.init` (scratch: config.json only, CausalLM::init_weights(init_seed)).
/// `trainable`: also refuse a model whose weights, gradients and fp32 Adam moments cannot fit the
/// device (models::check_fits, before anything is allocated); a frozen reference passes false.
std::unique_ptr<models::CausalLM> load_model(const ModelSection& model, const c10::Device& device,
                                             const std::string& resume_dir = "", bool trainable = true);

/// decay[i]: whether named_parameters()[i] gets weight decay (its kind is not in `no_decay`).
std::vector<bool> decay_mask(const models::CausalLM& model, const std::vector<std::string>& no_decay);

/// trainable[i]: whether named_parameters()[i] is trained under `selectors` (the `train.trainable`
/// list). Each entry is `all`, a parameter kind of models::ParameterInfo (`attention` = q/k/v/o
/// projections and their biases; `mlp`, `mamba2`, `embedding`, `norm`, `lm_head`), or else an
/// ECMAScript regex searched in the parameter's HF name (`layers\.(2[4-9]|3[01])\.`); a parameter
/// is trained when any entry selects it. An entry that selects nothing, or a bad regex, is an error
/// naming `key` and the entry.
std::vector<bool> trainable_mask(const models::CausalLM& model, const std::vector<std::string>& selectors,
                                 const std::string& key = "train.trainable");

/// DistributedAdamW over the model's trainable parameters (`trainable` as from trainable_mask;
/// empty: all), sharded over the context's ranks. Frozen parameters get requires_grad = false, so
/// autograd computes no gradient for them, and no gradient bucket, master copy or moments; the
/// counts are logged on rank 0.
std::unique_ptr<DistributedAdamW> make_optimizer(models::CausalLM& model, RunContext& ctx, const OptimizerConfig& cfg,
                                                 const std::vector<bool>& trainable = {});

/// Name of the first parameter holding NaN/inf, or "" when every weight is finite.
std::string first_nonfinite_parameter(const models::CausalLM& model);
/// The same over `values` aligned with model.named_parameters() (CausalLM::gather_to_host).
std::string first_nonfinite_parameter(const models::CausalLM& model, const std::vector<at::Tensor>& values);

/// Training FLOPs per token of `model` at sequence length `seq`, as the trainer's MFU counts them
/// (docs/training.md §MFU; metrics.h flops_per_token): parameters without the input embedding (a
/// lookup does no FLOPs) unless it is tied (then it stands for lm_head), plus the attention
/// blocks of the layout. `counted_params`, when given, receives that parameter count.
double training_flops_per_token(const models::CausalLM& model, int64_t seq, int64_t* counted_params = nullptr);

}  // namespace prism::train
